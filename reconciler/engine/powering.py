"""Booting a stopped server (``boot``, [DOC S1] in ../shared/hostwinds-api.md §2.4): the first
answer to a server found in ``SHUTOFF``; it is replaced only if it is still stopped after
``health.replace_after`` (the planner decides)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from reconciler.core.errors import ProviderError
from reconciler.core.fleet import IntentStatus, ServerStatus
from reconciler.core.plans import Action, Change
from reconciler.engine.contexts import ApplyContext, ChangeFailedError, error_text
from reconciler.engine.steps import into_rotation
from reconciler.engine.watching import WaitFailedError

#: the longest wait for a booted server to show ACTIVE ("short; poll" in the API notes)
BOOT_TIMEOUT = timedelta(minutes=5)


async def boot(ctx: ApplyContext, change: Change) -> str:
    """Journal ``boot``, send it, wait until the server is ACTIVE. In the daemon the node stays
    out of the sending rotation until its heartbeats are healthy again (like any node out of
    rotation for its health); a run without heartbeats (the CLI) puts it back into rotation
    (the plan's ``status``). A server still not ACTIVE fails the change; the next run boots it
    again, until the planner replaces it."""
    name = change.address
    journal = ctx.journal
    service_id = change.service_id
    if service_id is None:
        raise ChangeFailedError(f"{name}: boot needs a server id")
    server = ctx.owned(change, service_id)
    if server is None or server.status is not ServerStatus.SHUTOFF:
        return "not stopped any more: nothing to boot"
    if server.locked or server.suspended:
        raise ChangeFailedError(f"{name}: locked or suspended: not booted (Hostwinds refuses)")
    async with ctx.slots:
        intent = journal.begin("boot", name, {"service_id": str(service_id)})
        try:
            journal.mutating()
            await ctx.cloud.boot_server(service_id)
        except ProviderError as exc:
            journal.finish(intent, IntentStatus.FAILED, error=error_text(exc))
            raise
    try:
        await ctx.watcher.wait_for(
            service_id,
            lambda s: s.status is ServerStatus.ACTIVE,
            within=min(BOOT_TIMEOUT, ctx.settings.create_timeout),
            what="ACTIVE after the boot",
        )
    except WaitFailedError as exc:
        async with ctx.slots:
            journal.finish(intent, IntentStatus.FAILED, error=error_text(exc))
        raise
    async with ctx.slots:
        journal.finish(intent, IntentStatus.DONE)
    if change.status is not None and change.status.in_rotation:
        # a run without heartbeats (the CLI): nothing else brings it back
        back = replace(
            change, action=Action.RESUME, reason="booted: ACTIVE again, back into rotation"
        )
        return "booted; " + await into_rotation(ctx, back)
    return "booted: ACTIVE again (back into rotation once its heartbeats are healthy)"
