"""Apply a plan through the ports, change by change, journaled (design §3, §3b, §4, §5).

The applier executes what the plan says (the changes' typed fields); it never re-decides.
Each action family lives in its own module: ``creating`` (create, resolve, adopt),
``steps`` (the per-node pipeline: set_rdns, activate, resume), ``destroying``, ``resizing``,
``recording`` (forget, repair, drain, pause); ``journaling`` writes every store change.

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
- Fenced to the wire (design §3c): with a ``WriterFence`` the apply installs the writer's check
  (``reconciler.core.fencing``) that the cloud adapters run after the rate-limit token and right
  before each mutating request; when the writer loses (the fence's ``wait_lost``), the apply in
  flight is cancelled, calls waiting for a token included, and ``LeadershipLostError`` raised.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any

from reconciler.core.addresses import node_hostname
from reconciler.core.errors import GuardRefusedError, LeadershipLostError, ProviderError
from reconciler.core.fencing import fenced
from reconciler.core.plans import Action, Change, Plan, Resolution
from reconciler.core.ports import Clock, CloudPort, StorePort
from reconciler.engine import creating, destroying, powering, recording, resizing, steps
from reconciler.engine.contexts import (
    ApplyContext,
    ApplySettings,
    ChangeFailedError,
    Waiting,
    error_text,
)
from reconciler.engine.fences import WriterFence
from reconciler.engine.journaling import Journal
from reconciler.engine.observing import Snapshot
from reconciler.engine.provisioning import ProvisioningPorts, make_provisioner
from reconciler.engine.reports import (
    ApplyReport,
    ChangeOutcome,
    OutcomeStatus,
    ProgressHooks,
    SilentProgress,
)
from reconciler.engine.watching import WaitFailedError
from specs.model import FleetSpec

__all__ = [
    "Applier",
    "ApplyReport",
    "ApplySettings",
    "ChangeFailedError",
    "ChangeOutcome",
    "OutcomeStatus",
    "ProgressHooks",
    "SilentProgress",
    "node_hostname",
    "plan_name_for_rid",
]


def plan_name_for_rid(spec: FleetSpec, rid: int | None) -> str | None:
    if rid is None:
        return None
    for name, plan in spec.plans.items():
        if plan.rid == rid:
            return name
    return None


Handler = Callable[[ApplyContext, Change], Awaitable[str]]


def _recorded(action: Callable[[ApplyContext, Change], str]) -> Handler:
    """A record-only action, run holding a call slot."""

    async def run(ctx: ApplyContext, change: Change) -> str:
        async with ctx.slots:
            return action(ctx, change)

    return run


async def _pipeline_or_rotation(ctx: ApplyContext, change: Change) -> str:
    """ACTIVATE of a provisioning node is the pipeline's ``rotation`` step; ACTIVATE of a
    warming node (graduation) and RESUME move a node into rotation."""
    if change.step is not None:
        return await steps.run_step(ctx, change)
    return await steps.into_rotation(ctx, change)


#: action -> the family that executes it
HANDLERS: dict[Action, Handler] = {
    Action.CREATE: creating.create,
    Action.RESOLVE: creating.resolve,
    Action.ADOPT: creating.adopt,
    Action.DESTROY: destroying.destroy,
    Action.BOOT: powering.boot,
    Action.RESIZE: resizing.resize,
    Action.SET_RDNS: steps.run_step,
    Action.PROVISION: steps.run_step,
    Action.ACTIVATE: _pipeline_or_rotation,
    Action.RESUME: steps.into_rotation,
    Action.FORGET: _recorded(recording.forget),
    Action.REPAIR: _recorded(recording.repair),
    Action.DRAIN: _recorded(recording.out_of_rotation),
    Action.PAUSE: _recorded(recording.out_of_rotation),
}


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
        provisioning: ProvisioningPorts | None = None,
        tags: Mapping[str, str] | None = None,
        fence: WriterFence | None = None,
    ) -> None:
        #: the writer's fence: checked at the wire before every mutating request; its loss
        #: cancels the apply in flight
        self.fence = fence
        self.journal = Journal(
            store,
            spec.name,
            clock,
            snapshot.recorded,
            epoch=epoch,
            before_mutation=before_mutation,
            tags=tags,
        )
        self.ctx = ApplyContext(
            spec,
            cloud,
            clock,
            snapshot,
            self.journal,
            settings=settings,
            spec_hash=spec_hash,
            provisioning=provisioning,
        )
        self.ctx.provisioner = make_provisioner(spec.provisioning, provisioning, clock)
        self.progress: ProgressHooks = progress or SilentProgress()

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
        fence = self.fence
        try:
            with fenced(fence.check if fence is not None else None):
                work = asyncio.ensure_future(
                    _run_all(
                        [self._run_node(changes, outcomes, index) for changes in groups.values()]
                    )
                )
                if fence is None:
                    await work
                else:
                    await _until_lost(work, fence)
        finally:
            await self.ctx.aclose()
        report = ApplyReport(outcomes=tuple(outcomes[i] for i in sorted(outcomes)))
        self.progress.on_finish(report)
        return report

    async def _run_node(
        self, changes: list[Change], outcomes: dict[int, ChangeOutcome], index: Mapping[int, int]
    ) -> None:
        async with self.ctx.slots:
            self._close_interrupted(changes)
        try:
            await self._run_changes(changes, outcomes, index)
        finally:
            # a pipeline step recorded with the node's next write (Journal.hold) is written
            # once the node's changes are through
            self.journal.flush(changes[0].address)

    async def _run_changes(
        self, changes: list[Change], outcomes: dict[int, ChangeOutcome], index: Mapping[int, int]
    ) -> None:
        failed_before = False
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
                message = await HANDLERS[change.action](self.ctx, change)
                outcome = ChangeOutcome(change, OutcomeStatus.DONE, message)
            except Waiting as exc:
                outcome = ChangeOutcome(change, OutcomeStatus.WAITING, str(exc))
                failed_before = True
            except (ProviderError, ChangeFailedError, WaitFailedError) as exc:
                outcome = ChangeOutcome(change, OutcomeStatus.FAILED, error_text(exc))
                failed_before = True
            outcomes[index[id(change)]] = outcome
            self.progress.on_change_done(
                change, outcome.status is not OutcomeStatus.FAILED, outcome.message
            )

    def _close_interrupted(self, changes: list[Change]) -> None:
        """Close the intents other than creates that an interrupted run left pending on this
        node (set_rdns, resize, boot, destroy, decommission, a provisioning step...): what
        they began is resolved by observing and by the node's recorded steps, and this run's
        plan redoes what is still needed. Left to the changes themselves: a FORGET closes
        them as done (the server is gone), a DESTROY its own destroy intents, a RESOLVE the
        intents it names (pending creates are resolved by looking the name up)."""
        if any(
            c.action is Action.FORGET or c.resolution is Resolution.INTERRUPTED for c in changes
        ):
            return
        target = changes[0].address
        kept = {"create"}
        if any(c.action is Action.DESTROY for c in changes):
            kept.add("destroy")
        kinds = {i.kind for i in self.journal.recorded.pending_intents if i.target == target}
        for kind in sorted(kinds - kept):
            self.journal.supersede(kind, target)


async def _until_lost(work: asyncio.Future[None], fence: WriterFence) -> None:
    """Await ``work`` unless the writer loses first: then cancel it (calls waiting for a
    rate-limit token included) and raise ``LeadershipLostError``."""
    watcher = asyncio.ensure_future(fence.wait_lost())
    both: set[asyncio.Future[Any]] = {work, watcher}
    try:
        await asyncio.wait(both, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        work.cancel()
        raise
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    if not work.done():
        work.cancel()
        await asyncio.gather(work, return_exceptions=True)
        raise LeadershipLostError(
            f"{fence.lost_reason}: the apply in flight was cancelled (nothing more is sent)"
        )
    work.result()


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
