"""Destroying a server we own (design §4): journaled, only what our inventory owns, as the
recorded steps of a decommission (docs/provisioning.md, "The life cycle")."""

from __future__ import annotations

from reconciler.core.errors import NotFoundError, ProviderError
from reconciler.core.fleet import IntentStatus, NodeStatus, RecordedNode, StepStatus
from reconciler.core.plans import Change
from reconciler.engine.contexts import ApplyContext, ChangeFailedError, error_text, with_step


def _protected(ctx: ApplyContext, name: str, region: str) -> bool:
    """Protection, as a last line of defence: the planner never plans a destroy of a
    protected node, so this only refuses a plan that is wrong (a bug, a tampered file)."""
    node = ctx.journal.node(name)
    region_spec = ctx.spec.regions.get(region)
    return bool(
        (node is not None and node.protected)
        or name in ctx.snapshot.recorded.protected_names
        or name in ctx.spec.disruption.protected
        or (region_spec is not None and name in region_spec.protected)
    )


async def _unpublish(ctx: ApplyContext, name: str, ip: str | None) -> None:
    provisioner = ctx.provisioner
    assert provisioner is not None
    hostname = provisioner.settings.hostname(name)
    intent = ctx.journal.begin("unpublish", name, {"hostname": hostname, "ip": ip or "-"})
    try:
        async with ctx.dns_lock:
            staying = sorted(
                n.ip_address
                for n in ctx.journal.nodes.values()
                if n.ip_address and n.name != name and n.ip_address != ip
            )
            await provisioner.unpublish(name, hostname, staying)
    except ProviderError as exc:
        ctx.journal.finish(intent, IntentStatus.FAILED, error=error_text(exc))
        raise ChangeFailedError(
            f"{name}: DNS records not removed ({error_text(exc)}); not destroyed yet"
        ) from exc
    ctx.journal.finish(intent, IntentStatus.DONE)


#: the decommission steps, in order, each recorded on the node (``decommission.<step>``)
#: and in the journal (kind ``decommission``) when done
DECOMMISSION_STEPS = ("rotation", "drain", "dns", "server", "ip", "record")


def _record_step(
    ctx: ApplyContext, node: RecordedNode | None, name: str, step: str, detail: str
) -> RecordedNode | None:
    """One decommission step done: on the node's record (so a rerun skips it) and in the
    journal (``reconcile history``, ``reconcile node show``), in one transaction: the entry is
    written done with the record, so a kill can never leave it pending (it records what is
    done already; it was three writes, and a kill between them left a pending entry that no
    run closed)."""
    if node is not None and step != "record":
        node = with_step(node, f"decommission.{step}", StepStatus.DONE, ctx, error=None)
    ctx.journal.begin(
        "decommission",
        name,
        {"step": step, "detail": detail[:200]},
        node=node if step != "record" else None,
        done=True,
    )
    return node


def _done(node: RecordedNode | None, step: str) -> bool:
    return node is not None and node.step_done(f"decommission.{step}")


async def destroy(ctx: ApplyContext, change: Change) -> str:
    """Decommission, in reverse of provisioning, each step recorded: out of rotation ->
    drained -> DNS records removed (A, DKIM, the IP out of SPF) -> server destroyed -> IP
    released -> record closed. A rerun after a crash skips the steps already recorded."""
    name = change.address
    journal = ctx.journal
    if _protected(ctx, name, change.region):
        raise ChangeFailedError(f"{name}: protected; never destroyed")
    node = journal.node(name)
    service_id = change.service_id or (node.service_id if node else None)
    if node is None and service_id is None:
        raise ChangeFailedError(f"{name}: not in our inventory; refusing to destroy")
    async with ctx.slots:
        if service_id is None:
            journal.close(name)
            return "record closed (no server was ever recorded)"
        server = ctx.owned(change, service_id)
        journal.supersede("destroy", name)
        if node is not None and not _done(node, "rotation"):
            if node.status.in_rotation:  # the planner drains first; never destroyed sending
                node = journal.with_status(node, NodeStatus.DRAINING)
            node = _record_step(
                ctx, node, name, "rotation", f"out of the sending rotation ({node.status.value})"
            )
        if node is not None and not _done(node, "drain"):
            node = _record_step(ctx, node, name, "drain", change.reason)
        if (
            node is not None
            and ctx.provisioner is not None
            and node.step("dns") is not None
            and not _done(node, "dns")
        ):
            # the node's DNS records go (A, DKIM, its IP from SPF) before the server
            await _unpublish(ctx, node.name, node.ip_address)
            node = _record_step(
                ctx,
                node,
                name,
                "dns",
                f"A and DKIM of {node.name} removed, {node.ip_address or 'its IP'} out of SPF",
            )
        message = "destroyed"
        if not _done(node, "server"):
            intent = journal.begin(
                "destroy",
                name,
                {
                    "service_id": str(service_id),
                    "region": change.region,
                    "reason": change.reason[:120],
                },
            )
            if server is None:
                message = "already gone"  # not in this run's list: nothing to terminate
            else:
                journal.mutating()
                try:
                    await ctx.cloud.terminate(service_id)
                except NotFoundError:
                    message = "already gone"
                except ProviderError as exc:
                    journal.finish(intent, IntentStatus.FAILED, error=error_text(exc))
                    raise
            journal.finish(intent, IntentStatus.DONE)
            node = _record_step(ctx, node, name, "server", f"server {service_id} {message}")
        ip = (node.ip_address if node is not None else None) or (
            server.main_ip if server is not None else None
        )
        if not _done(node, "ip"):
            node = _record_step(
                ctx,
                node,
                name,
                "ip",
                f"{ip or 'no IP'} released (Hostwinds takes a server's IPs back with it; "
                "the store marks the node's IP rows released)",
            )
        if node is not None:
            journal.close(name)
            _record_step(ctx, None, name, "record", "record closed (kept for audit)")
    return message
