"""Apply a plan through the ports, change by change, journaled (design §3, §3b, §4, §5).

- Every mutating cloud call is preceded by a journal row (``store.begin_intent``) and followed
  by ``finish_intent``; every store write carries the fencing ``epoch``.
- ``before_mutation`` is called before every mutating step (store write or cloud mutation);
  the daemon passes a leadership check that raises ``LeadershipLostError``.
- A create is never retried blindly: after ``create_server`` (even when it failed) the name is
  looked up; a name is never created twice in one run.
- Changes to different nodes run concurrently (at most ``concurrency`` doing calls at once; a
  node waiting for its build does not hold a slot), the changes of one node run in plan order,
  and resizes roll through a region at most ``max_unavailable`` at a time.
- A provider error fails its change (and the rest of that node's changes are skipped); a store
  error or a lost leadership stops everything at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

from reconciler.core.costs import CostResolver
from reconciler.core.errors import (
    ConflictError,
    GuardRefusedError,
    NotFoundError,
    ProviderError,
    TransientError,
)
from reconciler.core.fleet import (
    CreateRequest,
    IntentStatus,
    NodeStatus,
    ObservedServer,
    RecordedIntent,
    RecordedNode,
    ServerStatus,
)
from reconciler.core.plans import Action, Change, Plan
from reconciler.core.ports import Clock, CloudPort, StorePort
from reconciler.engine.observing import Snapshot
from reconciler.engine.watching import ServerWatcher, WaitFailedError
from specs.model import FleetSpec

# --- reports and progress ----------------------------------------------------------------


class OutcomeStatus(StrEnum):
    DONE = "done"
    FAILED = "failed"
    WAITING = "waiting"  # nothing wrong, but not finished (e.g. a create intent within grace)
    SKIPPED = "skipped"  # not attempted (an earlier change of the same node failed)


@dataclass(frozen=True, slots=True)
class ChangeOutcome:
    change: Change
    status: OutcomeStatus
    message: str = ""


@dataclass(frozen=True, slots=True)
class ApplyReport:
    outcomes: tuple[ChangeOutcome, ...] = ()

    def _with(self, status: OutcomeStatus) -> tuple[ChangeOutcome, ...]:
        return tuple(o for o in self.outcomes if o.status is status)

    @property
    def done(self) -> tuple[ChangeOutcome, ...]:
        return self._with(OutcomeStatus.DONE)

    @property
    def failed(self) -> tuple[ChangeOutcome, ...]:
        return self._with(OutcomeStatus.FAILED)

    @property
    def waiting(self) -> tuple[ChangeOutcome, ...]:
        return self._with(OutcomeStatus.WAITING)

    @property
    def skipped(self) -> tuple[ChangeOutcome, ...]:
        return self._with(OutcomeStatus.SKIPPED)

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped

    @property
    def outcome(self) -> str:
        """The run outcome as recorded: ok, partial or failed."""
        if self.ok:
            return "ok"
        return "partial" if self.done else "failed"

    def summary(self) -> dict[str, str]:
        return {
            "done": str(len(self.done)),
            "failed": str(len(self.failed)),
            "waiting": str(len(self.waiting)),
            "skipped": str(len(self.skipped)),
        }


class ProgressHooks(Protocol):
    def on_start(self, total: int) -> None: ...

    def on_change_started(self, change: Change) -> None: ...

    def on_change_done(self, change: Change, ok: bool, message: str) -> None: ...

    def on_finish(self, report: ApplyReport) -> None: ...


class SilentProgress:
    """Progress hooks that do nothing."""

    def on_start(self, total: int) -> None:
        return None

    def on_change_started(self, change: Change) -> None:
        return None

    def on_change_done(self, change: Change, ok: bool, message: str) -> None:
        return None

    def on_finish(self, report: ApplyReport) -> None:
        return None


@dataclass(frozen=True, slots=True)
class ApplySettings:
    concurrency: int = 8
    max_unavailable: int = 1
    create_timeout: timedelta = timedelta(minutes=30)
    resize_timeout: timedelta = timedelta(minutes=30)
    adoption_grace: timedelta = timedelta(minutes=5)
    #: seconds between two polls of a server's status
    poll_interval: float = 5.0
    #: how long to look a just-created name up before leaving it to the next run's RESOLVE
    find_timeout: timedelta = timedelta(seconds=60)

    @classmethod
    def from_spec(cls, spec: FleetSpec, *, poll_interval: float = 5.0) -> ApplySettings:
        r = spec.reconcile
        return cls(
            concurrency=r.concurrency,
            max_unavailable=spec.disruption.max_unavailable,
            create_timeout=r.create_timeout,
            resize_timeout=r.resize_timeout,
            adoption_grace=r.adoption_grace,
            poll_interval=poll_interval,
            find_timeout=min(r.adoption_grace, timedelta(seconds=60)),
        )


# --- helpers the engine and the views share ----------------------------------------------


def node_hostname(spec: FleetSpec, name: str) -> str:
    """The reverse-DNS name of a node: ``<name>.<domain>``; the domain is the spec's
    ``provider.rdns_domain`` when the spec has one, else ``<fleet>.example``."""
    domain = getattr(spec.provider, "rdns_domain", None) or f"{spec.name}.example"
    return f"{name}.{str(domain).strip('.')}"


def plan_name_for_rid(spec: FleetSpec, rid: int | None) -> str | None:
    if rid is None:
        return None
    for name, plan in spec.plans.items():
        if plan.rid == rid:
            return name
    return None


def _can_come_up(server: ObservedServer) -> bool:
    """ACTIVE, or transitional towards ACTIVE (BUILD, UNKNOWN...): not failed, not resizing."""
    return server.status not in (
        ServerStatus.ERROR,
        ServerStatus.RESIZE,
        ServerStatus.RESIZED,
        ServerStatus.SHUTOFF,
        ServerStatus.DELETED,
    )


def _error_text(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text[:500]


class ChangeFailedError(Exception):
    """One change failed; recorded on its outcome, the others go on."""


class _Waiting(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """The change is not finished and must not be counted as failed."""


# --- the applier -------------------------------------------------------------------------


@dataclass
class _RunState:
    nodes: dict[str, RecordedNode]
    created: set[str] = field(default_factory=set)
    closed_intents: set[int] = field(default_factory=set)


class Applier:
    """Applies one plan. Built per apply; not reusable."""

    def __init__(
        self,
        spec: FleetSpec,
        cloud: CloudPort,
        store: StorePort,
        clock: Clock,
        snapshot: Snapshot,
        *,
        settings: ApplySettings,
        epoch: int | None = None,
        before_mutation: Callable[[], None] | None = None,
        progress: ProgressHooks | None = None,
        spec_hash: str | None = None,
    ) -> None:
        self.spec = spec
        self.spec_hash = spec_hash
        self.fleet = spec.name
        self.cloud = cloud
        self.store = store
        self.clock = clock
        self.snapshot = snapshot
        self.settings = settings
        self.epoch = epoch
        self._before = before_mutation
        self.progress: ProgressHooks = progress or SilentProgress()
        self._slots = asyncio.Semaphore(settings.concurrency)
        self._region_budgets: dict[str, asyncio.Semaphore] = {}
        self._watcher = ServerWatcher(cloud, clock, settings.poll_interval)
        self._state = _RunState(nodes={n.name: n for n in snapshot.recorded.nodes})
        self._costs = CostResolver(spec, snapshot.recorded.cost_overrides)

    def _cost(self, plan: str | None, pool: str | None) -> Decimal:
        """Approximate monthly cost of a node: plan price plus its IPs (core.costs)."""
        return self._costs.node(plan, pool)[0].quantize(Decimal("0.01"))

    # -- entry ----------------------------------------------------------------------------

    async def apply(self, plan: Plan, *, allow_blocked: bool = False) -> ApplyReport:
        if plan.blocked and not allow_blocked:
            blocking = [w for w in plan.warnings if w.blocking]
            hint = next((w.hint for w in blocking if w.hint), None)
            raise GuardRefusedError(
                "; ".join(w.message for w in blocking),
                hint=hint or "review the plan; the guard can be overridden on the command line",
            )
        groups: dict[str, list[Change]] = {}
        for change in plan.changes:
            groups.setdefault(change.address, []).append(change)
        self.progress.on_start(len(plan.changes))
        outcomes: dict[int, ChangeOutcome] = {}
        index = {id(c): i for i, c in enumerate(plan.changes)}
        try:
            await _run_all(
                [self._run_node(changes, outcomes, index) for changes in groups.values()]
            )
        finally:
            await self._watcher.aclose()
        report = ApplyReport(outcomes=tuple(outcomes[i] for i in sorted(outcomes)))
        self.progress.on_finish(report)
        return report

    async def _run_node(
        self, changes: list[Change], outcomes: dict[int, ChangeOutcome], index: Mapping[int, int]
    ) -> None:
        failed_before = False
        async with self._slots:
            self._close_interrupted(changes)
        for change in changes:
            if failed_before:
                outcome = ChangeOutcome(
                    change, OutcomeStatus.SKIPPED, "skipped: an earlier change of this node failed"
                )
                outcomes[index[id(change)]] = outcome
                self.progress.on_change_done(change, False, outcome.message)
                continue
            self.progress.on_change_started(change)
            try:
                message = await self._apply_change(change)
                outcome = ChangeOutcome(change, OutcomeStatus.DONE, message)
            except _Waiting as exc:
                outcome = ChangeOutcome(change, OutcomeStatus.WAITING, str(exc))
                failed_before = True
            except (ProviderError, ChangeFailedError, WaitFailedError) as exc:
                outcome = ChangeOutcome(change, OutcomeStatus.FAILED, _error_text(exc))
                failed_before = True
            outcomes[index[id(change)]] = outcome
            self.progress.on_change_done(
                change, outcome.status is not OutcomeStatus.FAILED, outcome.message
            )

    # -- plumbing -------------------------------------------------------------------------

    def _mutating(self) -> None:
        if self._before is not None:
            self._before()

    def _region_budget(self, region: str) -> asyncio.Semaphore:
        budget = self._region_budgets.get(region)
        if budget is None:
            budget = asyncio.Semaphore(max(1, self.settings.max_unavailable))
            self._region_budgets[region] = budget
        return budget

    def _now(self) -> datetime:
        return self.clock.now()

    def _begin(
        self, kind: str, target: str, params: Mapping[str, str], node: RecordedNode | None = None
    ) -> RecordedIntent:
        self._mutating()
        intent = self.store.begin_intent(
            self.fleet, kind, target, dict(params), epoch=self.epoch, node=node
        )
        if node is not None:
            self._state.nodes[node.name] = node
        return intent

    def _finish(
        self,
        intent: RecordedIntent,
        status: IntentStatus,
        *,
        error: str | None = None,
        node: RecordedNode | None = None,
    ) -> None:
        self._mutating()
        self.store.finish_intent(intent.id, status, error=error, node=node, epoch=self.epoch)
        if node is not None:
            self._state.nodes[node.name] = node

    def _upsert(self, node: RecordedNode) -> None:
        self._mutating()
        self.store.upsert_node(node, epoch=self.epoch)
        self._state.nodes[node.name] = node

    def _close(self, name: str) -> None:
        self._mutating()
        self.store.close_node(self.fleet, name, self._now(), epoch=self.epoch)
        self._state.nodes.pop(name, None)

    def _close_interrupted(self, changes: list[Change]) -> None:
        """Close the pending set_rdns/resize/destroy intents an interrupted run left on this
        node: those steps are resolved by observing, and this run's plan redoes what is still
        needed (a FORGET closes a destroy intent as done instead)."""
        target = changes[0].address
        kinds = ["set_rdns", "resize"]
        if not any(c.action in (Action.FORGET, Action.DESTROY) for c in changes):
            kinds.append("destroy")
        for kind in kinds:
            self._supersede(kind, target)

    def _supersede(self, kind: str, target: str) -> None:
        """Close older pending intents of ``kind`` on ``target`` (an interrupted attempt)."""
        for intent in self.snapshot.recorded.pending_intents:
            if intent.kind == kind and intent.target == target:
                self._finish_once(
                    intent, IntentStatus.FAILED, "interrupted; superseded by a new attempt"
                )

    def _finish_once(self, intent: RecordedIntent, status: IntentStatus, error: str) -> None:
        if intent.id in self._state.closed_intents:
            return
        self._state.closed_intents.add(intent.id)
        self._finish(intent, status, error=error)

    def _node(self, change: Change) -> RecordedNode:
        node = self._state.nodes.get(change.address)
        if node is None:
            raise ChangeFailedError(f"{change.address}: no record of this node")
        return node

    def _owned(self, change: Change, service_id: int) -> ObservedServer | None:
        """The observed server ``service_id``, refusing to touch one that is not this node."""
        server = self.snapshot.server(service_id)
        if server is not None and server.name != change.address:
            raise ChangeFailedError(
                f"{change.address}: server {service_id} is named {server.name!r}, not "
                f"{change.address!r}; refusing to change it"
            )
        return server

    def _status(self, node: RecordedNode, status: NodeStatus) -> RecordedNode:
        if node.status is status:
            return node
        return replace(node, status=status, status_changed_at=self._now())

    def _target_status(self, change: Change, default: NodeStatus) -> NodeStatus:
        raw = (change.after or {}).get("status")
        if raw:
            try:
                return NodeStatus(raw)
            except ValueError:
                return default
        return default

    # -- dispatch -------------------------------------------------------------------------

    async def _apply_change(self, change: Change) -> str:
        action = change.action
        if action is Action.CREATE:
            return await self._create(change)
        if action is Action.RESOLVE:
            return await self._resolve(change)
        if action is Action.ADOPT:
            return await self._adopt(change)
        if action is Action.DESTROY:
            return await self._destroy(change)
        if action is Action.RESIZE:
            return await self._resize(change)
        if action is Action.SET_RDNS:
            return await self._set_rdns_change(change)
        if action in (Action.ACTIVATE, Action.RESUME):
            return await self._into_rotation(change)
        async with self._slots:
            return self._record_only(change)

    # -- record-only actions --------------------------------------------------------------

    def _record_only(self, change: Change) -> str:
        action = change.action
        if action is Action.FORGET:
            for intent in self.snapshot.recorded.pending_intents:
                if intent.target == change.address and intent.kind != "create":
                    self._finish_once(intent, IntentStatus.DONE, "server gone")
            if change.address in self._state.nodes:
                self._close(change.address)
            return "record closed (server gone)"
        if action is Action.REPAIR:
            return self._repair(change)
        node = self._node(change)
        if action is Action.DRAIN:
            self._upsert(self._status(node, NodeStatus.DRAINING))
            return "out of rotation (draining)"
        if action is Action.PAUSE:
            self._upsert(self._status(node, self._target_status(change, NodeStatus.PAUSED)))
            return "paused"
        raise ChangeFailedError(f"unknown action {action.value}")

    async def _into_rotation(self, change: Change) -> str:
        """ACTIVATE / RESUME; a node that never got its reverse DNS gets it first (the
        pipeline resumes at its first unfinished step)."""
        node = self._node(change)
        status = self._target_status(change, NodeStatus.WARMING)
        graduating = node.status is NodeStatus.WARMING and status is NodeStatus.ACTIVE
        if change.action is Action.ACTIVATE and node.status.in_rotation and not graduating:
            return f"already in rotation ({node.status.value})"
        async with self._slots:
            server = self.snapshot.server(node.service_id)
            if (
                status.in_rotation
                and not node.rdns_done
                and server is not None
                and server.name == node.name
                and server.status is ServerStatus.ACTIVE
                and server.main_ip
            ):
                node = await self._set_rdns(node, server)
            updated = self._status(node, status)
            if status.in_rotation and updated.warmup_started_at is None:
                updated = replace(updated, warmup_started_at=self._now())
            self._upsert(updated)
        return f"in rotation ({status.value})"

    def _repair(self, change: Change) -> str:
        node = self._node(change)
        server = self.snapshot.server(change.service_id or node.service_id)
        if server is None:
            raise ChangeFailedError(f"{change.address}: server not observed; cannot repair")
        if server.name != change.address:
            raise ChangeFailedError(
                f"{change.address}: server {server.service_id} is named {server.name!r}"
            )
        plan = change.plan or plan_name_for_rid(self.spec, server.plan_rid) or node.plan
        updated = replace(
            node,
            service_id=server.service_id,
            ip_address=server.main_ip or node.ip_address,
            plan=plan,
            approximate_cost=self._cost(plan, node.pool) or node.approximate_cost,
        )
        self._upsert(updated)
        return "record corrected from the cloud"

    # -- create, resolve, adopt -----------------------------------------------------------

    def _create_params(self, change: Change) -> dict[str, str]:
        region = self.spec.regions.get(change.region)
        plan_name = change.plan or (region.plan if region else None)
        if plan_name is None or plan_name not in self.spec.plans:
            raise ChangeFailedError(f"{change.address}: unknown plan {plan_name!r}")
        location_id = change.location_id or (region.location_id if region else None)
        if location_id is None:
            raise ChangeFailedError(f"{change.address}: unknown location for {change.region!r}")
        return {
            "region": change.region,
            "plan": plan_name,
            "rid": str(self.spec.plans[plan_name].rid),
            "location_id": str(location_id),
            "pool": change.pool or "",
        }

    async def _create(self, change: Change) -> str:
        name = change.address
        existing = self.snapshot.servers_named(name)
        if existing:  # never create a name that exists: adopt it instead
            return await self._adopt_server(change, min(existing, key=lambda s: s.service_id))
        pending = self.snapshot.pending_create(name)
        if pending is not None:
            return await self._resolve_intents(change, [pending], recreate=True)
        return await self._create_fresh(change, self._create_params(change))

    async def _create_fresh(self, change: Change, params: Mapping[str, str]) -> str:
        name = change.address
        if name in self._state.created:
            raise ChangeFailedError(f"{name}: already created once in this run; not again")
        provider = self.spec.provider
        node = RecordedNode(
            id=self._existing_id(name),
            fleet=self.fleet,
            name=name,
            region=params["region"],
            plan=params["plan"],
            status=NodeStatus.PROVISIONING,
            pool=params.get("pool") or None,
            created_at=self._now(),
            status_changed_at=self._now(),
            observed_generation=self.spec_hash,
            approximate_cost=self._cost(params["plan"], params.get("pool") or None),
        )
        request = CreateRequest(
            name=name,
            location_id=int(params["location_id"]),
            rid=int(params["rid"]),
            template=provider.template,
            ssh_keys=tuple(provider.ssh_keys),
            billing_cycle=provider.billing_cycle,
        )
        async with self._slots:
            intent = self._begin("create", name, params, node=node)
            self._state.created.add(name)
            self._mutating()
            call_error: ProviderError | None = None
            try:
                await self.cloud.create_server(request)
            except ProviderError as exc:
                call_error = exc
        # find it by name, whatever the call said (it may have reached the server); waiting
        # for it to show up holds no slot, and concurrent creates share list rounds
        server = await self._find(name, patient=call_error is None)
        async with self._slots:
            if server is None:
                if call_error is None or isinstance(call_error, TransientError):
                    raise _Waiting(
                        f"{name}: created but not visible yet; the next run resolves it"
                        if call_error is None
                        else f"{name}: create call failed ({_error_text(call_error)}) and the "
                        "server is not visible; the next run resolves it after the grace period"
                    )
                self._finish(intent, IntentStatus.FAILED, error=_error_text(call_error))
                self._close(name)
                raise ChangeFailedError(f"{name}: create refused: {_error_text(call_error)}")
            recorded = replace(node, service_id=server.service_id, ip_address=server.main_ip)
            self._finish(intent, IntentStatus.DONE, node=recorded)
        return await self._bring_up(change, recorded, "created")

    def _existing_id(self, name: str) -> str:
        node = self._state.nodes.get(name)
        return node.id if node is not None else str(uuid.uuid4())

    async def _find(self, name: str, *, patient: bool) -> ObservedServer | None:
        """Look a name up once, or (``patient``) until it shows up within ``find_timeout``,
        through the watcher (alone: search by name; with others: shared list rounds)."""
        if not patient:
            try:
                found = await self.cloud.find_servers_by_name(name)
            except TransientError:
                return None
            return min(found, key=lambda s: s.service_id) if found else None
        return await self._watcher.wait_for_name(name, within=self.settings.find_timeout)

    async def _resolve(self, change: Change) -> str:
        """A pending create intent: look the name up first (design §3 step 4)."""
        after = change.after or {}
        wanted = {int(x) for x in after.get("intent_ids", "").split(",") if x.strip().isdigit()}
        intents = [
            i
            for i in self.snapshot.recorded.pending_intents
            if i.kind == "create" and i.target == change.address and (not wanted or i.id in wanted)
        ]
        if after.get("recorded") == "yes":
            async with self._slots:
                for intent in intents:
                    self._finish(intent, IntentStatus.DONE)
            return "intent closed (the server is already recorded)"
        if not intents:
            existing = self.snapshot.servers_named(change.address)
            if existing:
                return await self._adopt_server(change, min(existing, key=lambda s: s.service_id))
            return "nothing to resolve"
        return await self._resolve_intents(
            change,
            intents,
            recreate=after.get("recreate", "yes") == "yes",
        )

    async def _resolve_intents(
        self,
        change: Change,
        intents: list[RecordedIntent],
        *,
        recreate: bool,
    ) -> str:
        name = change.address
        newest = max(intents, key=lambda i: i.id)
        oldest = min(intents, key=lambda i: i.id)
        async with self._slots:
            try:
                found = await self.cloud.find_servers_by_name(name)
            except TransientError as exc:
                raise _Waiting(f"{name}: look-up failed ({exc.message}); next run") from None
            if found:
                server = min(found, key=lambda s: s.service_id)
                node = self._node_for_intent(change, newest, server)
                for intent in sorted(intents, key=lambda i: i.id):
                    self._finish(intent, IntentStatus.DONE, node=node)
                adopted: RecordedNode | None = node
            else:
                age = (self._now() - oldest.created_at) if oldest.created_at else None
                if age is not None and age < self.settings.adoption_grace:
                    left = (self.settings.adoption_grace - age).total_seconds()
                    raise _Waiting(f"{name}: waiting for the server to appear ({left:.0f}s left)")
                for intent in sorted(intents, key=lambda i: i.id):
                    self._finish(intent, IntentStatus.FAILED, error="never appeared")
                adopted = None
                if not recreate:
                    known = self._state.nodes.get(name)
                    if known is not None and known.service_id is None:
                        self._close(name)
        if adopted is None:
            if not recreate:
                return "create intent failed (never appeared); the spec no longer needs it"
            params = dict(newest.params)
            if not {"region", "plan", "rid", "location_id"} <= params.keys():
                params = self._create_params(change)
            return await self._create_fresh(change, params)
        if not _can_come_up(server):
            return f"adopted server {server.service_id} ({server.status.value})"
        return await self._bring_up(change, adopted, "resolved")

    def _node_for_intent(
        self, change: Change, intent: RecordedIntent, server: ObservedServer
    ) -> RecordedNode:
        known = self._state.nodes.get(change.address)
        plan = intent.params.get("plan") or change.plan or (known.plan if known else "")
        pool = intent.params.get("pool") or change.pool or (known.pool if known else None)
        base = known or RecordedNode(
            id=str(uuid.uuid4()),
            fleet=self.fleet,
            name=change.address,
            region=intent.params.get("region") or change.region,
            plan=plan,
            status=NodeStatus.PROVISIONING,
            pool=pool,
            created_at=self._now(),
        )
        return replace(
            base,
            service_id=server.service_id,
            ip_address=server.main_ip or base.ip_address,
            approximate_cost=self._cost(plan, pool) or base.approximate_cost,
        )

    async def _adopt(self, change: Change) -> str:
        server = self.snapshot.server(change.service_id)
        if server is None:
            named = self.snapshot.servers_named(change.address)
            server = min(named, key=lambda s: s.service_id) if named else None
        if server is None:
            raise ChangeFailedError(f"{change.address}: server not observed; cannot adopt")
        return await self._adopt_server(change, server)

    async def _adopt_server(self, change: Change, server: ObservedServer) -> str:
        if server.name != change.address:
            raise ChangeFailedError(
                f"{change.address}: server {server.service_id} is named {server.name!r}"
            )
        known = self._state.nodes.get(change.address)
        plan = (
            plan_name_for_rid(self.spec, server.plan_rid)
            or change.plan
            or (known.plan if known else None)
            or (self.spec.regions[change.region].plan if change.region in self.spec.regions else "")
        )
        pool = change.pool or (known.pool if known else None)
        status = NodeStatus.PROVISIONING
        if known is not None and known.rdns_done and server.status is ServerStatus.ACTIVE:
            status = known.status
        status = self._target_status(change, status)
        node = replace(
            known
            or RecordedNode(
                id=str(uuid.uuid4()),
                fleet=self.fleet,
                name=change.address,
                region=change.region,
                plan=plan,
                status=status,
                created_at=server.created_at or self._now(),
            ),
            service_id=server.service_id,
            ip_address=server.main_ip,
            plan=plan,
            pool=pool,
            status=status,
            status_changed_at=self._now(),
            approximate_cost=self._cost(plan, pool),
        )
        async with self._slots:
            pending = self.snapshot.pending_create(change.address)
            if pending is not None:
                self._finish(pending, IntentStatus.DONE, node=node)
            else:
                self._upsert(node)
        if status is NodeStatus.PROVISIONING and _can_come_up(server):
            # the node pipeline resumes here; later SET_RDNS/ACTIVATE of the same node in the
            # plan find their step done and skip it
            return await self._bring_up(change, node, "adopted")
        return f"adopted server {server.service_id}"

    # -- the node pipeline (design §3b) ---------------------------------------------------

    async def _bring_up(self, change: Change, node: RecordedNode, verb: str) -> str:
        """ACTIVE with an IP -> reverse DNS -> warming. Resumes at the first unfinished step."""
        if node.service_id is None:
            raise ChangeFailedError(f"{node.name}: no server id recorded")
        server = await self._watcher.wait_for(
            node.service_id,
            lambda s: s.status is ServerStatus.ACTIVE and bool(s.main_ip),
            within=self.settings.create_timeout,
            what="ACTIVE with an IP",
        )
        async with self._slots:
            node = self._state.nodes.get(node.name, node)
            if not node.rdns_done:
                node = await self._set_rdns(node, server)
            updated = replace(
                self._status(node, NodeStatus.WARMING)
                if node.status is NodeStatus.PROVISIONING
                else node,
                ip_address=server.main_ip,
            )
            if updated.warmup_started_at is None and updated.status.in_rotation:
                updated = replace(updated, warmup_started_at=self._now())
            if updated != self._state.nodes.get(node.name):
                self._upsert(updated)
        return f"{verb}; ACTIVE at {server.main_ip}, rDNS {updated.hostname}"

    async def _set_rdns(self, node: RecordedNode, server: ObservedServer) -> RecordedNode:
        assert server.main_ip is not None
        hostname = node_hostname(self.spec, node.name)
        intent = self._begin(
            "set_rdns",
            node.name,
            {"service_id": str(server.service_id), "ip": server.main_ip, "hostname": hostname},
        )
        self._mutating()
        try:
            await self.cloud.set_rdns(server.service_id, server.main_ip, hostname)
        except ProviderError as exc:
            self._finish(intent, IntentStatus.FAILED, error=_error_text(exc))
            raise
        updated = replace(
            node,
            service_id=server.service_id,
            ip_address=server.main_ip,
            hostname=hostname,
            rdns_done=True,
            approximate_cost=node.approximate_cost or self._cost(node.plan, node.pool),
        )
        self._finish(intent, IntentStatus.DONE, node=updated)
        return updated

    async def _set_rdns_change(self, change: Change) -> str:
        node = self._node(change)
        if node.rdns_done:  # done earlier in this run (adopt/resolve brought it up)
            return f"rDNS already set ({node.hostname})"
        service_id = change.service_id or node.service_id
        if service_id is None:
            raise ChangeFailedError(f"{change.address}: no server id recorded")
        server = self._owned(change, service_id)
        if server is None or server.status is not ServerStatus.ACTIVE or not server.main_ip:
            server = await self._watcher.wait_for(
                service_id,
                lambda s: s.status is ServerStatus.ACTIVE and bool(s.main_ip),
                within=self.settings.create_timeout,
                what="ACTIVE with an IP",
            )
        async with self._slots:
            updated = await self._set_rdns(node, server)
        return f"rDNS {updated.hostname} -> {server.main_ip}"

    # -- destroy --------------------------------------------------------------------------

    def _protected(self, name: str, region: str) -> bool:
        node = self._state.nodes.get(name)
        region_spec = self.spec.regions.get(region)
        return bool(
            (node is not None and node.protected)
            or name in self.snapshot.recorded.protected_names
            or name in self.spec.disruption.protected
            or (region_spec is not None and name in region_spec.protected)
        )

    async def _destroy(self, change: Change) -> str:
        name = change.address
        if self._protected(name, change.region):
            raise ChangeFailedError(f"{name}: protected; never destroyed")
        node = self._state.nodes.get(name)
        service_id = change.service_id or (node.service_id if node else None)
        if node is None and service_id is None:
            raise ChangeFailedError(f"{name}: not in our inventory; refusing to destroy")
        async with self._slots:
            if service_id is None:
                self._close(name)
                return "record closed (no server was ever recorded)"
            server = self._owned(change, service_id)
            self._supersede("destroy", name)
            intent = self._begin("destroy", name, {"service_id": str(service_id)})
            message = "destroyed"
            if server is None:
                message = "already gone"  # not in this run's list: nothing to terminate
            else:
                self._mutating()
                try:
                    await self.cloud.terminate(service_id)
                except NotFoundError:
                    message = "already gone"
                except ProviderError as exc:
                    self._finish(intent, IntentStatus.FAILED, error=_error_text(exc))
                    raise
            self._finish(intent, IntentStatus.DONE)
            if node is not None:
                self._close(name)
        return message

    # -- resize ---------------------------------------------------------------------------

    async def _resize(self, change: Change) -> str:
        name = change.address
        node = self._node(change)
        service_id = change.service_id or node.service_id
        target = change.plan
        if service_id is None or target is None or target not in self.spec.plans:
            raise ChangeFailedError(f"{name}: resize needs a server id and a known target plan")
        rid = self.spec.plans[target].rid
        server = self._owned(change, service_id)
        async with self._region_budget(change.region):
            async with self._slots:
                intent = self._begin(
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
                    async with self._slots:
                        self._mutating()
                        # ConflictError: an order is already pending (an interrupted earlier
                        # attempt): apply it; the next plan re-checks the resulting plan
                        with contextlib.suppress(ConflictError):
                            await self.cloud.upgrade_instance(service_id, rid)
                        self._mutating()
                        await self.cloud.upgrade_server(service_id)
                upgraded = True
                await self._watcher.wait_for(
                    service_id,
                    lambda s: s.status is ServerStatus.RESIZED,
                    within=self.settings.resize_timeout,
                    what="RESIZED",
                )
                async with self._slots:
                    self._mutating()
                    await self.cloud.confirm_upgrade(service_id)
                active = await self._watcher.wait_for(
                    service_id,
                    lambda s: s.status is ServerStatus.ACTIVE,
                    within=self.settings.resize_timeout,
                    what="ACTIVE after the resize",
                )
            except (ProviderError, WaitFailedError) as exc:
                async with self._slots:
                    if upgraded:
                        try:
                            self._mutating()
                            await self.cloud.revert_upgrade(service_id)
                        except ProviderError:
                            pass  # the next run observes and decides
                    self._finish(intent, IntentStatus.FAILED, error=_error_text(exc))
                raise
            updated = replace(
                self._state.nodes.get(name, node),
                plan=target,
                ip_address=active.main_ip or node.ip_address,
                approximate_cost=self._cost(target, node.pool),
            )
            async with self._slots:
                self._finish(intent, IntentStatus.DONE, node=updated)
        return f"resized {node.plan} -> {target}"


async def _run_all(coroutines: Iterable[Coroutine[Any, Any, None]]) -> None:
    """Run coroutines concurrently; the first exception cancels the rest and propagates."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    if not tasks:
        return
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    failure: BaseException | None = None
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            failure = task.exception()
            break
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.gather(*pending, return_exceptions=True)
    # retrieve every exception so none is reported as never retrieved
    for task in done:
        if not task.cancelled():
            task.exception()
    if failure is not None:
        raise failure
