"""The reconcile loop: observe -> plan -> apply -> record (design §1).

``Reconciler`` is what the CLI and the daemon drive. It works through the ports only; the
composition root (``reconciler.wiring``) builds the real cloud and store.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Protocol

from reconciler.core.errors import GuardRefusedError
from reconciler.core.planning import PlanOptions
from reconciler.core.planning import plan as compute_plan
from reconciler.core.plans import Plan
from reconciler.core.ports import Clock, CloudPort, RunRecord, StorePort
from reconciler.engine.applying import Applier, ApplyReport, ApplySettings, ProgressHooks
from reconciler.engine.observing import Snapshot, observe
from specs.model import FleetSpec


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
    ) -> None:
        self.loaded = loaded
        self.cloud = cloud
        self.store = store
        self.clock = clock
        self.settings = ApplySettings.from_spec(loaded.spec, poll_interval=poll_interval)

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
        return await observe(self.cloud, self.store, self.fleet, self.spec_hash, self.clock.now())

    def plan(self, snapshot: Snapshot, options: PlanOptions | None = None) -> Plan:
        options = options if options is not None else PlanOptions(spec_hash=self.spec_hash)
        if not options.spec_hash:
            options = dataclasses.replace(options, spec_hash=self.spec_hash)
        return compute_plan(
            self.spec, snapshot.observed, snapshot.recorded, self.clock.now(), options
        )

    async def apply(
        self,
        plan: Plan,
        snapshot: Snapshot,
        *,
        epoch: int | None = None,
        before_mutation: Callable[[], None] | None = None,
        progress: ProgressHooks | None = None,
        allow_blocked: bool = False,
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
        )
        return await applier.apply(plan, allow_blocked=allow_blocked)

    def start_run(self, mode: str, plan: Plan | None = None) -> int:
        return self.store.start_run(
            RunRecord(
                fleet=self.fleet,
                started_at=self.clock.now(),
                spec_hash=self.spec_hash,
                mode=mode,
                summary=plan_summary(plan) if plan is not None else {},
            )
        )

    def finish_run(self, run_id: int, outcome: str, error: str | None = None) -> None:
        self.store.finish_run(run_id, outcome, self.clock.now(), error)

    async def apply_recorded(
        self,
        plan: Plan,
        snapshot: Snapshot,
        *,
        mode: str = "apply",
        epoch: int | None = None,
        before_mutation: Callable[[], None] | None = None,
        progress: ProgressHooks | None = None,
        allow_blocked: bool = False,
    ) -> ApplyReport:
        """``apply`` inside a run record (start_run / finish_run with the outcome)."""
        run_id = self.start_run(mode, plan)
        try:
            report = await self.apply(
                plan,
                snapshot,
                epoch=epoch,
                before_mutation=before_mutation,
                progress=progress,
                allow_blocked=allow_blocked,
            )
        except GuardRefusedError as exc:
            self.finish_run(run_id, "refused", exc.message)
            raise
        except Exception as exc:
            self.finish_run(run_id, "failed", (str(exc) or type(exc).__name__)[:500])
            raise
        self.finish_run(run_id, report.outcome, _failures(report))
        return report

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
        """Observe, plan and (unless ``dry_run``) apply; recorded as one run."""
        snapshot = await self.observe()
        plan = self.plan(snapshot, options)
        if dry_run:
            run_id = self.start_run(mode or "dry-run", plan)
            self.finish_run(run_id, "ok")
            return plan, None
        if plan.is_empty:
            run_id = self.start_run(mode or "apply", plan)
            self.finish_run(run_id, "ok")
            return plan, ApplyReport()
        report = await self.apply_recorded(
            plan,
            snapshot,
            mode=mode or "apply",
            epoch=epoch,
            before_mutation=before_mutation,
            progress=progress,
            allow_blocked=allow_blocked,
        )
        return plan, report


def _failures(report: ApplyReport) -> str | None:
    if not report.failed:
        return None
    text = "; ".join(
        f"{o.change.action.value} {o.change.address}: {o.message}" for o in report.failed
    )
    return text[:1000]
