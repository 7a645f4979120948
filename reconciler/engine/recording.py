"""Actions that only change records: forget, repair, drain, pause (no cloud call)."""

from __future__ import annotations

from dataclasses import replace

from reconciler.core.fleet import IntentStatus, NodeStatus
from reconciler.core.plans import Action, Change
from reconciler.engine.contexts import ApplyContext, ChangeFailedError


def forget(ctx: ApplyContext, change: Change) -> str:
    """The server is gone: close the record (and its pending non-create intents)."""
    journal = ctx.journal
    for intent in ctx.snapshot.recorded.pending_intents:
        if intent.target == change.address and intent.kind != "create":
            journal.finish_once(intent, IntentStatus.DONE, "server gone")
    if journal.node(change.address) is not None:
        journal.close(change.address)
    return "record closed (server gone)"


def repair(ctx: ApplyContext, change: Change) -> str:
    """The record takes the observed id, IP and plan (as the plan says)."""
    node = ctx.node(change)
    server = ctx.snapshot.server(change.service_id or node.service_id)
    if server is None:
        raise ChangeFailedError(f"{change.address}: server not observed; cannot repair")
    if server.name != change.address:
        raise ChangeFailedError(
            f"{change.address}: server {server.service_id} is named {server.name!r}"
        )
    plan = change.plan or node.plan
    updated = replace(
        node,
        service_id=server.service_id,
        ip_address=change.ip or node.ip_address,
        plan=plan,
        approximate_cost=ctx.cost(plan, node.pool) or node.approximate_cost,
    )
    ctx.journal.upsert(updated)
    return "record corrected from the cloud"


def out_of_rotation(ctx: ApplyContext, change: Change) -> str:
    """DRAIN (``draining``) and PAUSE (the status the plan gives, default ``paused``)."""
    node = ctx.node(change)
    journal = ctx.journal
    if change.action is Action.DRAIN:
        # draining, or (an operator's drain complete) the status the plan gives
        status = change.status or NodeStatus.DRAINING
        drained = journal.with_status(node, status)
        if change.paused_by is not None and drained.paused_by is not change.paused_by:
            drained = replace(drained, paused_by=change.paused_by)
        journal.status_change("drain", node, drained, change.reason)
        return f"out of rotation ({status.value})"
    status = change.status or NodeStatus.PAUSED
    paused = journal.with_status(node, status)
    if change.paused_by is not None and paused.paused_by is not change.paused_by:
        paused = replace(paused, paused_by=change.paused_by)
    journal.status_change("pause", node, paused, change.reason)
    return "paused" if status is NodeStatus.PAUSED else f"out of rotation ({status.value})"
