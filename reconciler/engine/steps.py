"""Executors of the per-node pipeline steps (design §3b; the steps are ``core.pipeline``).

Each step of ``reconciler.core.pipeline.PIPELINE`` that makes changes has an executor here,
registered in :data:`EXECUTORS` under the step's name. An executor runs one step for one node
and returns the node's record with the step recorded done (``RecordedNode.steps``); it writes
the record itself (through the journal, with an intent around any mutating call).

- :func:`run_step` runs the step a plan change names (``SET_RDNS`` = ``rdns``, ``ACTIVATE``
  of a provisioning node = ``rotation``).
- :func:`bring_up` runs a node's whole way into service from its first unfinished step (a
  create, an adopt or a resolve): wait for the ``address`` (ACTIVE with an IP), then every
  other step in pipeline order.

Adding a step: a ``Step`` in ``core.pipeline.PIPELINE`` and a ``StepExecutor`` here with the
same name (docs/engine.md, "Adding a pipeline step").
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Protocol

from reconciler.core.errors import ProviderError
from reconciler.core.fleet import (
    IntentStatus,
    NodeStatus,
    ObservedServer,
    RecordedNode,
    ServerStatus,
    StepStatus,
)
from reconciler.core.matching import stopped
from reconciler.core.pipeline import PIPELINE, pipeline_for
from reconciler.core.plans import Action, Change
from reconciler.engine.contexts import (
    ApplyContext,
    ChangeFailedError,
    Waiting,
    error_text,
    with_step,
)
from reconciler.engine.provisioning import PROVISIONING_EXECUTORS, UPKEEP_EXECUTORS

ADDRESS = "address"


class StepExecutor(Protocol):
    """Runs one pipeline step for one node whose server is ACTIVE with an IP."""

    @property
    def name(self) -> str: ...

    def done(self, node: RecordedNode) -> bool:
        """Whether the record says the step is done (so a resumed pipeline skips it)."""
        ...

    async def run(
        self, ctx: ApplyContext, change: Change, node: RecordedNode, server: ObservedServer
    ) -> RecordedNode:
        """Run the step (holding a call slot), record it done, return the new record."""
        ...


class ReverseDnsStep:
    """``set_rdns`` on the node's IP, journaled; the record takes the IP and hostname."""

    name = "rdns"

    def done(self, node: RecordedNode) -> bool:
        return node.rdns_done or node.step_done(self.name)

    async def run(
        self, ctx: ApplyContext, change: Change, node: RecordedNode, server: ObservedServer
    ) -> RecordedNode:
        assert server.main_ip is not None
        hostname = ctx.hostname(change)
        journal = ctx.journal
        intent = journal.begin(
            "set_rdns",
            node.name,
            {"service_id": str(server.service_id), "ip": server.main_ip, "hostname": hostname},
        )
        journal.mutating()
        try:
            await ctx.cloud.set_rdns(server.service_id, server.main_ip, hostname)
        except ProviderError as exc:
            journal.finish(intent, IntentStatus.FAILED, error=error_text(exc))
            raise
        updated = replace(
            node,
            service_id=server.service_id,
            ip_address=server.main_ip,
            hostname=hostname,
            rdns_done=True,
            approximate_cost=node.approximate_cost or ctx.cost(node.plan, node.pool),
        )
        updated = with_step(updated, self.name, StepStatus.DONE, ctx)
        journal.finish(intent, IntentStatus.DONE, node=updated)
        return updated


class EnterRotationStep:
    """The node enters the sending rotation (``warming``; its warmup starts now)."""

    name = "rotation"

    def done(self, node: RecordedNode) -> bool:
        return node.status is not NodeStatus.PROVISIONING

    async def run(
        self, ctx: ApplyContext, change: Change, node: RecordedNode, server: ObservedServer
    ) -> RecordedNode:
        updated = replace(
            ctx.journal.with_status(node, NodeStatus.WARMING), ip_address=server.main_ip
        )
        if updated.warmup_started_at is None:
            updated = replace(updated, warmup_started_at=ctx.now())
        updated = with_step(updated, self.name, StepStatus.DONE, ctx)
        ctx.journal.status_change("activate", node, updated, change.reason)
        return updated


#: step name -> its executor (every step of core.pipeline.PIPELINE but ``address``)
EXECUTORS: dict[str, StepExecutor] = {
    step.name: step
    for step in (
        ReverseDnsStep(),
        *PROVISIONING_EXECUTORS,
        EnterRotationStep(),
        *UPKEEP_EXECUTORS,
    )
}


def _check_registry() -> None:
    names = [step.name for step in PIPELINE if step.name != ADDRESS]
    missing = [name for name in names if name not in EXECUTORS]
    if missing:  # pragma: no cover - a programming error caught at import
        raise RuntimeError(f"pipeline steps without an executor: {', '.join(missing)}")


_check_registry()


async def wait_for_address(ctx: ApplyContext, service_id: int) -> ObservedServer:
    """The ``address`` step: the server ACTIVE with a main IP (polled, shared list rounds),
    or stopped (SHUTOFF, suspended, locked: it cannot send, the caller brings nothing up)."""
    return await ctx.watcher.wait_for(
        service_id,
        lambda s: (s.status is ServerStatus.ACTIVE and bool(s.main_ip)) or stopped(s) is not None,
        within=ctx.settings.create_timeout,
        what="ACTIVE with an IP",
    )


async def run_step(ctx: ApplyContext, change: Change) -> str:
    """Run the pipeline step ``change.step`` for the change's node."""
    assert change.step is not None
    executor = EXECUTORS.get(change.step)
    if executor is None:
        raise ChangeFailedError(f"{change.address}: unknown pipeline step {change.step!r}")
    node = ctx.node(change)
    if executor.done(node):  # done earlier in this run (adopt/resolve brought it up)
        return f"{executor.name} already done"
    service_id = change.service_id or node.service_id
    if service_id is None:
        raise ChangeFailedError(f"{change.address}: no server id recorded")
    server = ctx.owned(change, service_id)
    if server is None or server.status is not ServerStatus.ACTIVE or not server.main_ip:
        server = await wait_for_address(ctx, service_id)
    if (halted := stopped(server)) is not None:
        raise Waiting(f"server {halted}: not brought into service while it cannot send")
    async with _slot_for(ctx, executor.name):
        node = ctx.journal.nodes.get(node.name, node)
        updated = await executor.run(ctx, change, node, server)
    return _describe(executor.name, updated, server)


#: the steps that call the cloud API (held under ``ctx.slots``, which paces API calls); the
#: others talk to DNS, the node and the sink, under ``ctx.remote_slots``
API_STEPS = frozenset({"rdns"})


def _slot_for(ctx: ApplyContext, step: str) -> asyncio.Semaphore:
    return ctx.slots if step in API_STEPS else ctx.remote_slots


def _describe(step: str, node: RecordedNode, server: ObservedServer) -> str:
    if step == "rdns":
        return f"rDNS {node.hostname} -> {server.main_ip}"
    if step == "rotation":
        return f"in rotation ({node.status.value})"
    if step == "hostkey" and node.host_key is not None:
        return f"SSH host key pinned ({node.host_key.fingerprint})"
    if step == "dns":
        return f"DNS: A {node.hostname} -> {server.main_ip}, SPF, FCrDNS verified"
    if step == "bootstrap" and node.bundle_version:
        return f"bootstrap {node.bundle_version[:12]} done, DKIM key published"
    if step == "verify":
        return "test mail received by the sink, DKIM signature verified"
    if step == "rebootstrap":
        return f"re-bootstrapped onto {(node.bundle_version or '?')[:12]}, back in rotation"
    if step == "drift":
        state = node.step("drift")
        found = state.error if state is not None and state.error else "no drift"
        return f"drift check: {found}"
    if step == "heartbeat":
        return "first heartbeat not checked (no daemon receives heartbeats in this run)"
    return f"{step} done"


async def bring_up(ctx: ApplyContext, change: Change, node: RecordedNode, verb: str) -> str:
    """A node's way into service, resumed at its first unfinished step: wait for the address,
    then every step of the pipeline in order."""
    if node.service_id is None:
        raise ChangeFailedError(f"{node.name}: no server id recorded")
    server = await wait_for_address(ctx, node.service_id)
    if (halted := stopped(server)) is not None:
        # out of rotation, counted unavailable (the plan pauses it, and replaces it after
        # health.replace_after); its pipeline resumes once it runs again
        return f"{verb}; server {halted}: not brought into service while it cannot send"
    # each step holds the slot of what it talks to (the API's or the nodes'), not the whole
    # way: a node waiting for its bootstrap or its test mail never holds up another's API call
    node = ctx.journal.nodes.get(node.name, node)
    ran: list[str] = []
    try:
        for step in pipeline_for(ctx.spec):
            if step.name == ADDRESS:
                continue
            executor = EXECUTORS[step.name]
            if executor.done(node):
                continue
            async with _slot_for(ctx, executor.name):
                node = ctx.journal.nodes.get(node.name, node)
                node = await executor.run(ctx, change, node, server)
            ran.append(executor.name)
    finally:
        # a step recorded without a write of its own (Journal.hold: hostkey, verify,
        # heartbeat) went with the next step's first write; whatever is left goes now
        ctx.journal.flush(node.name)
    if node.ip_address != server.main_ip or (
        node.warmup_started_at is None and node.status.in_rotation
    ):
        updated = replace(node, ip_address=server.main_ip)
        if updated.warmup_started_at is None and updated.status.in_rotation:
            updated = replace(updated, warmup_started_at=ctx.now())
        ctx.journal.upsert(updated)
        node = updated
    if ctx.spec.provisioning is not None:
        return f"{verb}; ACTIVE at {server.main_ip}; steps: {', '.join(ran) or 'none left'}"
    return f"{verb}; ACTIVE at {server.main_ip}, rDNS {node.hostname}"


async def into_rotation(ctx: ApplyContext, change: Change) -> str:
    """``ACTIVATE`` (warming -> active) and ``RESUME``: the status the plan gives; a node that
    never got its reverse DNS gets it first (the pipeline resumes at its first unfinished
    step)."""
    node = ctx.node(change)
    status = change.status or NodeStatus.WARMING
    graduating = node.status is NodeStatus.WARMING and status is NodeStatus.ACTIVE
    if change.action is Action.ACTIVATE and node.status.in_rotation and not graduating:
        return f"already in rotation ({node.status.value})"
    async with ctx.slots:
        server = ctx.snapshot.server(node.service_id)
        rdns = EXECUTORS["rdns"]
        if (
            status.in_rotation
            and not rdns.done(node)
            and server is not None
            and server.name == node.name
            and server.status is ServerStatus.ACTIVE
            and server.main_ip
        ):
            node = await rdns.run(ctx, change, node, server)
        updated = ctx.journal.with_status(node, status)
        if status.in_rotation and updated.warmup_started_at is None:
            updated = replace(updated, warmup_started_at=ctx.now())
        kind = "resume" if change.action is Action.RESUME else "activate"
        ctx.journal.status_change(kind, node, updated, change.reason)
    return f"in rotation ({status.value})"
