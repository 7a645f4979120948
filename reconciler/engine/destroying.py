"""Destroying a server we own (design §4): journaled, only what our inventory owns."""

from __future__ import annotations

from reconciler.core.errors import NotFoundError, ProviderError
from reconciler.core.fleet import IntentStatus
from reconciler.core.plans import Change
from reconciler.engine.contexts import ApplyContext, ChangeFailedError, error_text


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


async def destroy(ctx: ApplyContext, change: Change) -> str:
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
        if node is not None and ctx.provisioner is not None and node.step("dns") is not None:
            # in reverse: the node's DNS records go (A, DKIM, its IP from SPF) before the server
            await _unpublish(ctx, node.name, node.ip_address)
        intent = journal.begin(
            "destroy",
            name,
            {"service_id": str(service_id), "region": change.region, "reason": change.reason[:120]},
        )
        message = "destroyed"
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
        if node is not None:
            journal.close(name)
    return message
