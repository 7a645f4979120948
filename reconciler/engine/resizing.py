"""Resizing a server: Hostwinds' two-step upgrade (design §6), rolling through a region."""

from __future__ import annotations

import contextlib
from dataclasses import replace

from reconciler.core.errors import ConflictError, ProviderError
from reconciler.core.fleet import IntentStatus, ServerStatus
from reconciler.core.plans import Change
from reconciler.engine.contexts import ApplyContext, ChangeFailedError, error_text
from reconciler.engine.watching import WaitFailedError


async def resize(ctx: ApplyContext, change: Change) -> str:
    name = change.address
    journal = ctx.journal
    node = ctx.node(change)
    service_id = change.service_id or node.service_id
    target = change.plan
    if service_id is None or target is None or change.rid is None:
        raise ChangeFailedError(f"{name}: resize needs a server id and a known target plan")
    rid = change.rid
    server = ctx.owned(change, service_id)
    async with ctx.region_budget(change.region):
        async with ctx.slots:
            intent = journal.begin(
                "resize",
                name,
                {
                    "service_id": str(service_id),
                    "from": node.plan,
                    "to": target,
                    "rid": str(rid),
                },
            )
        upgraded = False
        try:
            status = server.status if server is not None else ServerStatus.UNKNOWN
            if status not in (ServerStatus.RESIZE, ServerStatus.RESIZED):
                async with ctx.slots:
                    journal.mutating()
                    # ConflictError: an order is already pending (an interrupted earlier
                    # attempt): apply it; the next plan re-checks the resulting plan
                    with contextlib.suppress(ConflictError):
                        await ctx.cloud.upgrade_instance(service_id, rid)
                    journal.mutating()
                    await ctx.cloud.upgrade_server(service_id)
            upgraded = True
            await ctx.watcher.wait_for(
                service_id,
                lambda s: s.status is ServerStatus.RESIZED,
                within=ctx.settings.resize_timeout,
                what="RESIZED",
            )
            async with ctx.slots:
                journal.mutating()
                await ctx.cloud.confirm_upgrade(service_id)
            active = await ctx.watcher.wait_for(
                service_id,
                lambda s: s.status is ServerStatus.ACTIVE,
                within=ctx.settings.resize_timeout,
                what="ACTIVE after the resize",
            )
        except (ProviderError, WaitFailedError) as exc:
            async with ctx.slots:
                if upgraded:
                    try:
                        journal.mutating()
                        await ctx.cloud.revert_upgrade(service_id)
                    except ProviderError:
                        pass  # the next run observes and decides
                journal.finish(intent, IntentStatus.FAILED, error=error_text(exc))
            raise
        updated = replace(
            journal.nodes.get(name, node),
            plan=target,
            ip_address=active.main_ip or node.ip_address,
            approximate_cost=ctx.cost(target, node.pool),
        )
        async with ctx.slots:
            journal.finish(intent, IntentStatus.DONE, node=updated)
    return f"resized {node.plan} -> {target}"
