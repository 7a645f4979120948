"""An operator's hold on a node (pure): maintenance, cordon, drain and quarantine.

- **Maintenance** (``reconcile node maintenance NAME --reason``, recorded with who, why and
  since when; it survives spec changes and restarts because it lives in the store, and the
  engine never writes it): a node in rotation goes out (status ``maintenance``: no new mail,
  its queue drains), and it stays out, with a note in every plan, until ``reconcile node
  resume NAME`` clears it; then it goes back into rotation (``warming`` or ``active``, by its
  warmup). A provisioning node in maintenance stops at its current step.
- **Cordon** (``reconcile node cordon NAME --reason``, the same record with kind ``cordon``):
  out of the sending rotation (status ``maintenance``) and left alone by the health rule (not
  paused, not replaced as unhealthy) until ``reconcile node uncordon NAME``.
- **Drain** (``reconcile node drain NAME --reason``, kind ``drain``): out of the rotation as
  ``draining`` until its queue is empty (heartbeats; ``disruption.drain_timeout`` at most;
  at once without queue figures), then held as ``maintenance`` until ``uncordon``.
- **Quarantine** (a changed SSH host key, recorded by the bootstrap): the node is out of
  rotation and never worked on until an operator releases it (``reconcile node release``);
  then it goes back into rotation.

Each of these pauses is recorded with who made it (``RecordedNode.paused_by``: operator,
quarantine); only its own end brings the node back (a reputation delisting does not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from reconciler.core.fleet import HoldKind, NodeStatus, PausedBy, RecordedNode, StepStatus
from reconciler.core.health import AlertCondition, Severity
from reconciler.core.matching import LiveNode
from reconciler.core.pipeline import StepContext, node_change, rotation_status
from reconciler.core.plans import Action, Change
from specs.model import FleetSpec

__all__ = [
    "BREAKER_HINT",
    "DEADLINE_REASON",
    "SLOT_HINT",
    "Hold",
    "breaker_conditions",
    "breaker_open",
    "held_by_operator",
    "hold",
    "provisioning_overdue",
    "slot_failed",
]

#: the destroy reason (and journal marker) of a node that missed its provisioning deadline
DEADLINE_REASON = "provisioning deadline passed"
BREAKER_HINT = (
    "new nodes of this region keep failing provisioning (a broken image, port 25 blocked, "
    "DNS refusing updates?): look at the failed steps in the journal and the plan's notes; "
    "creation resumes when the window has no more failures than the breaker allows"
)


def provisioning_overdue(node: LiveNode, spec: FleetSpec, now: datetime) -> str | None:
    """The reason to destroy and replace a node that is not verified within the deadline
    (None when it is in time, held by an operator, or the spec has no provisioning)."""
    settings = spec.provisioning
    record = node.record
    if settings is None or record is None or node.status is not NodeStatus.PROVISIONING:
        return None
    held = record.maintenance is not None and record.maintenance.active
    if held or record.quarantine or record.created_at is None:
        return None
    if now - record.created_at <= settings.deadline:
        return None
    stuck = next((s.name for s in record.steps if s.error), None) or "verification"
    minutes = int(settings.deadline.total_seconds() // 60)
    return f"{DEADLINE_REASON} ({minutes} min, stuck at {stuck}): replace it"


SLOT_HINT = (
    "the node is kept (not destroyed, no replacement) so its failed steps can be examined: "
    "see `reconcile node show NAME` and the plan's notes; once the cause is fixed, "
    "`reconcile node release NAME` gives its slot a fresh set of replacements"
)


def slot_failed(node: LiveNode, spec: FleetSpec, now: datetime) -> str | None:
    """A HIGH message when a node missed its provisioning deadline and its slot has used up
    its replacements (``provisioning.replacements``): the slot fails instead of trying again
    (the node stays, out of rotation, until an operator releases it)."""
    settings = spec.provisioning
    record = node.record
    if settings is None or record is None:
        return None
    late = provisioning_overdue(node, spec, now)
    if late is None or record.slot_failures < settings.replacements:
        return None
    return (
        f"HIGH: slot of {node.name} failed: {late.removesuffix(': replace it')}, after "
        f"{record.slot_failures} replacement(s) of nodes that missed theirs (limit "
        f"provisioning.replacements = {settings.replacements}); not replaced again"
    )


def breaker_open(spec: FleetSpec, region: str, failures: Mapping[str, int] | None) -> str | None:
    """A message when the region's circuit breaker is open: creation pauses (high alert)."""
    settings = spec.provisioning
    if settings is None or not failures:
        return None
    count = failures.get(region, 0)
    breaker = settings.circuit_breaker
    if count < breaker.failures:
        return None
    window = int(breaker.window.total_seconds() // 60)
    return (
        f"HIGH: circuit breaker open in {region}: {count} node(s) missed their provisioning "
        f"deadline within {window} min (limit {breaker.failures}); creating nodes there "
        "is paused"
    )


def breaker_conditions(
    spec: FleetSpec, failures: Mapping[str, int] | None
) -> tuple[AlertCondition, ...]:
    """A high alert condition per region whose circuit breaker is open (``breaker_open``),
    keyed ``circuit_breaker:<region>``: it holds while the window has that many failures,
    whether or not the region is missing nodes right now."""
    conditions: list[AlertCondition] = []
    for region in sorted(spec.regions):
        message = breaker_open(spec, region, failures)
        if message is not None:
            conditions.append(
                AlertCondition(
                    f"circuit_breaker:{region}",
                    Severity.HIGH,
                    None,
                    message.removeprefix("HIGH: "),
                )
            )
    return tuple(conditions)


@dataclass(slots=True)
class Hold:
    """What the operator's hold on a node means for this plan."""

    held: bool = False  # the health rule and the pipeline leave the node alone
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def held_by_operator(record: RecordedNode | None) -> bool:
    """An active operator's hold (maintenance, cordon, drain): the health rule neither
    pauses nor replaces the node, and its provisioning deadline does not run."""
    return record is not None and record.maintenance is not None and record.maintenance.active


def may_hold(node: LiveNode) -> bool:
    """Whether ``hold`` can decide anything for ``node``: it has a record with an operator's
    hold (active or ended), a quarantine, or a quarantine's pause to lift. Planning calls
    ``hold`` only for those (most nodes have none)."""
    record = node.record
    return record is not None and (
        record.maintenance is not None
        or bool(record.quarantine)
        or (node.status is NodeStatus.PAUSED and record.paused_by is PausedBy.QUARANTINE)
    )


def hold(
    node: LiveNode,
    ctx: StepContext,
    *,
    queue_empty: frozenset[str] = frozenset(),
    metrics_known: bool = False,
    reputation_paused: Mapping[str, str] | None = None,
) -> Hold:
    """The operator's hold on ``node`` (maintenance, cordon, drain, quarantine) for this plan.
    ``queue_empty``/``metrics_known`` (from heartbeats) tell when a drain is complete: with
    no queue figures (CLI runs) a drain counts as complete at once, as for scale-downs."""
    record = node.record
    result = Hold()
    if record is None or not may_hold(node):
        return result
    maintenance = record.maintenance
    if maintenance is not None and maintenance.active:
        result.held = True
        since = maintenance.since.strftime("%Y-%m-%d %H:%M UTC")
        who = f"{maintenance.kind.value} by {maintenance.by}: {maintenance.reason}"
        if maintenance.kind is HoldKind.MAINTENANCE:
            result.notes.append(
                f"{node.name}: in maintenance (by {maintenance.by} since {since}): "
                f"{maintenance.reason}; `reconcile node resume {node.name}` ends it"
            )
        else:
            result.notes.append(
                f"{node.name}: {maintenance.describe(node.status)}; "
                f"`reconcile node uncordon {node.name}` ends it"
            )
        if node.status in (NodeStatus.MAINTENANCE, NodeStatus.PROVISIONING):
            return result
        if maintenance.kind is not HoldKind.DRAIN:
            what = (
                "its queue drains"
                if maintenance.kind is HoldKind.MAINTENANCE
                else "no new mail; not paused or replaced as unhealthy"
            )
            result.changes.append(
                node_change(
                    Action.PAUSE,
                    node,
                    f"{who} (out of the sending rotation; {what})",
                    before={"status": node.status.value},
                    after={"status": NodeStatus.MAINTENANCE.value},
                    status=NodeStatus.MAINTENANCE,
                    paused_by=PausedBy.OPERATOR,
                )
            )
            return result
        # drain: out of rotation (draining) until the queue is empty, then held
        if node.status is not NodeStatus.DRAINING and metrics_known:
            result.changes.append(
                node_change(
                    Action.DRAIN,
                    node,
                    f"{who} (out of the sending rotation; held once its queue is empty)",
                    before={"status": node.status.value},
                    after={"status": NodeStatus.DRAINING.value},
                    status=NodeStatus.DRAINING,
                    paused_by=PausedBy.OPERATOR,
                )
            )
            return result
        changed = record.status_changed_at
        timeout = ctx.spec.disruption.drain_timeout
        if not metrics_known:
            done = "drained (no queue data)"
        elif node.name in queue_empty:
            done = "drained (queue empty)"
        elif changed is not None and ctx.now - changed >= timeout:
            done = "drain timeout reached"
        else:
            result.notes.append(f"{node.name}: draining, waiting for its queue to empty")
            return result
        result.changes.append(
            node_change(
                Action.DRAIN,
                node,
                f"{who}; {done}: held out of the sending rotation",
                before={"status": node.status.value},
                after={"status": NodeStatus.MAINTENANCE.value},
                status=NodeStatus.MAINTENANCE,
                paused_by=PausedBy.OPERATOR,
            )
        )
        return result
    if record.quarantine:
        result.held = True
        result.notes.append(
            f"{node.name}: quarantined ({record.quarantine}); `reconcile node release "
            f"{node.name}` after checking it"
        )
        if node.status.in_rotation:
            result.changes.append(
                node_change(
                    Action.PAUSE,
                    node,
                    f"quarantined: {record.quarantine}",
                    before={"status": node.status.value},
                    after={"status": NodeStatus.PAUSED.value},
                    status=NodeStatus.PAUSED,
                    paused_by=PausedBy.QUARANTINE,
                )
            )
        return result
    if node.status is NodeStatus.PAUSED and record.paused_by is PausedBy.QUARANTINE:
        # released by `reconcile node release` (only the quarantine's own pause is lifted)
        back = rotation_status(node, ctx)
        result.held = True
        result.changes.append(
            node_change(
                Action.RESUME,
                node,
                "released from quarantine: back into the sending rotation",
                before={"status": NodeStatus.PAUSED.value},
                after={"status": back.value},
                status=back,
            )
        )
        return result
    ours = maintenance is not None and (
        node.status is NodeStatus.MAINTENANCE
        or (node.status is NodeStatus.DRAINING and maintenance.kind is HoldKind.DRAIN)
    )
    changed, ended = record.status_changed_at, maintenance.ended_at if maintenance else None
    if changed is not None and ended is not None and changed > ended:
        ours = False  # out of rotation again since the hold ended: another rule's doing
    if record.paused_by is not None and record.paused_by is not PausedBy.OPERATOR:
        ours = False
    rebootstrap = record.step("rebootstrap")
    if rebootstrap is not None and rebootstrap.status is StepStatus.FAILED:
        ours = False  # out of rotation for a re-bootstrap (core.upkeep) that is unfinished
    if maintenance is not None and ours and not node.victim:
        # ended by `reconcile node resume|uncordon` (a node another rule put in maintenance
        # stays; a draining scale-down victim is the removals' business)
        back = rotation_status(node, ctx)
        result.held = True
        over = {HoldKind.MAINTENANCE: "maintenance", HoldKind.CORDON: "cordon"}.get(
            maintenance.kind, "drain"
        )
        listed = (reputation_paused or {}).get(node.name)
        if listed is not None and node.status is not NodeStatus.PAUSED:
            # the reputation rule wants it out: handed over, never back into rotation first
            result.changes.append(
                node_change(
                    Action.PAUSE,
                    node,
                    f"{over} over, but reputation: {listed}: kept out of the sending rotation",
                    before={"status": node.status.value},
                    after={"status": NodeStatus.PAUSED.value},
                    status=NodeStatus.PAUSED,
                    paused_by=PausedBy.REPUTATION,
                )
            )
            return result
        result.changes.append(
            node_change(
                Action.RESUME,
                node,
                f"{over} over (uncordoned): back into the sending rotation"
                if maintenance.kind is not HoldKind.MAINTENANCE
                else "maintenance over: back into the sending rotation",
                before={"status": node.status.value},
                after={"status": back.value},
                status=back,
            )
        )
    return result
