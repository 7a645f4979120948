"""Waiting for convergence after an apply (``reconcile --wait``, like ``kubectl wait``).

An apply sends what it can and returns; a create may not have shown up yet (its intent waits
for the adoption grace), a node may still be in its pipeline, destroys may be deferred by a
budget. ``wait_for_convergence`` re-observes until the fleet matches the spec or the timeout:
each round observes and plans (nothing recorded); a plan with work that can be done now is
applied by a follow-up run through the one run lifecycle (recorded, guarded, confirmed by the
caller's hooks); a plan that only waits (a create inside its grace, a stopped server before
its replacement time, a pipeline step waiting) sleeps a poll interval. It stops at once when
no waiting can help (a failed slot, a guard's refusal, a failed change) and says why, and
what the next run will do.

The CLI waits by default (``--timeout``, default 10 minutes); the daemon never does (its next
tick is the next run).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from reconciler.core.errors import ReconcilerError, SpecError
from reconciler.core.fleet import NodeStatus, RecordedFleet
from reconciler.core.plans import NEEDS_OPERATOR, Action, Change, Plan, Resolution
from reconciler.engine.observing import Snapshot
from reconciler.engine.reconciling import Reconciler, RunHooks, RunRequest, RunResult

#: the changes that only finish what an applied plan started (a saved plan's follow-ups may
#: run these and nothing else: ``--plan`` applies exactly the plan it was given)
FINISHING = frozenset({Action.RESOLVE, Action.SET_RDNS, Action.ACTIVATE, Action.PROVISION})
#: the shortest pause between two observations while waiting
MIN_POLL = 1.0


class WaitEnd(StrEnum):
    """Why the wait ended."""

    CONVERGED = "converged"
    TIMEOUT = "timeout"
    #: waiting cannot help: an operator has to act (failed slot, circuit breaker, rename)
    OPERATOR = "operator"
    #: a follow-up run failed, was refused by a guard, or was not confirmed
    FAILED = "failed"
    #: a saved plan was applied: the rest is a new plan to review (``--plan``)
    NEW_PLAN = "new-plan"


@dataclass(frozen=True, slots=True)
class Convergence:
    """What waiting found."""

    end: WaitEnd
    #: the last plan computed (what the next run would start from)
    plan: Plan | None = None
    #: what keeps the fleet from matching the spec, one line each (empty when converged)
    remaining: tuple[str, ...] = ()
    #: what the next run will do about it, one line each
    next_run: tuple[str, ...] = ()
    #: the follow-up runs made while waiting (each recorded in the run history)
    runs: tuple[RunResult, ...] = ()
    #: the error that ended the wait (a follow-up run's), if any
    error: ReconcilerError | SpecError | None = None
    #: seconds spent waiting (on the reconciler's clock)
    waited: float = 0.0

    @property
    def converged(self) -> bool:
        return self.end is WaitEnd.CONVERGED


def waits_only(change: Change) -> bool:
    """A change that applying now would only report as waiting."""
    return change.action is Action.RESOLVE and change.resolution is Resolution.WAIT


def idle(change: Change) -> bool:
    """A change that applying now does nothing for: a create inside its grace, or a failed
    slot holding its place until an operator decides."""
    return change.action is Action.RESOLVE and change.resolution in (
        Resolution.WAIT,
        Resolution.EXHAUSTED,
    )


def remaining_work(plan: Plan, recorded: RecordedFleet) -> tuple[str, ...]:
    """What keeps the fleet from matching the spec: the plan's changes, its unsettled warnings,
    nodes still in their pipeline, and creates sent but not seen. Empty: converged."""
    lines = [f"{c.action.value} {c.address}: {c.reason}" for c in plan.changes]
    lines += [f"{w.guard}: {w.message}" for w in plan.unsettled]
    planned = {c.address for c in plan.changes}
    provisioning = sorted(
        n.name
        for n in recorded.nodes
        if n.status is NodeStatus.PROVISIONING and n.name not in planned
    )
    if provisioning:
        waits = [note for note in plan.notes if any(name in note for name in provisioning)]
        lines += [
            f"{name}: not in service yet (its pipeline is not finished)" for name in provisioning
        ]
        lines += waits
    pending = sorted(
        i.target for i in recorded.pending_intents if i.kind == "create" and i.target not in planned
    )
    lines += [f"{name}: create sent, its server not recorded yet" for name in pending]
    return tuple(lines)


def next_run(plan: Plan, recorded: RecordedFleet) -> tuple[str, ...]:
    """What the next run (``reconcile`` again, or the daemon's next tick) does with what
    remains, one line each."""
    lines: list[str] = []
    for change in plan.changes:
        if waits_only(change):
            until = change.grace_until.isoformat() if change.grace_until is not None else "later"
            lines.append(
                f"looks {change.address} up again; re-creates it if it has not appeared by "
                f"{until} (the adoption grace)"
            )
        elif change.action is Action.RESOLVE and change.resolution is Resolution.EXHAUSTED:
            lines.append(f"buys nothing for {change.address} until `reconcile node retry`")
        else:
            lines.append(f"{change.action.value} {change.address}: {change.reason}")
    for warning in plan.unsettled:
        hint = f" ({warning.hint})" if warning.hint else ""
        lines.append(f"{warning.guard}: {warning.message}{hint}")
    if not lines and remaining_work(plan, recorded):
        lines.append("resumes each node still in its pipeline at its first unfinished step")
    return tuple(lines)


async def wait_for_convergence(
    reconciler: Reconciler,
    request: RunRequest,
    *,
    timeout: float,  # noqa: ASYNC109 (on the reconciler's clock, a fake one in tests)
    hooks: Callable[[], RunHooks] = RunHooks,
    on_wait: Callable[[tuple[str, ...]], None] | None = None,
    poll: float | None = None,
) -> Convergence:
    """After an apply: observe (and apply follow-up runs) until the fleet converges, waiting
    cannot help, or ``timeout`` seconds have passed on the reconciler's clock.

    ``request`` is the applied run's request (its saved plan, if any, means follow-ups may only
    finish that plan's work: ``FINISHING``). ``hooks()`` makes the hooks of each follow-up run
    (the CLI prints its plan and asks before destroys); ``on_wait(remaining)`` is called when
    what remains changes.
    """
    clock = reconciler.clock
    started = clock.now()
    interval = max(poll if poll is not None else reconciler.settings.poll_interval, MIN_POLL)
    follow = dataclasses.replace(request, saved=None, mode=request.mode, dry_run=False)
    runs: list[RunResult] = []
    last_remaining: tuple[str, ...] | None = None

    def waited() -> float:
        return (clock.now() - started).total_seconds()

    def end(
        how: WaitEnd,
        plan: Plan | None,
        snapshot: Snapshot | None,
        error: ReconcilerError | SpecError | None = None,
    ) -> Convergence:
        recorded = snapshot.recorded if snapshot is not None else RecordedFleet(reconciler.fleet)
        return Convergence(
            how,
            plan=plan,
            remaining=remaining_work(plan, recorded) if plan is not None else (),
            next_run=next_run(plan, recorded) if plan is not None else (),
            runs=tuple(runs),
            error=error,
            waited=waited(),
        )

    while True:
        try:
            snapshot = await reconciler.observe()
            plan = reconciler.plan(snapshot, request.options)
        except (ReconcilerError, SpecError) as exc:
            return end(WaitEnd.FAILED, None, None, exc)
        remaining = remaining_work(plan, snapshot.recorded)
        if not remaining:
            return end(WaitEnd.CONVERGED, plan, snapshot)
        actionable = [c for c in plan.changes if not idle(c)]
        if not actionable and any(w.guard in NEEDS_OPERATOR for w in plan.unsettled):
            return end(WaitEnd.OPERATOR, plan, snapshot)
        if request.saved is not None and any(c.action not in FINISHING for c in actionable):
            return end(WaitEnd.NEW_PLAN, plan, snapshot)
        if remaining != last_remaining and on_wait is not None:
            on_wait(remaining)
        last_remaining = remaining
        if actionable:
            result = await reconciler.reconcile(follow, hooks())
            runs.append(result)
            if result.error is not None or (result.report is not None and not result.report.ok):
                return end(WaitEnd.FAILED, result.plan or plan, result.snapshot, result.error)
        left = timeout - waited()
        if left <= 0:
            return end(WaitEnd.TIMEOUT, plan, snapshot)
        await clock.sleep(min(interval, left))
