"""Creating, resolving and adopting servers: the create protocol (design §3).

1. ``begin_intent(kind="create")`` with the node record (``provisioning``), written at the wire:
   after the rate-limit token and the writer's fence, right before the request (params
   ``sent=yes``), then and only then
2. ``create_server`` (``add_instance``; no id comes back); a known refusal (429, 4xx, an error
   in the answer, a request that never reached the server) closes the intent at once;
3. look the name up (whatever the call said), until it shows up or ``find_timeout``;
4. ``finish_intent(done)`` with the server's id; then the node's pipeline (``steps.bring_up``).

A pending intent is resolved by a later run's ``RESOLVE`` (look the name up first); a name is
never created twice in one run, never created while a server with it is observed, and never
blindly re-created.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import UTC, datetime

from reconciler.core.errors import ProviderError, TransientError
from reconciler.core.fencing import fenced
from reconciler.core.fleet import (
    CreateRequest,
    IntentStatus,
    NodeStatus,
    ObservedServer,
    RecordedIntent,
    RecordedNode,
)
from reconciler.core.planning import create_attempt
from reconciler.core.plans import Change, Resolution
from reconciler.engine.contexts import (
    ApplyContext,
    ChangeFailedError,
    Waiting,
    can_come_up,
    error_text,
)
from reconciler.engine.steps import bring_up


def create_params(ctx: ApplyContext, change: Change) -> dict[str, str]:
    """The intent's parameters of a create: what the planner chose."""
    region = ctx.spec.regions.get(change.region)
    plan_name = change.plan or (region.plan if region else None)
    if plan_name is None or plan_name not in ctx.spec.plans:
        raise ChangeFailedError(f"{change.address}: unknown plan {plan_name!r}")
    location_id = change.location_id or (region.location_id if region else None)
    if location_id is None:
        raise ChangeFailedError(f"{change.address}: unknown location for {change.region!r}")
    rid = change.rid if change.rid is not None else ctx.spec.plans[plan_name].rid
    return {
        "region": change.region,
        "plan": plan_name,
        "rid": str(rid),
        "location_id": str(location_id),
        "pool": change.pool or "",
    }


async def create(ctx: ApplyContext, change: Change) -> str:
    name = change.address
    existing = ctx.snapshot.servers_named(name)
    if existing:  # never create a name that exists: adopt it instead
        return await adopt_server(ctx, change, min(existing, key=lambda s: s.service_id))
    pending = ctx.snapshot.pending_create(name)
    if pending is not None:
        return await resolve_intents(ctx, change, [pending], recreate=True)
    return await create_fresh(ctx, change, create_params(ctx, change))


async def create_fresh(ctx: ApplyContext, change: Change, params: Mapping[str, str]) -> str:
    name = change.address
    if name in ctx.created:
        raise ChangeFailedError(f"{name}: already created once in this run; not again")
    provider = ctx.spec.provider
    journal = ctx.journal
    known = journal.node(name)
    node = RecordedNode(
        id=known.id if known is not None else str(uuid.uuid4()),
        fleet=ctx.fleet,
        name=name,
        region=params["region"],
        plan=params["plan"],
        status=NodeStatus.PROVISIONING,
        pool=params.get("pool") or None,
        created_at=ctx.now(),
        status_changed_at=ctx.now(),
        observed_generation=ctx.spec_hash,
        approximate_cost=ctx.cost(params["plan"], params.get("pool") or None),
        slot_failures=change.slot_failures,
    )
    request = CreateRequest(
        name=name,
        location_id=int(params["location_id"]),
        rid=int(params["rid"]),
        template=provider.template,
        ssh_keys=tuple(provider.ssh_keys),
        billing_cycle=provider.billing_cycle,
    )
    sent: RecordedIntent | None = None

    def at_the_wire() -> None:
        """After the rate-limit token and the writer's fence, right before the request: the
        intent is written, marked sent (design §3, §3c). A create that waits for a token or
        a slot when the process dies has written nothing: nothing to resolve, nothing to
        wait for. A request retried by the adapter (never reached the server) writes once."""
        nonlocal sent
        if sent is None:
            sent = journal.begin("create", name, {**params, "sent": "yes"}, node=node)

    async with ctx.slots:
        ctx.created.add(name)
        call_error: ProviderError | None = None
        try:
            with fenced(at_the_wire):
                await ctx.cloud.create_server(request)
        except ProviderError as exc:
            call_error = exc
        if sent is None:
            if call_error is not None:
                # refused before the wire: nothing was sent, nothing written
                raise ChangeFailedError(
                    f"{name}: create not sent ({error_text(call_error)}); the next run tries again"
                )
            # an adapter that does not run the wire checks: journal it now (the protocol's
            # look-up below finds the server)
            at_the_wire()
        assert sent is not None
        intent = sent
        if call_error is not None and call_error.refused:
            # a known refusal (429, 4xx, an error in the answer, never reached): nothing
            # happened; close the intent at once, the next run retries without waiting for
            # the adoption grace
            journal.finish(intent, IntentStatus.FAILED, error=error_text(call_error))
            journal.close(name)
            raise ChangeFailedError(
                f"{name}: create refused ({error_text(call_error)}); nothing was bought, "
                "the next run creates it again"
            )
    # find it by name, whatever the call said (it may have reached the server); waiting
    # for it to show up holds no slot, and concurrent creates share list rounds
    server = await find(ctx, name, patient=call_error is None)
    async with ctx.slots:
        if server is None:
            if call_error is None or isinstance(call_error, TransientError):
                raise Waiting(
                    f"{name}: created but not visible yet; the next run resolves it"
                    if call_error is None
                    else f"{name}: create call failed ({error_text(call_error)}) with an "
                    "unknown outcome and the server is not visible; the next run resolves it "
                    "after the adoption grace"
                )
            journal.finish(intent, IntentStatus.FAILED, error=error_text(call_error))
            journal.close(name)
            raise ChangeFailedError(f"{name}: create refused: {error_text(call_error)}")
        recorded = replace(node, service_id=server.service_id, ip_address=server.main_ip)
        journal.finish(intent, IntentStatus.DONE, node=recorded)
    return await bring_up(ctx, change, recorded, "created")


async def find(ctx: ApplyContext, name: str, *, patient: bool) -> ObservedServer | None:
    """Look a name up once, or (``patient``) until it shows up within ``find_timeout``,
    through the watcher (alone: search by name; with others: shared list rounds)."""
    if not patient:
        try:
            found = await ctx.cloud.find_servers_by_name(name)
        except TransientError:
            return None
        return min(found, key=lambda s: s.service_id) if found else None
    return await ctx.watcher.wait_for_name(name, within=ctx.settings.find_timeout)


async def resolve(ctx: ApplyContext, change: Change) -> str:
    """A pending create intent: look the name up first (design §3 step 4). What to do when
    it is not there is the plan's ``resolution``. (``INTERRUPTED``: other intents a cut-short
    run left pending, closed.)"""
    wanted = set(change.intent_ids)
    if change.resolution is Resolution.INTERRUPTED:
        async with ctx.slots:
            return close_interrupted(ctx, change)
    intents = [
        i
        for i in ctx.snapshot.recorded.pending_intents
        if i.kind == "create" and i.target == change.address and (not wanted or i.id in wanted)
    ]
    if change.resolution is Resolution.EXHAUSTED:
        # the slot failed (its create attempts are used up): nothing is bought, nothing is
        # closed; the intent holds the slot until `reconcile node retry NAME`
        raise ChangeFailedError(
            f"{change.address}: slot failed: {change.reason}; run `reconcile node retry "
            f"{change.address}` once the account is checked"
        )
    if change.resolution is Resolution.RECORDED:
        async with ctx.slots:
            for intent in intents:
                ctx.journal.finish(intent, IntentStatus.DONE)
        return "intent closed (the server is already recorded)"
    if not intents:
        existing = ctx.snapshot.servers_named(change.address)
        if existing:
            return await adopt_server(ctx, change, min(existing, key=lambda s: s.service_id))
        return "nothing to resolve"
    return await resolve_intents(
        ctx, change, intents, recreate=change.resolution is Resolution.RECREATE
    )


def close_interrupted(ctx: ApplyContext, change: Change) -> str:
    """Close the pending intents the plan names (its ``intent_ids``) as failed: their run was
    cut short before closing them, and the plan found nothing left to do for the node."""
    wanted = set(change.intent_ids)
    closed = [
        i
        for i in ctx.snapshot.recorded.pending_intents
        if i.id in wanted and i.target == change.address and i.kind != "create"
    ]
    for intent in sorted(closed, key=lambda i: i.id):
        ctx.journal.finish_once(
            intent,
            IntentStatus.FAILED,
            "interrupted: the run that began it ended before closing it; the next plan "
            "found nothing left to do for it",
        )
    kinds = ", ".join(sorted({i.kind for i in closed})) or "no"
    return f"closed {len(closed)} interrupted intent(s) ({kinds})"


async def resolve_intents(
    ctx: ApplyContext,
    change: Change,
    intents: list[RecordedIntent],
    *,
    recreate: bool,
) -> str:
    name = change.address
    journal = ctx.journal
    newest = max(intents, key=lambda i: i.id)
    async with ctx.slots:
        try:
            found = await ctx.cloud.find_servers_by_name(name)
        except TransientError as exc:
            raise Waiting(f"{name}: look-up failed ({exc.message}); next run") from None
        if found:
            server = min(found, key=lambda s: s.service_id)
            node = node_for_intent(ctx, change, newest, server)
            for intent in sorted(intents, key=lambda i: i.id):
                journal.finish(intent, IntentStatus.DONE, node=node)
            adopted: RecordedNode | None = node
        else:
            if change.resolution is Resolution.WAIT:
                left = ""
                if change.grace_until is not None:
                    seconds = max(0.0, (change.grace_until - ctx.now()).total_seconds())
                    left = f" ({seconds:.0f}s left)"
                raise Waiting(f"{name}: waiting for the server to appear{left}")
            grace_until = _grace_until(ctx, change, intents)
            if grace_until is not None and ctx.now() < grace_until:
                remaining = (grace_until - ctx.now()).total_seconds()
                raise Waiting(f"{name}: waiting for the server to appear ({remaining:.0f}s left)")
            for intent in sorted(intents, key=lambda i: i.id):
                journal.finish(intent, IntentStatus.FAILED, error="never appeared")
            adopted = None
            if not recreate:
                known = journal.node(name)
                if known is not None and known.service_id is None:
                    journal.close(name)
    if adopted is None:
        if not recreate:
            return "create intent failed (never appeared); the spec no longer needs it"
        params = dict(newest.params)
        if not {"region", "plan", "rid", "location_id"} <= params.keys():
            params = create_params(ctx, change)
        # the slot's next attempt (bounded by the planner: reconcile.create_retries)
        params = {
            k: v for k, v in params.items() if k not in ("sent", "actor", "revision", "epoch")
        }
        params["attempt"] = str(create_attempt(newest.params) + 1)
        return await create_fresh(ctx, change, params)
    if not can_come_up(server):
        return f"adopted server {server.service_id} ({server.status.value})"
    return await bring_up(ctx, change, adopted, "resolved")


def _grace_until(
    ctx: ApplyContext, change: Change, intents: list[RecordedIntent]
) -> datetime | None:
    """Until when a create whose server is not found waits (None: no longer).

    The plan decides: ``RECREATE`` and ``ABANDON`` do not wait (``WAIT`` always waits);
    ``FOUND`` (the server vanished since the plan) waits for the next run. A create of a name
    that has a pending intent (no plan decision) waits for the intent's grace.
    """
    if change.resolution in (Resolution.RECREATE, Resolution.ABANDON):
        return None
    if change.resolution is Resolution.FOUND:
        return datetime.max.replace(tzinfo=UTC)
    oldest = min(intents, key=lambda i: i.id)
    if oldest.created_at is None:
        return None
    return oldest.created_at + ctx.settings.adoption_grace


def node_for_intent(
    ctx: ApplyContext, change: Change, intent: RecordedIntent, server: ObservedServer
) -> RecordedNode:
    known = ctx.journal.node(change.address)
    plan = intent.params.get("plan") or change.plan or (known.plan if known else "")
    pool = intent.params.get("pool") or change.pool or (known.pool if known else None)
    base = known or RecordedNode(
        id=str(uuid.uuid4()),
        fleet=ctx.fleet,
        name=change.address,
        region=intent.params.get("region") or change.region,
        plan=plan,
        status=NodeStatus.PROVISIONING,
        pool=pool,
        created_at=ctx.now(),
    )
    return replace(
        base,
        service_id=server.service_id,
        ip_address=server.main_ip or base.ip_address,
        approximate_cost=ctx.cost(plan, pool) or base.approximate_cost,
    )


async def adopt(ctx: ApplyContext, change: Change) -> str:
    server = ctx.snapshot.server(change.service_id)
    if server is None:
        named = ctx.snapshot.servers_named(change.address)
        server = min(named, key=lambda s: s.service_id) if named else None
    if server is None:
        raise ChangeFailedError(f"{change.address}: server not observed; cannot adopt")
    return await adopt_server(ctx, change, server)


async def adopt_server(ctx: ApplyContext, change: Change, server: ObservedServer) -> str:
    if server.name != change.address:
        raise ChangeFailedError(
            f"{change.address}: server {server.service_id} is named {server.name!r}"
        )
    journal = ctx.journal
    known = journal.node(change.address)
    region_spec = ctx.spec.regions.get(change.region)
    plan = (
        change.plan
        or (known.plan if known else None)
        or (region_spec.plan if region_spec is not None else "")
    )
    pool = change.pool or (known.pool if known else None)
    status = NodeStatus.PROVISIONING
    if known is not None and known.rdns_done and server.status.is_ready:
        status = known.status
    status = change.status or status
    node = replace(
        known
        or RecordedNode(
            id=str(uuid.uuid4()),
            fleet=ctx.fleet,
            name=change.address,
            region=change.region,
            plan=plan,
            status=status,
            created_at=server.created_at or ctx.now(),
        ),
        service_id=server.service_id,
        ip_address=server.main_ip,
        plan=plan,
        pool=pool,
        status=status,
        status_changed_at=ctx.now(),
        approximate_cost=ctx.cost(plan, pool),
    )
    async with ctx.slots:
        pending = ctx.snapshot.pending_create(change.address)
        if pending is not None:
            journal.finish(pending, IntentStatus.DONE, node=node)
        else:
            journal.upsert(node)
    if status is NodeStatus.PROVISIONING and can_come_up(server):
        # the node pipeline resumes here; later SET_RDNS/ACTIVATE of the same node in the
        # plan find their step done and skip it
        return await bring_up(ctx, change, node, "adopted")
    return f"adopted server {server.service_id}"
