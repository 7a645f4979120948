"""The per-node pipeline (design §3b): each node's next step into service, decided purely.

A node comes into service through an ordered sequence of recorded, idempotent steps::

    address (ACTIVE with an IP) -> rdns (reverse DNS) -> rotation (warming) ... -> active

Each step is a small object (:class:`Step`) with a name, the plan action that shows it, a test
of whether it is done for a node (from the node's recorded step state), a test of whether it
can run now (else the node waits, with a note), and the change it puts in the plan. The
planner (:func:`next_changes`) walks the steps of a provisioning node in order and plans every
step from the first unfinished one, stopping at the first one that has to wait; the engine
runs each planned step with the executor registered under the step's name
(``reconciler.engine.steps``) and records it done in the node's ``steps``.

**Adding a step** (say ``dns``) is a local change: a :class:`Step` here, inserted into
:data:`PIPELINE` at its place, and an executor with the same name in
``reconciler.engine.steps.EXECUTORS`` (see docs/engine.md, "Adding a pipeline step"). The fleet
rules (``reconciler.core.planning``: counts, victims, budgets, guards) are not touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from reconciler.core.addresses import node_hostname
from reconciler.core.fleet import NodeStatus, PausedBy, ServerStatus, StepStatus
from reconciler.core.matching import LiveNode, stopped
from reconciler.core.plans import Action, Change
from reconciler.core.warmup import warmup_complete
from specs.model import WARMUP_PRESETS, FleetSpec


@dataclass(frozen=True, slots=True)
class StepContext:
    """What a step may read besides the node: the spec, the time, the daemon's health view."""

    spec: FleetSpec
    now: datetime
    unhealthy: frozenset[str] = frozenset()
    #: the node's first heartbeat is part of verification (a daemon receives them)
    require_heartbeat: bool = False


def node_change(
    action: Action,
    node: LiveNode,
    reason: str,
    *,
    before: dict[str, str],
    after: dict[str, str],
    status: NodeStatus | None = None,
    step: str | None = None,
    hostname: str | None = None,
    ip: str | None = None,
    paused_by: PausedBy | None = None,
) -> Change:
    """A change to one existing node, carrying its server's id, plan, pool and location."""
    return Change(
        action,
        node.name,
        node.region,
        reason,
        before=before,
        after=after,
        service_id=node.server.service_id,
        plan=node.plan,
        pool=node.pool,
        location_id=node.server.location_id,
        status=status,
        step=step,
        hostname=hostname,
        ip=ip,
        paused_by=paused_by,
    )


def rotation_status(node: LiveNode, ctx: StepContext) -> NodeStatus:
    """Warming or active: where a node goes when it (re-)enters rotation."""
    spec = ctx.spec
    record = node.record
    started = record.warmup_started_at if record is not None else None
    schedule = None
    if node.pool is not None and node.pool in spec.ip_pools:
        schedule = spec.warmup.schedule(spec.ip_pools[node.pool].warmup)
    if schedule is None:
        schedule = WARMUP_PRESETS["standard"]
    if started is not None and warmup_complete(schedule, started, ctx.now):
        return NodeStatus.ACTIVE
    return NodeStatus.WARMING


class Step(Protocol):
    """One step of a node's way into service."""

    @property
    def name(self) -> str:
        """The step's name: its key in the recorded step state and the executor registry."""
        ...

    def done(self, node: LiveNode) -> bool:
        """Whether the node has finished this step (from its record and observation)."""
        ...

    def wait(self, node: LiveNode, ctx: StepContext) -> str | None:
        """Why the step cannot run now (a note for the plan), or None when it can."""
        ...

    def change(self, node: LiveNode, ctx: StepContext) -> Change | None:
        """The plan change that runs the step (None: the engine waits, nothing to apply)."""
        ...


class Address:
    """The server is ACTIVE with a main IP. Observed, not recorded: the engine waits for it."""

    name = "address"

    def done(self, node: LiveNode) -> bool:
        # a suspended or locked server is ACTIVE but cannot send: never brought up
        return (
            node.server.status is ServerStatus.ACTIVE
            and node.server.main_ip is not None
            and stopped(node.server) is None
        )

    def wait(self, node: LiveNode, ctx: StepContext) -> str | None:
        if node.server.status in (ServerStatus.RESIZE, ServerStatus.RESIZED):
            return ""  # the resize rule speaks for it: no note
        return (
            f"{node.name}: waiting for the server to be ACTIVE with an IP "
            f"(now {stopped(node.server) or node.server.status.value})"
        )

    def change(self, node: LiveNode, ctx: StepContext) -> Change | None:
        return None


class ReverseDns:
    """Hostwinds ``set_rdns``: the IP's PTR names the node; the record takes the IP."""

    name = "rdns"

    def done(self, node: LiveNode) -> bool:
        record = node.record
        return record is not None and (record.rdns_done or record.step_done(self.name))

    def wait(self, node: LiveNode, ctx: StepContext) -> str | None:
        return None

    def change(self, node: LiveNode, ctx: StepContext) -> Change | None:
        ip = node.server.main_ip
        assert ip is not None  # the address step is done
        return node_change(
            Action.SET_RDNS,
            node,
            "new node: set reverse DNS and record its IP",
            before={"rdns": "-"},
            after={"rdns": node.name, "ip": ip},
            step=self.name,
            hostname=node_hostname(ctx.spec, node.name),
            ip=ip,
        )


class EnterRotation:
    """The node enters the sending rotation (warming: its warmup starts)."""

    name = "rotation"

    def done(self, node: LiveNode) -> bool:
        return node.status is not NodeStatus.PROVISIONING

    def wait(self, node: LiveNode, ctx: StepContext) -> str | None:
        if node.name in ctx.unhealthy:
            return f"{node.name}: not put into rotation while unhealthy"
        return None

    def change(self, node: LiveNode, ctx: StepContext) -> Change | None:
        return node_change(
            Action.ACTIVATE,
            node,
            "ACTIVE with reverse DNS: into the sending rotation (warmup starts)",
            before={"status": NodeStatus.PROVISIONING.value},
            after={"status": NodeStatus.WARMING.value},
            status=NodeStatus.WARMING,
            step=self.name,
        )


def _attempts_left(node: LiveNode, name: str, ctx: StepContext) -> str | None:
    """A note when the step failed as often as the spec allows (the node then waits for its
    provisioning deadline, after which it is replaced)."""
    record = node.record
    settings = ctx.spec.provisioning
    state = record.step(name) if record is not None else None
    if settings is None or state is None or state.status is StepStatus.DONE:
        return None
    if state.attempts >= settings.step_attempts:
        return (
            f"{node.name}: step {name} failed {state.attempts} times "
            f"({state.error or 'no detail'}); replaced once its provisioning deadline passes"
        )
    return None


class _ProvisioningStep:
    """A step that only exists when the spec has a ``provisioning:`` section."""

    name = ""
    label = ""

    def done(self, node: LiveNode) -> bool:
        return node.record is not None and node.record.step_done(self.name)

    def wait(self, node: LiveNode, ctx: StepContext) -> str | None:
        record = node.record
        if record is not None and record.quarantine:
            return f"{node.name}: quarantined ({record.quarantine}); an operator must act"
        return _attempts_left(node, self.name, ctx)

    def change(self, node: LiveNode, ctx: StepContext) -> Change | None:
        settings = ctx.spec.provisioning
        assert settings is not None
        ip = node.server.main_ip
        assert ip is not None
        state = node.record.step(self.name) if node.record is not None else None
        retry = f" (attempt {state.attempts + 1})" if state is not None else ""
        return node_change(
            Action.PROVISION,
            node,
            self.label + retry,
            before={"step": "-"},
            after={"step": self.name},
            step=self.name,
            hostname=settings.hostname(node.name),
            ip=ip,
        )


class PinHostKey(_ProvisioningStep):
    """First contact over SSH right after ACTIVE: record the host key the node presents."""

    name = "hostkey"
    label = "first contact: pin the SSH host key"

    def done(self, node: LiveNode) -> bool:
        return node.record is not None and node.record.host_key is not None


class PublishDns(_ProvisioningStep):
    """A record via RFC 2136 (the PTR came from the rdns step), the IP in the domain's SPF,
    then forward-confirmed reverse DNS by real queries."""

    name = "dns"
    label = "DNS: A record, SPF, forward-confirmed reverse DNS"


class Bootstrap(_ProvisioningStep):
    """The bundle over SSH: Postfix, sysctl, UFW, Fail2Ban, OpenDKIM, the agent; the DKIM
    public key read back and published."""

    name = "bootstrap"
    label = "SSH bootstrap: Postfix, UFW, Fail2Ban, OpenDKIM, agent; publish DKIM"


class Verify(_ProvisioningStep):
    """A test mail through the node to the sink, its DKIM signature verified against DNS,
    and the node's first heartbeat."""

    name = "verify"
    label = "verify: test mail to the sink, DKIM signature, first heartbeat"


class FirstHeartbeat(_ProvisioningStep):
    """The node's agent has sent its first heartbeat (when a daemon receives them)."""

    name = "heartbeat"
    label = "first heartbeat: not checked (no daemon receives heartbeats in this run)"

    def done(self, node: LiveNode) -> bool:
        record = node.record
        return record is not None and (
            record.last_heartbeat is not None or record.step_done(self.name)
        )

    def wait(self, node: LiveNode, ctx: StepContext) -> str | None:
        if ctx.require_heartbeat:
            return f"{node.name}: waiting for the node's first heartbeat"
        return super().wait(node, ctx)


#: the steps of a node's way into service, in order
PIPELINE: tuple[Step, ...] = (
    Address(),
    ReverseDns(),
    PinHostKey(),
    PublishDns(),
    Bootstrap(),
    Verify(),
    FirstHeartbeat(),
    EnterRotation(),
)
#: the steps that exist only when the spec has a ``provisioning:`` section
PROVISIONING_STEPS = frozenset({"hostkey", "dns", "bootstrap", "verify", "heartbeat"})


def pipeline_for(spec: FleetSpec) -> tuple[Step, ...]:
    """The pipeline of ``spec``'s nodes: without ``provisioning:`` it stops after rDNS."""
    if spec.provisioning is not None:
        return PIPELINE
    return tuple(step for step in PIPELINE if step.name not in PROVISIONING_STEPS)


def step_named(name: str, pipeline: Sequence[Step] = PIPELINE) -> Step:
    for step in pipeline:
        if step.name == name:
            return step
    raise KeyError(name)


@dataclass(slots=True)
class NextSteps:
    changes: list[Change]
    notes: list[str]


def may_step(node: LiveNode) -> bool:
    """Whether ``next_changes`` can plan anything for ``node``: a recorded node that is
    provisioning or warming. Planning calls it only for those."""
    return node.record is not None and (
        node.status is NodeStatus.PROVISIONING or node.status is NodeStatus.WARMING
    )


def next_changes(
    node: LiveNode, ctx: StepContext, pipeline: Sequence[Step] | None = None
) -> NextSteps:
    """The pipeline changes a node needs now (pure).

    - A recorded ``provisioning`` node: every step from its first unfinished one, stopping at
      the first step that has to wait (with a note).
    - A ``warming`` node whose warmup schedule has ended graduates to ``active``.
    A node being adopted or resolved in this plan is brought up by the engine with its record.
    """
    result = NextSteps([], [])
    server = node.server
    record = node.record
    if record is None:
        return result
    if (
        node.status is NodeStatus.WARMING
        and node.name not in ctx.unhealthy
        and server.status is ServerStatus.ACTIVE
        and stopped(server) is None
        and rotation_status(node, ctx) is NodeStatus.ACTIVE
    ):
        result.changes.append(
            node_change(
                Action.ACTIVATE,
                node,
                "warmup schedule complete: full sending volume",
                before={"status": NodeStatus.WARMING.value},
                after={"status": NodeStatus.ACTIVE.value},
                status=NodeStatus.ACTIVE,
            )
        )
    if node.status is not NodeStatus.PROVISIONING:
        return result
    for step in pipeline if pipeline is not None else pipeline_for(ctx.spec):
        if step.done(node):
            continue
        why = step.wait(node, ctx)
        if why is not None:
            if why:
                result.notes.append(why)
            break
        change = step.change(node, ctx)
        if change is None:
            break
        result.changes.append(change)
    return result
