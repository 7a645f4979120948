"""The run lifecycle: observe -> plan -> guards -> apply -> record (design §1).

``Reconciler.reconcile(request, hooks) -> RunResult`` is the one entry point: the CLI and the
daemon only turn a ``RunResult`` into exit codes, log lines and metrics. Every run is recorded
in the store's run history. It works through the ports only; the composition root
(``reconciler.wiring``) builds the real cloud and store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from reconciler.core.errors import (
    GuardRefusedError,
    ProviderError,
    ReconcilerError,
    SpecError,
    StalePlanError,
    StoreError,
    UserError,
)
from reconciler.core.fleet import IntentStatus, PricePlan, RecordedFleet, RecordedNode
from reconciler.core.lifecycle import DEADLINE_REASON
from reconciler.core.offers import OfferError, offer_problems, plan_uses
from reconciler.core.planning import PlanOptions
from reconciler.core.planning import plan as compute_plan
from reconciler.core.plans import GuardWarning, Plan
from reconciler.core.ports import Clock, CloudPort, RunRecord, StorePort
from reconciler.engine.applying import Applier, ApplyReport, ApplySettings, ProgressHooks
from reconciler.engine.costing import refresh_recorded_costs
from reconciler.engine.fences import WriterFence
from reconciler.engine.observing import Snapshot, observe
from reconciler.engine.pricing import PriceListCache
from reconciler.engine.provisioning import ProvisioningPorts, bundle_version
from specs.model import FleetSpec

#: ``RunRequest.overridable`` that overrides every blocking guard (``allow_blocked=True``)
ALL_GUARDS = frozenset({"*"})


@dataclass(frozen=True, slots=True)
class SavedPlan:
    """A plan read from a file (``reconcile --plan FILE``), with its fingerprint."""

    plan: Plan
    fingerprint: str | None
    source: str = "the saved plan"


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What one run is asked to do."""

    #: the run history's label: "apply", "dry-run", "daemon"
    mode: str = "apply"
    #: plan only (no lock needed, nothing mutated)
    dry_run: bool = False
    options: PlanOptions | None = None
    #: apply exactly this plan, if it still matches the world (else StalePlanError)
    saved: SavedPlan | None = None
    #: blocking guards the caller overrides (``--allow-mass-destroy``: {"mass_delete"})
    overridable: frozenset[str] = frozenset()
    #: the writer's fencing epoch (writer lock or leadership), carried by every write
    epoch: int | None = None
    #: who runs it ("cli alice@laptop", "daemon host:pid"), for the run history and journal
    actor: str | None = None
    #: the spec revision it runs (a git commit, or files:<spec hash>)
    revision: str | None = None
    #: the caller knows the recorded costs match this spec and the cost constants (it saw a
    #: refresh since either last changed): a run with nothing to apply skips the refresh, a
    #: second read of the whole fleet (the daemon's periodic no-op reconcile, issue 14)
    costs_current: bool = False

    def tags(self) -> dict[str, str]:
        """What every run record and journal entry of this run carries (``reconcile history``
        shows it): actor, revision, epoch."""
        tags = {"actor": self.actor, "revision": self.revision}
        if self.epoch is not None:
            tags["epoch"] = str(self.epoch)
        return {k: v[:200] for k, v in tags.items() if v}


class RunHooks:
    """What the caller (CLI, daemon) hooks into a run. Subclass and override; the defaults do
    nothing."""

    def __init__(
        self,
        *,
        before_mutation: Callable[[], None] | None = None,
        progress: ProgressHooks | None = None,
        fence: WriterFence | None = None,
    ) -> None:
        #: called right before every mutating step (store write or cloud mutation)
        self.before_mutation = before_mutation
        #: the writer's fence (leadership, writer lock): checked at the wire before every
        #: mutating request; its loss cancels the apply in flight
        self.fence = fence
        #: progress of the apply
        self.progress = progress

    def planned(self, plan: Plan, snapshot: Snapshot) -> None:
        """The plan is known (print it, save it, log it). May raise a ``UserError``."""
        return None

    def confirm(self, plan: Plan) -> None:
        """Last word before applying: raise a ``UserError`` to refuse (nothing applied)."""
        return None


@dataclass(frozen=True, slots=True)
class RunResult:
    """What a run did. The CLI and the daemon turn it into exit codes, log lines, metrics."""

    #: as recorded: "ok", "partial", "failed", "refused"
    outcome: str
    plan: Plan | None = None
    report: ApplyReport | None = None
    snapshot: Snapshot | None = None
    #: the blocking guard verdicts that refused the plan
    refused_by: tuple[GuardWarning, ...] = ()
    #: the error that ended the run (None when it ran to the end)
    error: ReconcilerError | SpecError | None = None
    run_id: int | None = None
    #: nodes whose recorded monthly cost this run brought in line with the cost constants
    costs_refreshed: tuple[str, ...] = ()
    #: why the recorded costs could not be refreshed (the run itself is not failed by it)
    costs_error: str | None = None


class SpecSource(Protocol):
    """What the engine reads of a loaded spec (``specs.loading.LoadedSpec`` fits)."""

    @property
    def spec(self) -> FleetSpec: ...

    @property
    def spec_hash(self) -> str: ...


def lock_name(fleet: str) -> str:
    """The store's writer lock that makes one writer at a time per fleet. It is named after
    the fleet itself: the store fences a fleet's writes with the newest epoch granted under the
    fleet's name (writer lock or daemon leadership), so a stale writer is refused."""
    return fleet


def plan_summary(plan: Plan) -> dict[str, str]:
    summary = {f"count.{k}": str(v) for k, v in sorted(plan.summary.counts.items())}
    summary["changes"] = str(len(plan.changes))
    summary["monthly_cost_before"] = str(plan.summary.monthly_cost_before)
    summary["monthly_cost_after"] = str(plan.summary.monthly_cost_after)
    if plan.blocked:
        summary["blocked"] = "true"
    return summary


class Reconciler:
    def __init__(
        self,
        loaded: SpecSource,
        cloud: CloudPort,
        store: StorePort,
        clock: Clock,
        *,
        poll_interval: float = 5.0,
        provisioning: ProvisioningPorts | None = None,
        agent_url: str | None = None,
        prices: PriceListCache | None = None,
        recorded_fleet: Callable[[], Awaitable[RecordedFleet]] | None = None,
    ) -> None:
        self.loaded = loaded
        #: reads the recorded fleet for each observation (None: ``store.load_fleet``); the
        #: daemon's keeps the fleet in memory and reads only what changed
        self.recorded_fleet = recorded_fleet
        #: the provider's price list, cached (None: plans do not check prices)
        self.prices = prices
        self._price_list: tuple[PricePlan, ...] | None = None
        #: the provisioning steps' adapters (DNS, SSH, sink...): None without them
        self.provisioning = provisioning
        #: the heartbeat URL in the nodes' bundle (a dry run has no ports but the same URL)
        self.agent_url = provisioning.agent_url if provisioning is not None else agent_url
        self.cloud = cloud
        self.store = store
        self.clock = clock
        self.settings = ApplySettings.from_spec(loaded.spec, poll_interval=poll_interval)
        #: carried by the run record and every journal entry of the current run
        self.tags: dict[str, str] = {}

    @property
    def spec(self) -> FleetSpec:
        return self.loaded.spec

    @property
    def fleet(self) -> str:
        return self.loaded.spec.name

    @property
    def spec_hash(self) -> str:
        return self.loaded.spec_hash

    async def observe(self) -> Snapshot:
        if self.prices is not None:
            self._price_list = await self.prices.get(self.cloud, self.clock.now())
        return await observe(
            self.cloud,
            self.store,
            self.fleet,
            self.spec_hash,
            self.clock.now(),
            self.recorded_fleet,
        )

    def plan(self, snapshot: Snapshot, options: PlanOptions | None = None) -> Plan:
        options = options if options is not None else PlanOptions(spec_hash=self.spec_hash)
        if not options.spec_hash:
            options = dataclasses.replace(options, spec_hash=self.spec_hash)
        if self.prices is not None and options.price_list is None:
            if self._price_list is not None:
                options = dataclasses.replace(options, price_list=self._price_list)
            if self.prices.error is not None:
                options = dataclasses.replace(
                    options,
                    notes=(
                        *options.notes,
                        f"provider prices not checked: {self.prices.error}"
                        if self._price_list is None
                        else f"provider prices from an older read ({self.prices.error})",
                    ),
                )
        window = self.spec.disruption.mass_delete_window
        if options.recent_fleet_size is None and window.total_seconds() > 0:
            # asked by the planner only when the plan scales down (one query)
            since = self.clock.now() - window
            options = dataclasses.replace(
                options, recent_fleet_size=lambda: self.store.peak_fleet_size(self.fleet, since)
            )
        if self.spec.provisioning is not None and options.provisioning_failures is None:
            options = dataclasses.replace(
                options, provisioning_failures=self.provisioning_failures()
            )
        # the bundle names the agent's heartbeat URL: a run that does not know it (a CLI run
        # without RECONCILER_AGENT_URL beside a daemon) renders each node's bundle with the
        # URL the node was bootstrapped with (recorded), never rolls nodes onto a bundle
        # without one, and leaves nodes with no recorded URL alone
        if self.spec.provisioning is not None and options.bundle_versions is None:
            options = dataclasses.replace(
                options, bundle_versions=self.bundle_versions(snapshot.recorded.nodes)
            )
        return compute_plan(
            self.spec, snapshot.observed, snapshot.recorded, self.clock.now(), options
        )

    def bundle_versions(self, nodes: Iterable[RecordedNode]) -> dict[str, str]:
        """Per recorded node that finished a bootstrap: the bundle version (content hash) the
        spec and the operator's settings make for it now (a change rolls through the fleet),
        with this run's agent URL or else the one recorded for the node (a changed URL is a
        changed bundle; a node with neither is not compared)."""
        settings = self.spec.provisioning
        if settings is None:
            return {}
        versions: dict[str, str] = {}
        for node in nodes:
            url = self.agent_url or node.agent_url
            if node.bundle_version is not None and url is not None:
                versions[node.name] = bundle_version(settings, node.name, url)
        return versions

    def provisioning_failures(self) -> dict[str, int]:
        """Per region: nodes destroyed for missing their provisioning deadline within the
        circuit breaker's window (read from the journal)."""
        settings = self.spec.provisioning
        if settings is None:
            return {}
        since = self.clock.now() - settings.circuit_breaker.window
        counts: dict[str, int] = {}
        for intent in self.store.journal(self.fleet, limit=1000):
            if (
                intent.kind == "destroy"
                and intent.params.get("reason", "").startswith(DEADLINE_REASON)
                and intent.created_at is not None
                and intent.created_at >= since
            ):
                region = intent.params.get("region", "")
                counts[region] = counts.get(region, 0) + 1
        return counts

    async def apply(
        self,
        plan: Plan,
        snapshot: Snapshot,
        *,
        epoch: int | None = None,
        before_mutation: Callable[[], None] | None = None,
        progress: ProgressHooks | None = None,
        allow_blocked: bool = False,
        fence: WriterFence | None = None,
    ) -> ApplyReport:
        applier = Applier(
            self.spec,
            self.cloud,
            self.store,
            self.clock,
            snapshot,
            settings=self.settings,
            epoch=epoch,
            before_mutation=before_mutation,
            progress=progress,
            spec_hash=self.spec_hash,
            provisioning=self.provisioning,
            # the journal has its own epoch column
            tags={k: v for k, v in self.tags.items() if k != "epoch"},
            fence=fence,
        )
        return await applier.apply(plan, allow_blocked=allow_blocked)

    def start_run(self, mode: str, plan: Plan | None = None) -> int:
        return self.store.start_run(
            RunRecord(
                fleet=self.fleet,
                started_at=self.clock.now(),
                spec_hash=self.spec_hash,
                mode=mode,
                summary={**(plan_summary(plan) if plan is not None else {}), **self.tags},
            )
        )

    def finish_run(self, run_id: int, outcome: str, error: str | None = None) -> None:
        self.store.finish_run(run_id, outcome, self.clock.now(), error)

    # --- the run lifecycle ------------------------------------------------------------------

    def _record(
        self,
        mode: str,
        plan: Plan | None,
        outcome: str,
        error: str | None = None,
        run_id: int | None = None,
    ) -> int | None:
        """Record (or finish recording) a run. A store that cannot record it does not hide
        the run's own outcome: the failure to record is reported by the caller's error."""
        try:
            if run_id is None:
                run_id = self.start_run(mode, plan)
            self.finish_run(run_id, outcome, error)
        except StoreError:
            return run_id
        return run_id

    async def check_offers(self, plan: Plan) -> None:
        """Raise ``OfferError`` when a create or resize of ``plan`` needs a plan id or a
        location the provider does not offer (two reads, only for plans that need them; the
        price list is the one the run's observation read through the pricing cache, if any). A
        provider that cannot answer does not stop the run: the apply reports its own errors."""
        plans, regions = plan_uses(plan)
        if not plans and not regions:
            return
        try:
            # the price list this run's observation read (through the pricing cache), if any:
            # every request before the creates is a token they wait for (issue 12)
            prices = (
                self._price_list
                if self._price_list is not None
                else tuple(await self.cloud.price_list())
            )
            locations = await self.cloud.locations()
        except ProviderError:
            return
        problems = offer_problems(self.spec, prices, locations, plans=plans, regions=regions)
        if problems:
            locate = getattr(self.loaded, "locate", None)  # a LoadedSpec knows file:line
            where = [
                ":".join(str(part) for part in locate(p.path)) if locate is not None else ""
                for p in problems
            ]
            raise OfferError(problems, where)

    def record_spec_protection(self, snapshot: Snapshot, epoch: int | None = None) -> list[str]:
        """Record in the store the protection the spec gives recorded nodes (journalled as a
        ``protect`` by ``spec``), so that it survives the node's removal from the spec: the
        spec can add protection, only ``reconcile node unprotect`` lifts it. Applying runs only
        (a dry run changes nothing). Returns the names newly protected."""
        spec = self.spec
        wanted = set(spec.disruption.protected)
        for region in spec.regions.values():
            wanted.update(region.protected)
        done: list[str] = []
        for node in snapshot.recorded.nodes:
            if node.name not in wanted or node.protected:
                continue
            try:
                intent = self.store.begin_intent(
                    self.fleet,
                    "protect",
                    node.name,
                    {"by": "spec", "why": "protected in the spec"},
                    epoch=epoch,
                )
                self.store.set_protected(self.fleet, node.name, True)
                self.store.finish_intent(intent.id, IntentStatus.DONE, epoch=epoch)
            except (StoreError, UserError):
                continue  # the spec's protection still applies to this plan; next run retries
            done.append(node.name)
        return done

    async def reconcile(self, request: RunRequest, hooks: RunHooks | None = None) -> RunResult:
        """One run: observe -> plan (or check a saved plan) -> guards -> apply -> record.

        Every run is recorded in the store's run history, whatever happens (a failed
        observation, a refusal by a guard, an error while applying). Expected errors (the
        ``ReconcilerError`` tree and spec errors) come back in ``RunResult.error``; anything
        else is a bug: recorded as failed and raised.
        """
        hooks = hooks if hooks is not None else RunHooks()
        mode = request.mode
        self.tags = request.tags()
        snapshot: Snapshot | None = None
        plan: Plan | None = None
        try:
            snapshot = await self.observe()
            if request.saved is not None:
                plan = check_saved_plan(request.saved, self.fleet, self.spec_hash, snapshot)
                # the guards are judged again on the world as it is now (issue 9): a saved
                # plan's own verdicts are not trusted
                fresh = self.plan(snapshot, request.options)
                plan = dataclasses.replace(plan, warnings=fresh.warnings)
            else:
                plan = self.plan(snapshot, request.options)
            hooks.planned(plan, snapshot)
            await self.check_offers(plan)
        except (ReconcilerError, SpecError) as exc:
            self._record(mode, plan, "failed", _error_text(exc))
            return RunResult("failed", plan=plan, snapshot=snapshot, error=exc)
        except BaseException as exc:
            self._record(mode, plan, "failed", _error_text(exc))
            raise
        if request.dry_run:
            run_id = self._record(mode, plan, "ok")
            return RunResult("ok", plan=plan, snapshot=snapshot, run_id=run_id)
        self.record_spec_protection(snapshot, request.epoch)
        if plan.is_empty:
            run_id = self._record(mode, plan, "ok")
            refreshed, costs_error = (
                ((), None) if request.costs_current else self._refresh_costs(request, hooks)
            )
            return RunResult(
                "ok",
                plan=plan,
                snapshot=snapshot,
                report=ApplyReport(),
                run_id=run_id,
                costs_refreshed=refreshed,
                costs_error=costs_error,
            )
        refused_by = tuple(
            w
            for w in plan.warnings
            if w.blocking and w.guard not in request.overridable and "*" not in request.overridable
        )
        if refused_by:
            message = "; ".join(w.message for w in refused_by)
            hint = next((w.hint for w in refused_by if w.hint), None)
            run_id = self._record(mode, plan, "refused", message)
            return RunResult(
                "refused",
                plan=plan,
                snapshot=snapshot,
                refused_by=refused_by,
                error=GuardRefusedError(
                    "refused by a guard: " + message,
                    hint=hint or "change the spec, or see the Warnings above",
                ),
                run_id=run_id,
            )
        try:
            hooks.confirm(plan)
        except UserError as exc:
            run_id = self._record(mode, plan, "refused", _error_text(exc))
            return RunResult("refused", plan=plan, snapshot=snapshot, error=exc, run_id=run_id)
        except ReconcilerError as exc:  # e.g. the daemon's leadership check
            run_id = self._record(mode, plan, "failed", _error_text(exc))
            return RunResult("failed", plan=plan, snapshot=snapshot, error=exc, run_id=run_id)
        run_id = self.start_run(mode, plan)
        try:
            report = await self.apply(
                plan,
                snapshot,
                epoch=request.epoch,
                before_mutation=hooks.before_mutation,
                progress=hooks.progress,
                allow_blocked=True,  # the guards were judged above
                fence=hooks.fence,
            )
        except ReconcilerError as exc:
            self._record(mode, plan, "failed", _error_text(exc), run_id=run_id)
            return RunResult("failed", plan=plan, snapshot=snapshot, error=exc, run_id=run_id)
        except BaseException as exc:
            self._record(mode, plan, "failed", _error_text(exc), run_id=run_id)
            raise
        self._record(mode, plan, report.outcome, _failures(report), run_id=run_id)
        refreshed, costs_error = self._refresh_costs(request, hooks)
        return RunResult(
            report.outcome,
            plan=plan,
            snapshot=snapshot,
            report=report,
            run_id=run_id,
            costs_refreshed=refreshed,
            costs_error=costs_error,
        )

    def _refresh_costs(
        self, request: RunRequest, hooks: RunHooks
    ) -> tuple[tuple[str, ...], str | None]:
        """After an apply: the recorded costs follow today's constants (engine.costing)."""
        try:
            names = refresh_recorded_costs(
                self.spec, self.store, epoch=request.epoch, before_mutation=hooks.before_mutation
            )
        except ReconcilerError as exc:
            return (), _error_text(exc)
        return tuple(names), None

    async def reconcile_once(
        self,
        *,
        dry_run: bool,
        options: PlanOptions | None = None,
        mode: str | None = None,
        epoch: int | None = None,
        before_mutation: Callable[[], None] | None = None,
        progress: ProgressHooks | None = None,
        allow_blocked: bool = False,
    ) -> tuple[Plan, ApplyReport | None]:
        """``reconcile`` for scripts and tests: errors are raised, not returned."""
        request = RunRequest(
            mode=mode or ("dry-run" if dry_run else "apply"),
            dry_run=dry_run,
            options=options,
            epoch=epoch,
            overridable=ALL_GUARDS if allow_blocked else frozenset(),
        )
        result = await self.reconcile(
            request, RunHooks(before_mutation=before_mutation, progress=progress)
        )
        if result.error is not None:
            raise result.error
        assert result.plan is not None
        return result.plan, result.report


def check_saved_plan(saved: SavedPlan, fleet: str, spec_hash: str, snapshot: Snapshot) -> Plan:
    """The saved plan, if it still applies to what is observed now; else ``StalePlanError``."""
    plan, source = saved.plan, saved.source
    fresh = "make a fresh plan with `reconcile --dry-run --out PLANFILE` and review it"
    if plan.fleet != fleet:
        raise StalePlanError(
            f"{source} is a plan for fleet {plan.fleet!r}, not {fleet!r}", hint=fresh
        )
    if not saved.fingerprint:
        raise StalePlanError(f"{source} carries no fingerprint; it cannot be checked", hint=fresh)
    if plan.spec_hash and plan.spec_hash != spec_hash:
        raise StalePlanError(
            f"{source} is stale: the spec changed since the plan was made "
            f"(spec {plan.spec_hash[:12]}, now {spec_hash[:12]})",
            hint=fresh,
        )
    if saved.fingerprint != snapshot.fingerprint:
        raise StalePlanError(
            f"{source} is stale: the recorded or observed state changed since the plan was made "
            f"(fingerprint {saved.fingerprint[:19]}, now {snapshot.fingerprint[:19]})",
            hint=fresh,
        )
    return plan


def _error_text(exc: BaseException) -> str:
    return (str(exc) or type(exc).__name__)[:500]


def _failures(report: ApplyReport) -> str | None:
    if not report.failed:
        return None
    text = "; ".join(
        f"{o.change.action.value} {o.change.address}: {o.message}" for o in report.failed
    )
    return text[:1000]
