"""The daemon: scheduled reconciles, heartbeat sweeps, autoscaling, costs, HTTP, leadership.

Jobs run on an APScheduler ``AsyncIOScheduler``, each with ``max_instances=1`` and
``coalesce=True`` so a slow job never piles up behind itself:

- ``leadership`` (every second): take leadership when free, check it while held;
- ``spec-watch`` (every 2 s): reload the spec when a spec file is added, changed or removed
  (``sources.FolderSource``), then reconcile;
- ``sweep`` (a third of the heartbeat interval): reload the recorded fleet and recent beats,
  grade health, count missed beats, raise alerts, refresh metrics and the fleet view; ask for a
  reconcile when a node goes unhealthy, is due for replacement or comes back;
- ``autoscale`` (``scaling.evaluation_interval``): HPA-style decisions per region, fed to the
  planner as ``PlanOptions.desired_counts``; a changed count asks for a reconcile at once;
- ``reconcile`` (``reconcile.interval``, and on request): observe, plan, apply as the leader,
  with the epoch on every write and a live leadership check before every mutation. The run
  itself goes to its own thread and event loop (``engineloop.EngineLoop``, where the cloud
  client and the provisioning adapters live): its synchronous store calls and its planning
  never hold this loop, so the lease is renewed and the sweeps run while it runs;
- ``costs`` (daily): refresh each node's recorded monthly cost, prune old heartbeat figures.

Only the leader mutates (reconcile, costs). Every daemon ingests heartbeats and serves HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED, JobEvent
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from starlette.routing import Route

from reconciler import package_version
from reconciler.core.costs import CostResolver
from reconciler.core.errors import (
    GuardRefusedError,
    LeadershipLostError,
    ProviderError,
    ReconcilerError,
    SpecError,
    StoreError,
)
from reconciler.core.fleet import NodeMetrics, NodeStatus, RecordedFleet, RecordedNode
from reconciler.core.health import (
    AlertCondition,
    GuardedHealth,
    HealthAssessment,
    Severity,
    alert_conditions,
    detection_window,
    guard_assessment,
)
from reconciler.core.lifecycle import breaker_conditions, held_by_operator
from reconciler.core.planning import PlanOptions
from reconciler.core.plans import Change, Plan
from reconciler.core.ports import (
    Clock,
    CloudPort,
    LeadershipPort,
    ReputationStorePort,
    StorePort,
)
from reconciler.core.reputation import IpState, RotationCandidate, rotation
from reconciler.core.scaling import (
    NodeLoad,
    QueueSample,
    Recommendation,
    ScalerState,
    ScalingDecision,
    VerticalDecision,
    evaluate,
    region_bounds,
    utilization_by,
    vertical_decisions,
)
from reconciler.daemon.agent import Agent, Figures
from reconciler.daemon.alerts import Alerter, plan_conditions
from reconciler.daemon.bounded import LeftBehindError, call_within
from reconciler.daemon.counting import CountingCloud
from reconciler.daemon.engineloop import EngineLoop
from reconciler.daemon.fleetstate import (
    FULL_LOAD_EVERY,
    Changes,
    FleetState,
    LivenessCache,
    read_changed,
    read_full,
    read_marks,
)
from reconciler.daemon.heartbeats import HeartbeatBatcher, MasterSecret, Verifier
from reconciler.daemon.http import (
    LogLimiter,
    bind_socket,
    create_app,
    make_server,
    serve,
    wait_started,
)
from reconciler.daemon.leadership import RELEASE_WAIT, LeaderGuard
from reconciler.daemon.metrics import DaemonMetrics
from reconciler.daemon.reputation import BlocklistChecker, ReputationJob, rotation_document
from reconciler.daemon.rotation import Complaint, create_handlers, platform_token
from reconciler.daemon.sources import (
    WEBHOOK_SECRET_ENV,
    FolderSource,
    GitSettings,
    Rejected,
    SpecSource,
    git_source,
    off_loop,
    webhook_authentic,
)
from reconciler.daemon.statusing import (
    COUNTED,
    FiguresCache,
    FleetSummary,
    FleetView,
    build_view,
    figures_horizon,
    node_loads,
    summarise,
    without_costs,
)
from reconciler.daemon.statuspage import (
    EventLog,
    StatusTokens,
    authorize,
    may_see_costs,
    presented_token,
)
from reconciler.daemon.statuspage import render as render_status
from reconciler.daemon.stopping import StopSignals, exit_on_stop_while_starting
from reconciler.engine.applying import ApplyReport
from reconciler.engine.clocks import SystemClock
from reconciler.engine.costing import refresh_recorded_costs
from reconciler.engine.fences import WriterFence
from reconciler.engine.observing import Snapshot
from reconciler.engine.pricing import PriceListCache
from reconciler.engine.provisioning import ProvisioningPorts
from reconciler.engine.reconciling import Reconciler, RunHooks, RunRequest, RunResult
from reconciler.wiring import (
    AGENT_URL_ENV,
    build_blocklist_checker,
    build_cloud,
    build_provisioning,
    build_store,
    default_state_dir,
    poll_interval_for,
    reputation_store_for,
)
from specs.loading import LoadedSpec, load_spec
from specs.model import FleetSpec
from state.leadership import leadership_for

log = logging.getLogger("reconciler.daemon")

_T = TypeVar("_T")

#: seconds the engine thread waits for the daemon's loop to take a hook's call (the plan)
HOOK_WAIT = 30.0
#: seconds a stop waits for the HTTP server to close and the waiting heartbeats to be written
HTTP_CLOSE_WAIT = 10.0
#: the same, and for the reconcile thread, the leadership connection and the store to close,
#: once the stop found the database not answering (``Daemon.left_behind``)
HTTP_STUCK_WAIT = 1.0
ENGINE_STUCK_WAIT = 0.5
CLOSE_STUCK_WAIT = 0.5
#: why the daemon could not observe (the ``cause`` of a ``health.observation_gap`` line)
GAP_CAUSES = {
    "start": "the daemon (re)started",
    "store": "the state database was unavailable",
    "intake": "the heartbeat intake could not receive or write beats",
    "stall": "the health sweep stalled (the process, its event loop or a store read was frozen)",
}


def _serve_in_own_loop(server: Any, sock: Any) -> None:
    asyncio.run(serve(server, sock))


def _quiet_overruns(record: logging.LogRecord) -> bool:
    """APScheduler warns once per skipped or missed run (a flood when a job overruns): those
    lines are dropped here; the daemon counts and summarises them (``_job_overrun``). So are
    the tracebacks of jobs cancelled by the scheduler's shutdown."""
    message = str(record.msg)
    if record.exc_info and isinstance(record.exc_info[1], asyncio.CancelledError):
        return False  # a job cancelled by the scheduler's shutdown (SIGTERM): not an error
    return not ("maximum number of running instances" in message or "was missed by" in message)


@dataclass(frozen=True)
class DaemonSettings:
    paths: tuple[str, ...]
    listen: tuple[str, int] | None = ("127.0.0.1", 8080)
    holder: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    #: seconds to let the step in flight finish on SIGTERM before abandoning it
    shutdown_grace: float = 20.0
    spec_poll: float = 2.0
    leadership_poll: float = 1.0
    #: None: a third of the spec's heartbeat interval, within 1..10 s
    sweep_interval: float | None = None
    allow_mass_destroy: bool = False
    #: plan and log, never mutate (a safe way to watch what the daemon would do)
    dry_run: bool = False
    #: seconds between polls of a changing server (engine); 0: suited to the provider
    poll_interval: float = 0.0
    #: seconds between reputation assessments (rates every time; blocklists when due); at
    #: most the spec's heartbeat interval (rates move as often as beats bring counts)
    reputation_poll: float = 30.0
    #: who may read GET /status (and see costs there); see daemon/statuspage.py
    status_tokens: StatusTokens = field(default_factory=StatusTokens)
    #: follow a git repository instead of the -f paths (``--git``)
    git: GitSettings | None = None
    #: the shared secret of POST /v1/git/webhook (None: the endpoint is off)
    webhook_secret: str | None = field(default=None, repr=False)


def _load_libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


_LIBC = _load_libc()


def release_memory() -> None:
    """Hand freed heap pages back to the OS after a job that built large temporary
    structures (10,000-node fleets): glibc keeps them otherwise, and RSS only grows."""
    if _LIBC is not None:
        with contextlib.suppress(AttributeError, OSError):
            _LIBC.malloc_trim(0)


class _ApplyProgress:
    """Engine progress hooks that log each change and count it."""

    def __init__(self, metrics: DaemonMetrics) -> None:
        self._metrics = metrics

    def on_start(self, total: int) -> None:
        log.info(f"applying {total} change(s)", extra={"event": "apply.start", "changes": total})

    def on_change_started(self, change: Change) -> None:
        return None

    def on_change_done(self, change: Change, ok: bool, message: str) -> None:
        self._metrics.changes.labels(change.action.value, "ok" if ok else "failed").inc()
        log.log(
            logging.INFO if ok else logging.WARNING,
            f"{change.action.value} {change.address}: {message}",
            extra={
                "event": "apply.change",
                "action": change.action.value,
                "node": change.address,
                "region": change.region,
                "ok": ok,
            },
        )

    def on_finish(self, report: ApplyReport) -> None:
        return None


def log_plan(plan: Plan) -> None:
    """A line per planned change and per guard warning."""
    for change in plan.changes:
        log.info(
            f"{change.action.marker} {change.action.value} {change.address}: {change.reason}",
            extra={
                "event": "plan.change",
                "action": change.action.value,
                "node": change.address,
                "region": change.region,
            },
        )
    for warning in plan.warnings:
        log.warning(
            f"guard {warning.guard}: {warning.message}",
            extra={
                "event": "plan.warning",
                "guard": warning.guard,
                "blocking": warning.blocking,
            },
        )


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def on_loop(loop: asyncio.AbstractEventLoop, call: Callable[[], _T], wait: float = HOOK_WAIT) -> _T:
    """``call()`` run on ``loop`` (the daemon's state belongs to its main loop), its result
    returned to the calling thread (the engine's); at once when the caller runs on ``loop``.
    A loop that is closed or does not take the call within ``wait`` s: ``ReconcilerError``
    (the engine then records its run as failed)."""
    if _running_loop() is loop:
        return call()
    done: Future[_T] = Future()

    def run() -> None:
        if not done.set_running_or_notify_cancel():
            return
        try:
            done.set_result(call())
        except BaseException as exc:
            done.set_exception(exc)

    try:
        loop.call_soon_threadsafe(run)
    except RuntimeError as exc:
        raise ReconcilerError("the daemon's event loop is closed (stopping)") from exc
    try:
        return done.result(timeout=wait)
    except FutureTimeout:
        done.cancel()
        raise ReconcilerError(
            f"the daemon's event loop did not take the plan within {wait:.0f}s"
        ) from None


class _DaemonHooks(RunHooks):
    """The daemon's part of a run: log the plan, check leadership before applying and before
    every mutation, count and log each change.

    Called on the engine's thread (``EngineLoop``): what touches the daemon's state (the plan,
    a spec revision on trial, the scheduler) hops to the daemon's loop (``on_loop``); the
    leader guard is thread-safe (its lock, its checks in threads, a lease read on the
    monotonic clock), and so are the metrics and the log."""

    def __init__(self, daemon: Daemon, loop: asyncio.AbstractEventLoop) -> None:
        guard = daemon.guard
        super().__init__(
            before_mutation=guard.before_mutation,
            progress=_ApplyProgress(daemon.metrics),
            # checked at the wire before every mutating request; a loss cancels the apply
            fence=WriterFence(guard.before_mutation, held=lambda: guard.is_leader),
        )
        self.daemon = daemon
        self.loop = loop

    def planned(self, plan: Plan, snapshot: Snapshot) -> None:
        on_loop(self.loop, lambda: self.daemon.planned(plan))
        log_plan(plan)  # here: thousands of lines must not hold the daemon's loop

    def confirm(self, plan: Plan) -> None:
        self.daemon.guard.before_mutation()


class Daemon:
    """One daemon process's work. Build with the adapters; ``await run()`` until stopped."""

    def __init__(
        self,
        settings: DaemonSettings,
        loaded: LoadedSpec,
        store: StorePort,
        cloud: CloudPort,
        leadership: LeadershipPort,
        master: MasterSecret,
        *,
        clock: Clock | None = None,
        metrics: DaemonMetrics | None = None,
        loader: Any = load_spec,
        monotonic: Callable[[], float] = time.monotonic,
        reputation: ReputationStorePort | None = None,
        checker_factory: Callable[[FleetSpec], BlocklistChecker | None] | None = None,
        provisioning: ProvisioningPorts | None = None,
        source: SpecSource | None = None,
        engine: EngineLoop | None = None,
    ) -> None:
        self.settings = settings
        #: where reconciles run (their own thread and loop, with the cloud client and the
        #: provisioning adapters); None: ``run`` starts one for its life, a ``reconcile_now``
        #: outside ``run`` (tests, an embedding) one for the call
        self.engine = engine
        self._own_engine = False
        #: the loop ``run`` runs on (the daemon's state is its)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: the provisioning steps' adapters (None: the spec's pipeline stops after rDNS)
        self.provisioning = provisioning
        self.loaded = loaded
        self.store = store
        self.metrics = metrics or DaemonMetrics()
        self.cloud = CountingCloud(cloud, self.metrics)
        self.clock: Clock = clock or SystemClock()
        self._loader = loader
        #: the daemon's monotonic clock (leadership, the intake's failures, observation gaps)
        self._monotonic = monotonic
        self.guard = LeaderGuard(
            leadership, self.metrics, on_change=self._leadership_changed, monotonic=monotonic
        )
        self.alerter = Alerter(
            loaded.spec.name,
            self.metrics,
            webhook=loaded.spec.alerts.webhook,
            dedupe_window=loaded.spec.alerts.dedupe_window,
        )
        self._known: set[str] = set()
        #: node -> CPU-bound capacity (emails/minute): plausibility bound of its beats
        self._capacity: dict[str, float] = {}
        self.verifier = Verifier(
            master, known_node=self._known.__contains__, capacity_per_minute=self._capacity.get
        )
        #: the fleet and its recent beats in memory, fed by committed beats and light polls
        self.state = FleetState(
            loaded.spec.name, window=int(getattr(store, "metrics_window", 20) or 20)
        )
        #: each node's figures (load, grade, capacity), computed again only when they change
        self.figures = FiguresCache()
        #: each node's liveness, computed again only when it can have changed
        self.liveness = LivenessCache()
        #: the fleet state's beats version behind ``self.recent``
        self._recent_version = -1
        self._summary_memo: tuple[tuple[Any, ...], FleetSummary] | None = None
        self._loads_memo: tuple[tuple[Any, ...], datetime | None, list[NodeLoad]] | None = None
        self._refreshing = asyncio.Lock()
        self._full_load_due = True
        #: the leadership epoch held when the last full load began (None: none held): a
        #: reconcile plans from the fleet in memory only if it was loaded under its epoch
        self._loaded_epoch: int | None = None
        self._records_version = -1
        self.batcher = HeartbeatBatcher(
            store, loaded.spec.name, on_written=self._beats_written, monotonic=monotonic
        )
        self.scheduler: AsyncIOScheduler | None = None
        self.stopping = asyncio.Event()
        #: where the spec comes from: the -f paths (new, changed and removed files are seen)
        self.source: SpecSource = source or FolderSource(
            settings.paths, loader=loader, loaded=loaded
        )
        # state between jobs
        self.recorded = RecordedFleet(fleet=loaded.spec.name)
        self.recent: Mapping[str, Sequence[NodeMetrics]] = {}
        self.assessment = HealthAssessment(frozenset(), frozenset(), frozenset(), ())
        self.scaler_state = ScalerState()
        self.decisions: tuple[ScalingDecision, ...] = ()
        self.desired_counts: dict[str, int] = {}
        self.node_plans: dict[str, str] = {}
        self.vertical_notes: tuple[str, ...] = ()
        self._view_at: datetime | None = None
        self._view_json: dict[str, Any] | None = None
        self._health_key: tuple[frozenset[str], frozenset[str], frozenset[str]] | None = None
        self._reconcile_task: asyncio.Task[None] | None = None
        #: (spec hash, cost constants) the recorded costs were last refreshed for
        self._costs_current_for: tuple[str, Any] | None = None
        self._rerun = False
        self._costs_due = False
        #: the provider's price list, read at most once an hour for every plan
        self.prices = PriceListCache()
        self._store_ok = True
        # observation (decisions only from trustworthy observations, core.health)
        #: since when the daemon has observed without a gap, and what ended the last gap
        self._observed_since = self.clock.now()  # a (re)start is a gap
        self._gap_cause = "start"
        #: False while the cause goes on (the gap's end, and so the window's, not known yet)
        self._gap_ended = True
        #: the last refresh failed: the store is out until a refresh succeeds again
        self._store_out = False
        #: the intake's last ended failure, once its gap was taken into account
        self._intake_failure_seen: tuple[float, float] | None = None
        #: the same for the intake's last stall (its loop did not tick), and whether the
        #: last sweep saw it stalled
        self._intake_stall_seen: tuple[float, float] | None = None
        self._intake_stalled = False
        self._last_sweep: datetime | None = None
        self._blind_until: datetime | None = None
        #: (cause, since) of the last observation_gap line
        self._gap_logged: tuple[str, datetime] | None = None
        self._disrupted: set[str] = set()
        self._disruption_pause: datetime | None = None
        #: nodes an operator holds (cordon, drain, maintenance), as the last sweep saw them
        self._held: frozenset[str] | None = None
        self._overrun_log = LogLimiter(600.0, logger=log)
        self.reconcile_count = 0
        self.last_plan: Plan | None = None
        # reputation: blocklists, rates, warmup safety, the rotation (reconciler.daemon.reputation)
        self._reputation_store = reputation
        self.reputation_job = (
            ReputationJob(loaded.spec.name, store, reputation, checker_factory)
            if reputation is not None
            else None
        )
        self._health_conditions: tuple[AlertCondition, ...] = ()
        #: the leader's provisioning alerts (an open circuit breaker), from its last plan
        self._provisioning_conditions: tuple[AlertCondition, ...] = ()
        #: the leader's failed slots (``alerts.plan_conditions``), from its last plan
        self._slot_conditions: tuple[AlertCondition, ...] = ()
        self._platform_token = platform_token(master.raw, loaded.spec.name)
        #: (when it ended, outcome) of the last reconcile, for the status page
        self.last_reconcile: tuple[datetime, str] | None = None
        #: recent events (log records with an ``event``) for the status page
        self.events = EventLog()
        #: a new spec revision running on trial: (revision, the spec it replaced); the next
        #: plan decides (a guard refusal puts the previous spec back)
        self._pending: tuple[str, LoadedSpec] | None = None
        self._publish_revision()
        #: what the daemon is doing, for the line of a forced stop (reconciler.daemon.stopping)
        self.phase = "running"
        #: the daemon process (serve_daemon): a stop that cannot finish ends the process
        self.exit_process = False
        self.stop_signals: StopSignals | None = None
        #: what the stop had to leave behind (a database that does not answer): the closes
        #: after it do not wait on that database, and the process exits without waiting for
        #: the threads left in its calls
        self.left_behind: list[str] = []

    # --- what HTTP reads -----------------------------------------------------------------

    @property
    def spec(self) -> FleetSpec:
        return self.loaded.spec

    @property
    def fleet(self) -> str:
        return self.loaded.spec.name

    @property
    def is_leader(self) -> bool:
        return self.guard.is_leader

    def spec_status(self) -> dict[str, Any]:
        """The running spec's revision, and the last refused one with why (``/readyz``)."""
        status = self.source.status()
        refused = bool(status.attempted_error) and status.attempted != status.applied
        return {
            "revision": status.applied,
            "spec_hash": self.loaded.spec_hash,
            "refused": {"revision": status.attempted, "error": status.attempted_error}
            if refused
            else None,
        }

    async def store_reachable(self) -> bool:
        try:
            await asyncio.to_thread(self.store.journal, self.fleet, 1)
        except ReconcilerError:
            self._store_ok = False
            return False
        self._store_ok = True
        return True

    def current_view(self) -> FleetView:
        """The fleet view as of the last sweep."""
        return build_view(
            self.spec,
            self.recorded,
            self.recent,
            self._view_at or self.clock.now(),
            assessment=self.assessment,
            decisions=self.decisions,
            cache=self.figures,
            ip_states=(
                {name: a.ip_state.value for name, a in self.reputation_job.view.nodes.items()}
                if self.reputation_job is not None
                else None
            ),
        )

    def fleet_document(self) -> dict[str, Any]:
        """The fleet view as JSON, built on demand from the last sweep's view."""
        if self._view_json is None:
            if self._view_at is None:  # before the first sweep
                empty = FleetView(self.fleet, self.clock.now(), (), (), Decimal(0))
                return {
                    **empty.to_json(),
                    "leader": self.is_leader,
                    "reputation": self.reputation_document(),
                    "spec": self.source.status().to_json(),
                }
            self._view_json = self.current_view().to_json()
        document = dict(self._view_json)
        document["leader"] = self.is_leader
        document["reputation"] = self.reputation_document()
        document["spec"] = self.source.status().to_json()
        return document

    def fleet_for(self, authorization: str | None, query_token: str | None) -> dict[str, Any]:
        """``GET /v1/fleet``: cost figures only for the cost token (statuspage.may_see_costs)."""
        document = self.fleet_document()
        host = self.settings.listen[0] if self.settings.listen else "127.0.0.1"
        presented = presented_token(authorization, query_token)
        if may_see_costs(host, self.settings.status_tokens, presented):
            return document
        return without_costs(document)

    def reputation_document(self) -> dict[str, Any]:
        """Each node's IP state, why it is out of rotation, its warmup hold and allowance, and
        the zones' last probes (in /v1/fleet)."""
        job = self.reputation_job
        if job is None:
            return {"enabled": False}
        view = job.view
        return {
            "enabled": True,
            "assessed_at": view.at.isoformat() if view.at else None,
            "last_blocklist_check": (
                view.last_blocklist_check.isoformat() if view.last_blocklist_check else None
            ),
            "check_interval": view.interval_reason,
            "zones": {
                zone: {"health": probe.health.value, "reason": probe.reason}
                for zone, probe in sorted(view.probes.items())
            },
            "nodes": {
                name: {
                    "ip_state": a.ip_state.value,
                    "out_of_rotation": a.pause,
                    "reasons": list(a.pause_reasons),
                    "warmup_held": a.hold_warmup,
                    "hold_reasons": list(a.hold_reasons),
                    "warmup_day": a.warmup_day,
                    "daily_limit": a.daily_limit,
                    "sent_today": a.sent_today,
                    "bounce_rate": a.rates.bounce_rate,
                    "complaint_rate": a.rates.complaint_rate,
                    "rate_volume": a.rates.counts.attempts,
                }
                for name, a in sorted(view.nodes.items())
            },
        }

    def status_page(self, authorization: str | None, query_token: str | None) -> tuple[int, str]:
        """``GET /status``: (HTTP status, HTML or a one-line refusal)."""
        host = self.settings.listen[0] if self.settings.listen else "127.0.0.1"
        verdict = authorize(
            host, self.settings.status_tokens, presented_token(authorization, query_token)
        )
        if verdict.status != 200:
            return verdict.status, verdict.reason
        now = self.clock.now()
        stale = None
        if not self._store_ok:
            stale = "the state database is unreachable; figures are from the last good sweep"
        elif self._view_at is None:
            stale = "no health sweep yet since the daemon started"
        else:
            age = (now - self._view_at).total_seconds()
            if age > 3 * self._sweep_seconds(self.spec) + 5:
                stale = f"the last health sweep was {age:.0f}s ago"
        waiting = []
        plan = self.last_plan
        if plan is not None:
            waiting += [
                f"plan refused by the {w.guard} guard: {w.message}"
                for w in plan.warnings
                if w.blocking
            ]
            if not plan.is_empty and self.last_reconcile and self.last_reconcile[1] != "ok":
                waiting.append(
                    f"{len(plan.changes)} planned change(s); last reconcile: "
                    f"{self.last_reconcile[1]}"
                )
        return 200, render_status(
            spec=self.spec,
            fleet_document=self.fleet_document(),
            now=now,
            show_costs=verdict.show_costs,
            leader=self.is_leader,
            epoch=self.guard.epoch,
            last_reconcile=self.last_reconcile,
            source=self.source.status().to_json(),
            stale=stale,
            events=self.events.recent(),
            waiting=waiting,
            version=package_version(),
        )

    # --- lifecycle -----------------------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT (or ``stop()``); returns the exit code (0)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self.engine is None:
            # reconciles run on their own thread and loop, for the daemon's life
            self.engine = EngineLoop().start()
            self._own_engine = True
        # SIGTERM, SIGINT, SIGQUIT: handled off the loop too, so that a loop stuck in a store
        # call still stops within a bound (reconciler.daemon.stopping)
        stop_signals = StopSignals(
            loop,
            on_stop=lambda name: self.stop(name, announced=True),
            abandon=self.guard.abandon,
            phase=lambda: self.phase,
            grace=self.settings.shutdown_grace,
            exit_process=self.exit_process,
        )
        if stop_signals.install():
            self.stop_signals = stop_signals
        else:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.stop, sig.name)
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        # signals whose default action would kill the process without a word
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGALRM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._ignored_signal, sig.name)
        server = None
        serving: asyncio.Task[None] | None = None
        self.events.attach()
        try:
            await self._refresh(initial=True)
            # health and the autoscaler's counts are known before the first reconcile
            await self._job_sweep()
            await self._job_autoscale()
            if self.settings.listen is not None:
                rotation, complaints = create_handlers(self, self._platform_token)
                app = create_app(
                    self,
                    self.metrics,
                    self.verifier,
                    self.batcher,
                    extra_routes=[
                        Route("/v1/rotation", rotation, methods=["GET"]),
                        Route("/v1/complaints", complaints, methods=["POST"]),
                    ],
                )
                sock = bind_socket(*self.settings.listen)
                server = make_server(app, *self.settings.listen, metrics=self.metrics)
                # the HTTP server runs on its own event loop in its own thread: /healthz and
                # heartbeat intake never wait for this loop's jobs (nor for the reconcile's
                # thread, where the engine's synchronous store calls may hang on a frozen
                # database)
                serving = loop.create_task(
                    asyncio.to_thread(_serve_in_own_loop, server, sock), name="http"
                )
                await wait_started(server, serving)
                host, port = self.settings.listen
                log.info(
                    f"listening on http://{host}:{port}",
                    extra={"event": "daemon.listening", "host": host, "port": port},
                )
            else:
                self.batcher.start()
            self._start_scheduler()
            log.info(
                f"daemon started for fleet {self.fleet} as {self.settings.holder}",
                extra={"event": "daemon.started", "fleet": self.fleet},
            )
            await self.guard.tick()
            await self.stopping.wait()
        finally:
            await self._shutdown(server, serving)
            if self.stop_signals is not None and not self.exit_process:
                self.stop_signals.stopped()
        return 0

    def reload(self) -> None:
        """SIGHUP: read the spec again now (as daemons usually do); logged."""
        log.info(
            "SIGHUP received: reloading the spec",
            extra={"event": "spec.reload_requested", "signal": "SIGHUP"},
        )
        self.request_spec_poll("SIGHUP")

    def _ignored_signal(self, name: str) -> None:
        log.warning(
            f"{name} received and ignored", extra={"event": "daemon.signal", "signal": name}
        )

    def stop(self, why: str = "stop", *, announced: bool = False) -> None:
        """Stop (on the loop). ``announced``: the stop was logged already (a stop signal)."""
        if not self.stopping.is_set():
            if not announced:
                log.info(
                    f"{why} received: stopping (grace {self.settings.shutdown_grace:.0f}s)",
                    extra={"event": "daemon.stopping", "signal": why},
                )
            self.stopping.set()

    async def _shutdown(self, server: Any, serving: asyncio.Task[None] | None) -> None:
        self.phase = "stopping the scheduler"
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None
        task = self._reconcile_task
        if task is not None and not task.done():
            self.phase = "waiting for the reconcile in flight"
            try:
                await asyncio.wait_for(asyncio.shield(task), self.settings.shutdown_grace)
            except TimeoutError:
                log.warning(
                    "the reconcile in flight did not finish in time: abandoned (the journal "
                    "resumes it on the next run)",
                    extra={"event": "daemon.abandoned"},
                )
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                if self.engine is not None and self.engine.busy:
                    # it did not unwind: its thread waits in a call (a frozen database)
                    self.left_behind.append("the reconcile's store call")
            except Exception:  # noqa: S110 (already logged by the reconcile itself)
                pass
        self.phase = "releasing leadership"
        leading = self.guard.holds_epoch  # its lease may have run out already
        if not await self.guard.release(RELEASE_WAIT):
            self.left_behind.append(
                "the leadership lease (left to expire)" if leading else "a leadership call"
            )
        # a database that does not answer: what is left closes without waiting for it
        stuck = bool(self.left_behind)
        self.phase = "closing the HTTP server and flushing heartbeats"
        if server is not None:
            server.should_exit = True
        if serving is not None:
            # the flush of the beats still waiting: 10 s, or a short bound when the database
            # does not answer (those beats were never answered 2xx: their agents resend them)
            try:
                await asyncio.wait_for(serving, HTTP_STUCK_WAIT if stuck else HTTP_CLOSE_WAIT)
            except TimeoutError:
                self.left_behind.append("the heartbeat flush")
            except (asyncio.CancelledError, Exception):  # noqa: S110 - logged by the server
                pass
        else:
            try:
                await asyncio.wait_for(
                    self.batcher.aclose(), HTTP_STUCK_WAIT if stuck else HTTP_CLOSE_WAIT
                )
            except TimeoutError:
                self.left_behind.append("the heartbeat flush")
        await self.alerter.aclose()
        if self._own_engine and self.engine is not None:
            self.phase = "stopping the reconcile thread"
            await self.engine.close(ENGINE_STUCK_WAIT if self.left_behind else 3.0)
            self.engine = None
            self._own_engine = False
        self.phase = "stopped (leadership released, HTTP closed), closing the store"
        if self.left_behind:
            left = ", ".join(self.left_behind)
            log.warning(
                f"daemon stopped; left behind (the state database does not answer): {left}",
                extra={"event": "daemon.stopped", "left_behind": list(self.left_behind)},
            )
        else:
            log.info("daemon stopped", extra={"event": "daemon.stopped"})
        self.events.detach()

    def _start_scheduler(self) -> None:
        spec = self.spec
        scheduler = AsyncIOScheduler(timezone=UTC)
        defaults: dict[str, Any] = {"max_instances": 1, "coalesce": True, "misfire_grace_time": 30}
        now = datetime.now(UTC)
        scheduler.add_job(
            self._job_leadership,
            "interval",
            seconds=self.settings.leadership_poll,
            id="leadership",
            **defaults,
        )
        scheduler.add_job(
            self._job_spec_watch,
            "interval",
            seconds=self.settings.git.interval if self.settings.git else self.settings.spec_poll,
            id="spec-watch",
            **defaults,
        )
        scheduler.add_job(
            self._job_sweep,
            "interval",
            seconds=self._sweep_seconds(spec),
            id="sweep",
            **defaults,
        )
        scheduler.add_job(
            self._job_autoscale,
            "interval",
            seconds=max(1.0, spec.scaling.evaluation_interval.total_seconds()),
            id="autoscale",
            next_run_time=now + timedelta(seconds=1),
            **defaults,
        )
        scheduler.add_job(
            self._job_reconcile,
            "interval",
            seconds=max(1.0, spec.reconcile.interval.total_seconds()),
            id="reconcile",
            next_run_time=now + timedelta(seconds=1),
            **defaults,
        )
        if self.reputation_job is not None:
            scheduler.add_job(
                self._job_reputation,
                "interval",
                seconds=self._reputation_seconds(spec),
                id="reputation",
                next_run_time=now + timedelta(seconds=2),
                **defaults,
            )
        scheduler.add_job(
            self._job_costs,
            "interval",
            hours=24,
            id="costs",
            next_run_time=now + timedelta(seconds=5),
            **defaults,
        )
        scheduler.add_listener(self._job_overrun, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)
        for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
            logging.getLogger(name).addFilter(_quiet_overruns)
        scheduler.start()
        self.scheduler = scheduler

    def _job_overrun(self, event: JobEvent) -> None:
        """A run skipped because the previous one still runs (coalesced), or missed: counted,
        and logged once per job per ten minutes (never a line per skipped run)."""
        kind = "missed" if event.code == EVENT_JOB_MISSED else "skipped"
        self.metrics.job_overruns.labels(event.job_id, kind).inc()
        self._overrun_log.log(
            f"{event.job_id}:{kind}",
            f"job {event.job_id}: a run was {kind} (the previous one still ran); coalesced, "
            "counted in reconciler_job_overruns_total",
            event="scheduler.overrun",
            job=event.job_id,
            kind=kind,
        )

    def _reputation_seconds(self, spec: FleetSpec) -> float:
        beat = spec.health.heartbeat_interval.total_seconds()
        return max(1.0, min(self.settings.reputation_poll, beat))

    def _sweep_seconds(self, spec: FleetSpec) -> float:
        if self.settings.sweep_interval is not None:
            return self.settings.sweep_interval
        return min(10.0, max(1.0, spec.health.heartbeat_interval.total_seconds() / 3))

    def _reschedule(self, old: FleetSpec, new: FleetSpec) -> None:
        if self.scheduler is None:
            return
        if old.reconcile.interval != new.reconcile.interval:
            self.scheduler.reschedule_job(
                "reconcile",
                trigger="interval",
                seconds=max(1.0, new.reconcile.interval.total_seconds()),
            )
        if old.scaling.evaluation_interval != new.scaling.evaluation_interval:
            self.scheduler.reschedule_job(
                "autoscale",
                trigger="interval",
                seconds=max(1.0, new.scaling.evaluation_interval.total_seconds()),
            )
        if old.health.heartbeat_interval != new.health.heartbeat_interval:
            self.scheduler.reschedule_job(
                "sweep", trigger="interval", seconds=self._sweep_seconds(new)
            )
            if self.reputation_job is not None:
                self.scheduler.reschedule_job(
                    "reputation", trigger="interval", seconds=self._reputation_seconds(new)
                )

    def request_reconcile(self, why: str) -> None:
        """Run a reconcile now (or right after the one in flight)."""
        if self.stopping.is_set():
            return
        if self._reconcile_task is not None and not self._reconcile_task.done():
            self._rerun = True
            return
        log.info(f"reconcile requested: {why}", extra={"event": "reconcile.requested"})
        if self.scheduler is not None:
            job = self.scheduler.get_job("reconcile")
            if job is not None:
                job.modify(next_run_time=datetime.now(UTC))

    def _leadership_changed(self, leading: bool) -> None:
        # the guard reports a loss from whichever thread learnt it (the engine's mutation
        # check): the daemon's state changes on its loop
        loop = self._loop
        if loop is not None and _running_loop() is not loop:
            with contextlib.suppress(RuntimeError):  # closed: the daemon has stopped
                loop.call_soon_threadsafe(self._leadership_changed, leading)
            return
        self._costs_current_for = None  # another leader may have written meanwhile
        if leading:
            # a new leader starts from the store's whole truth (a standby kept up by polls)
            self._full_load_due = True
            self.request_reconcile("leadership taken")

    def _beats_written(self, beats: Sequence[NodeMetrics]) -> None:
        """The intake's hook (any thread): the beats the store recorded, after the commit."""
        # the beats' sending counts (bounces, complaints) went in with them, in the same
        # transaction (state.store.record_heartbeats)
        self.metrics.heartbeats_written.inc(len(beats))
        self.state.committed(beats)

    # --- the sending platform (reconciler.daemon.rotation) --------------------------------

    @property
    def complaint_window(self) -> timedelta:
        return self.spec.reputation.max_window

    def node_for(self, name: str | None, ip: str | None) -> str | None:
        for node in self.recorded.nodes:
            if node.status is NodeStatus.DECOMMISSIONED:
                continue
            if (name is not None and node.name == name) or (
                ip is not None and node.ip_address == ip
            ):
                return node.name
        return None

    async def record_complaints(self, complaints: list[Complaint]) -> tuple[int, int]:
        rep = self._reputation_store
        if rep is None:
            return 0, 0
        try:
            return await asyncio.to_thread(
                rep.add_complaints,
                self.fleet,
                [(c.node, c.at, c.count, c.event_id) for c in complaints],
                self.clock.now(),
            )
        except StoreError as exc:
            log.warning(
                f"complaints not recorded ({len(complaints)} events): {exc.message}",
                extra={"event": "reputation.complaints_failed"},
            )
            raise

    def rotation_document(self) -> dict[str, Any]:
        now = self.clock.now()
        job = self.reputation_job
        if job is None:
            entries = rotation(
                RotationCandidate(
                    n.name,
                    n.ip_address,
                    n.region,
                    n.pool,
                    # an operator's cordon or drain counts at once, before the reconcile
                    NodeStatus.MAINTENANCE if held_by_operator(n) else n.status,
                    n.name in self.assessment.unhealthy,
                    None,
                )
                for n in self.recorded.nodes
            )
            return rotation_document(self.fleet, entries, now, None)
        entries = job.rotation(self.recorded, self.assessment.unhealthy)
        return rotation_document(self.fleet, entries, now, job.view.at)

    async def _update_alerts(self, now: datetime) -> None:
        reputation = self.reputation_job.view.conditions if self.reputation_job else ()
        await self.alerter.update(
            self._health_conditions
            + reputation
            + self._provisioning_conditions
            + self._slot_conditions,
            now,
        )

    async def _slot_alerts(self, plan: Plan) -> None:
        """The leader's plan raises a high alert per failed slot while it lasts (its bounded
        re-creates or its provisioning replacements used up: ``alerts.plan_conditions``)."""
        slots = plan_conditions(plan)
        self.metrics.failed_slots.set(len(slots))
        if slots != self._slot_conditions:
            self._slot_conditions = slots
            await self._update_alerts(self.clock.now())

    async def _job_reputation(self) -> None:
        job = self.reputation_job
        if job is None or self.stopping.is_set():
            return
        before = self.reputation_paused()
        try:
            view = await job.run(self.spec, self.recorded, self.clock.now(), epoch=self.guard.epoch)
        except (StoreError, LeadershipLostError) as exc:
            log.warning(
                f"reputation check failed: {exc.message}", extra={"event": "reputation.failed"}
            )
            return
        states: dict[str, int] = {state.value: 0 for state in IpState}
        for assessment in view.nodes.values():
            states[assessment.ip_state.value] += 1
        for state, count in states.items():
            self.metrics.ip_states.labels(state).set(count)
        self.metrics.out_of_rotation.set(sum(1 for a in view.nodes.values() if a.pause))
        for zone, count in view.queries.items():
            self.metrics.dnsbl_queries.labels(zone).inc(count)
        await self._update_alerts(self.clock.now())
        after = self.reputation_paused() or {}
        if set(after) != set(before or {}):
            self.request_reconcile("reputation changed who may send")

    # --- jobs ----------------------------------------------------------------------------

    async def _job_leadership(self) -> None:
        await self.guard.tick()

    async def _job_spec_watch(self) -> None:
        try:
            candidate = await off_loop(self.source.poll)
        except ReconcilerError as exc:
            self.metrics.spec_fetches.labels("failed").inc()
            log.warning(
                f"cannot read the spec source: {exc.message}",
                extra={"event": "spec.fetch_failed"},
            )
            return
        except Exception as exc:  # a bug while loading: the running spec stays in force
            log.exception(
                f"loading the spec failed ({type(exc).__name__}), keeping the running spec",
                extra={"event": "spec.load_crashed"},
            )
            self.source.mark_failed(
                "unknown", f"internal error while loading: {type(exc).__name__}", self.clock.now()
            )
            self._publish_revision()
            return
        if self.settings.git is not None:
            self.metrics.spec_fetches.labels("ok").inc()
        if candidate is None:
            return
        now = self.clock.now()
        if isinstance(candidate, Rejected):
            self.source.mark_failed(candidate.revision, candidate.error, now)
            self._publish_revision()
            log.error(
                f"spec revision {candidate.revision[:19]} refused, keeping the running spec: "
                f"{candidate.error}",
                extra={"event": "spec.invalid", "revision": candidate.revision},
            )
            return
        loaded = candidate.loaded
        if loaded.spec.name != self.fleet:
            message = (
                f"spec change refused: the fleet name changed ({self.fleet} -> "
                f"{loaded.spec.name}); restart the daemon for another fleet"
            )
            self.source.mark_failed(candidate.revision, message, now)
            self._publish_revision()
            log.error(message, extra={"event": "spec.invalid", "revision": candidate.revision})
            return
        if loaded.spec_hash == self.loaded.spec_hash:
            self.source.mark_applied(candidate.revision, now)
            self._publish_revision()
            return
        if loaded.spec.provider != self.spec.provider:
            log.warning(
                "provider settings changed: restart the daemon to apply them",
                extra={"event": "spec.provider_changed"},
            )
        previous = self._pending[1] if self._pending is not None else self.loaded
        self._use(loaded, previous)
        self._pending = (candidate.revision, previous)
        log.info(
            f"spec revision {candidate.revision[:19]} loaded ({loaded.spec_hash[:12]}); it is "
            "applied if its plan passes the guards",
            extra={
                "event": "spec.reloaded",
                "spec_hash": loaded.spec_hash,
                "revision": candidate.revision,
            },
        )
        self.request_reconcile("spec changed")

    def _use(self, loaded: LoadedSpec, previous: LoadedSpec) -> None:
        old = self.spec
        self.loaded = loaded
        # the intake's capacities follow the plans; a longer figure span needs older beats
        self._records_version = -1
        self._full_load_due = True
        self.alerter.configure(loaded.spec.alerts.webhook, loaded.spec.alerts.dedupe_window)
        self._reschedule(old, loaded.spec)

    def planned(self, plan: Plan) -> None:
        """The engine's plan (on the daemon's loop): kept for the status page, settles a spec
        revision on trial."""
        self.last_plan = plan
        # a spec revision on trial: a plan refused by a guard puts the previous spec back
        # (the engine then records the run as refused and applies nothing)
        self.settle_revision(plan)

    def settle_revision(self, plan: Plan) -> bool:
        """After planning with a spec revision on trial: a plan refused by a guard puts the
        previous spec back and records the revision as attempted with the refusal (False:
        do not apply); any other plan makes it the applied revision (True)."""
        if self._pending is None:
            return True
        revision, previous = self._pending
        self._pending = None
        now = self.clock.now()
        if plan.blocked:
            reasons = "; ".join(f"{w.guard}: {w.message}" for w in plan.warnings if w.blocking)
            self._use(previous, previous)
            self.source.mark_failed(revision, f"plan refused by a guard: {reasons}", now)
            self._publish_revision()
            log.error(
                f"spec revision {revision[:19]} refused by a guard, back to the previous spec: "
                f"{reasons}",
                extra={"event": "spec.refused", "revision": revision},
            )
            return False
        self.source.mark_applied(revision, now)
        self._publish_revision()
        log.info(
            f"spec revision {revision[:19]} applied",
            extra={"event": "spec.applied", "revision": revision},
        )
        return True

    def _publish_revision(self) -> None:
        status = self.source.status()
        self.metrics.spec_revision.clear()
        self.metrics.spec_revision.labels(status.kind, status.applied or "").set(1)
        refused = bool(status.attempted_error) and status.attempted != status.applied
        self.metrics.spec_refused.set(1 if refused else 0)

    @property
    def revision(self) -> str | None:
        """The spec revision running now (git commit, or files:<spec hash>)."""
        return self.source.revision

    def request_spec_poll(self, why: str) -> None:
        """Fetch the spec source now (a webhook from the git host)."""
        log.info(f"spec fetch requested: {why}", extra={"event": "spec.fetch_requested"})
        if self.scheduler is not None:
            job = self.scheduler.get_job("spec-watch")
            if job is not None:
                job.modify(next_run_time=datetime.now(UTC))

    def git_webhook(self, headers: Mapping[str, str], body: bytes) -> tuple[int, str]:
        """``POST /v1/git/webhook``: an authenticated push notification -> fetch now."""
        secret = self.settings.webhook_secret
        if self.settings.git is None or not secret:
            return (
                404,
                "no git webhook here (the daemon follows no repository, or "
                "RECONCILER_GIT_WEBHOOK_SECRET is not set)",
            )
        if not webhook_authentic(headers, body, secret):
            self.metrics.webhooks.labels("refused").inc()
            return 401, "bad or missing signature"
        self.metrics.webhooks.labels("accepted").inc()
        self.request_spec_poll("webhook from the git host")
        return 202, "fetch requested"

    async def _refresh(self, *, initial: bool = False) -> bool:
        """Bring the fleet in memory up to date with the store: a full load at the start, on
        leadership gained, after a store outage and every ``FULL_LOAD_EVERY``; otherwise the
        beats committed here plus a light poll of what changed elsewhere (fleetstate.py).
        False when the store failed."""
        async with self._refreshing:
            spec = self.spec
            now = self.clock.now()
            since = now - self._metrics_span(spec)
            state = self.state
            try:
                loaded_at = state.loaded_at
                if self._full_load_due or loaded_at is None or now - loaded_at >= FULL_LOAD_EVERY:
                    epoch = self.guard.epoch
                    full = await asyncio.to_thread(read_full, self.store, self.fleet, since)
                    state.apply_full(full, now)
                    self._full_load_due = False
                    self._loaded_epoch = epoch
                else:
                    state.drain()  # first: what this process recorded counts as seen
                    delta, costs = await asyncio.to_thread(
                        read_marks, self.store, self.fleet, state.marks_cursor
                    )
                    marks, records, series, closed, moved = state.changed(delta)
                    nodes, beats = (
                        await asyncio.to_thread(
                            read_changed,
                            self.store,
                            self.fleet,
                            since,
                            records,
                            state.read_from(series, records),
                        )
                        if records or series
                        else ([], {})
                    )
                    state.apply_changes(Changes(marks, costs, nodes, beats, series, moved), closed)
            except StoreError as exc:
                self._store_ok = False
                self._store_out = True
                self._unobserved(now, "store", ended=False)  # blind while the store is out
                self._full_load_due = True  # what changed meanwhile: read it all again
                log.warning(
                    f"store unavailable: {exc.message}", extra={"event": "store.unavailable"}
                )
                if initial:
                    raise
                return False
            self._store_ok = True
            if self._store_out:
                # observing again from now on (not from the last failed read)
                self._store_out = False
                self._unobserved(self.clock.now(), "store")
            state.trim(since)
            recorded = state.recorded
            constants_changed = not initial and _constants_key(recorded) != _constants_key(
                self.recorded
            )
            self.recorded = recorded
            if state.beats_version != self._recent_version:
                self.recent = state.recent()
                self._recent_version = state.beats_version
            if constants_changed and self.guard.epoch is not None and not self.settings.dry_run:
                # finance changed a cost constant: the recorded costs follow now, not tomorrow
                self._costs_due = True
                self.request_reconcile("cost constants changed")
            if state.records_version != self._records_version:
                self._records_version = state.records_version
                self._index_nodes(spec, recorded)
            return True

    def _index_nodes(self, spec: FleetSpec, recorded: RecordedFleet) -> None:
        """The intake's lookups (known nodes, capacity), changed in place without a moment
        when they are empty: the intake reads them on another thread."""
        known = {n.name for n in recorded.nodes if n.status is not NodeStatus.DECOMMISSIONED}
        self._known |= known
        self._known -= self._known - known
        capacity = {
            n.name: float(spec.node_capacity_per_minute(n.plan))
            for n in recorded.nodes
            if n.plan in spec.plans
        }
        self._capacity.update(capacity)
        for name in [name for name in self._capacity if name not in capacity]:
            self._capacity.pop(name, None)
        self.figures.forget_except(known)
        self.liveness.forget_except(known)

    def _metrics_span(self, spec: FleetSpec) -> timedelta:
        span = figures_horizon(spec) + spec.health.heartbeat_interval
        if spec.scaling.vertical.enabled:
            span = max(span, spec.scaling.vertical.window + 2 * spec.health.heartbeat_interval)
        return span

    async def _job_sweep(self) -> None:
        if not await self._refresh():
            # the sweep ran (no stall of its own): the gap is the store's, until it is back
            self._last_sweep = self.clock.now()
            return
        spec = self.spec
        now = self.clock.now()
        nodes = [n for n in self.recorded.nodes if n.status is not NodeStatus.DECOMMISSIONED]
        held = frozenset(n.name for n in nodes if held_by_operator(n))
        if held != self._held:
            # `reconcile node cordon|drain|uncordon` wrote the store: act on it now
            if self._held is not None:
                self.request_reconcile("an operator's hold changed")
            self._held = held
        recorded_unhealthy = frozenset(n.name for n in nodes if n.status is NodeStatus.UNHEALTHY)
        raw = self.liveness.assess(nodes, now, spec.health)
        # paused: recorded so, or decided by an earlier sweep (the reconcile applies it)
        paused_before = recorded_unhealthy | self.assessment.unhealthy
        guarded = guard_assessment(
            raw,
            nodes,
            now,
            spec.health,
            observing_since=self._observing_since(now),
            paused=paused_before,
            # in a disruption, one more pause per detection window at most
            pause_step=1
            if self._disruption_pause is None
            or now - self._disruption_pause >= detection_window(spec.health)
            else 0,
        )
        if guarded.disruptions and guarded.assessment.unhealthy - paused_before:
            self._disruption_pause = now
        assessment = guarded.assessment
        self.assessment = assessment
        self._report_guarded(guarded)
        for live in assessment.details:
            if live.unhealthy:
                log.debug(live.reason, extra={"event": "health.unhealthy", "node": live.node})
        conditions = alert_conditions(nodes, raw, self.recent, spec.health, spec.reputation)
        if self.reputation_job is not None:
            # bounces are judged by the reputation job (windows, minimum volume)
            conditions = tuple(c for c in conditions if not c.key.startswith("bounce:"))
        # a node held back (observation gap, disruption) raises no alert of its own: a zone
        # disruption raises one high alert for its scope instead
        conditions = tuple(
            c for c in conditions if not (c.key.startswith("down:") and c.node in guarded.held)
        ) + tuple(
            AlertCondition(f"disruption:{d.scope}", Severity.HIGH, None, d.message)
            for d in guarded.disruptions
        )
        self._health_conditions = tuple(conditions)
        await self._update_alerts(now)
        self._update_view(now)
        release_memory()
        key = (assessment.unhealthy, assessment.replace, recorded_unhealthy)
        if key != self._health_key:
            changed = self._health_key is not None
            self._health_key = key
            newly = assessment.unhealthy - recorded_unhealthy
            back = recorded_unhealthy - assessment.unhealthy
            for name in sorted(newly):
                log.warning(
                    f"{name}: unhealthy ({spec.health.missed_beats} heartbeats missed), out of "
                    "rotation",
                    extra={"event": "health.decision", "node": name, "decision": "pause"},
                )
            for name in sorted(back):
                log.info(
                    f"{name}: heartbeats back, returns to rotation",
                    extra={"event": "health.decision", "node": name, "decision": "resume"},
                )
            for name in sorted(assessment.replace):
                log.warning(
                    f"{name}: unhealthy for {spec.health.replace_after}, to be replaced",
                    extra={"event": "health.decision", "node": name, "decision": "replace"},
                )
            if changed or newly or back or assessment.replace:
                self.request_reconcile("node health changed")

    def _observing_since(self, now: datetime) -> datetime:
        """Since when this daemon has observed without a gap: its start, the end of a store
        outage, of a heartbeat intake that could not write or did not run (its loop stopped
        ticking), or of a stall of the sweep itself (the process or its loop was frozen):
        health decisions wait a full detection window."""
        # heartbeat writes failing for longer than a beat interval: the intake is stopped (a
        # single failed batch, e.g. SQLite busy for a moment, is not a gap; a frozen database
        # shows as a stalled sweep below). Observing again from its first successful write,
        # even when the whole failure fell between two sweeps.
        interval = self.spec.health.heartbeat_interval.total_seconds()
        monotonic = self._monotonic()
        failing = self.batcher.failing_since
        if failing is not None and monotonic - failing > interval:
            self._unobserved(now, "intake", ended=False)
        ended = self.batcher.last_failure
        if ended is not None and ended != self._intake_failure_seen:
            # once per failure: ``now`` and the monotonic clock are read at different moments
            self._intake_failure_seen = ended
            if ended[1] - ended[0] > interval:
                back = now - timedelta(seconds=max(0.0, monotonic - ended[1]))
                self._unobserved(back, "intake")
        # the intake's loop did not tick for a few seconds (frozen, its task or thread dead):
        # no beat could be received, though no write failed. Observing again from its first
        # tick, for a stall a sweep saw or one longer than a beat interval (as a failure).
        # The ended stall is read before the tick: a stall ending between the two reads is
        # seen next sweep, not taken as still going on with its end lost.
        stopped = self.batcher.last_stall
        stalled = self.batcher.stalled()
        if stalled:
            self._unobserved(now, "intake", ended=False)
        if stopped is not None and stopped != self._intake_stall_seen:
            self._intake_stall_seen = stopped
            if self._intake_stalled or stopped[1] - stopped[0] > interval:
                back = now - timedelta(seconds=max(0.0, monotonic - stopped[1]))
                self._unobserved(back, "intake")
        self._intake_stalled = stalled
        last = self._last_sweep
        stall = timedelta(seconds=3 * self._sweep_seconds(self.spec) + 5)
        if last is not None and now - last > stall:
            self._unobserved(now, "stall")
        self._last_sweep = now
        return self._observed_since

    def _unobserved(self, until: datetime, cause: str, *, ended: bool = True) -> None:
        """The daemon could not observe until ``until`` (``cause``: one of GAP_CAUSES);
        ``ended``: it observes again from then (else: the cause still goes on)."""
        if until >= self._observed_since:
            self._observed_since = until
            self._gap_cause = cause
            self._gap_ended = ended

    def _report_guarded(self, guarded: GuardedHealth) -> None:
        """One log line when health decisions start/stop waiting or a disruption starts/ends."""
        blind = guarded.blind_until
        cause, since, ended = self._gap_cause, self._observed_since, self._gap_ended
        logged = self._gap_logged
        if blind is not None and (
            self._blind_until is None
            or logged is None
            or cause != logged[0]
            or (ended and since != logged[1])
        ):
            # a gap begins, another cause extends it, or its cause ended (the window's end is
            # known now): a line each, never one per sweep however long the cause goes on
            when = blind.isoformat(timespec="seconds")
            log.warning(
                "health decisions wait for a full detection window of fresh heartbeats "
                + (f"(until {when})" if ended else f"once observing again (at least until {when})")
                + f": {GAP_CAUSES[cause]}",
                extra={
                    "event": "health.observation_gap",
                    "cause": cause,
                    "ongoing": not ended,
                    "since": since.isoformat(),
                    "until": blind.isoformat(),
                },
            )
            self._gap_logged = (cause, since)
        elif blind is None and self._blind_until is not None:
            log.info(
                "health decisions resume: a full detection window observed",
                extra={"event": "health.observing"},
            )
        self._blind_until = blind
        scopes = {d.scope: d for d in guarded.disruptions}
        for scope in sorted(set(scopes) - self._disrupted):
            log.error(
                scopes[scope].message,
                extra={"event": "health.disruption", "scope": scope, "state": "started"},
            )
        for scope in sorted(self._disrupted - set(scopes)):
            log.info(
                f"disruption of {scope} over: normal health rules again",
                extra={"event": "health.disruption", "scope": scope, "state": "ended"},
            )
        self._disrupted = set(scopes)
        self.metrics.health_held.set(len(guarded.held))
        self.metrics.disruptions.clear()
        for scope in scopes:
            self.metrics.disruptions.labels(scope).set(1)

    def _update_view(self, now: datetime) -> None:
        """The gauges of the fleet view. No row is built: /v1/fleet builds them on request
        from the same inputs; each node's figures come from the cache (computed again only
        when its record, its beats, its warmup day or its health changed)."""
        assessment = self.assessment
        down = frozenset(live.node for live in assessment.details if live.unhealthy)
        key = (self.spec, self.recorded, self._recent_version, assessment.unhealthy, down)
        memo = self._summary_memo
        if memo is not None and _same_inputs(memo[0], key) and _still(memo[1].until, now):
            summary = memo[1]  # nothing it depends on changed: a sweep at rest
        else:
            summary = summarise(
                self.spec, self.recorded, self.recent, now, assessment, self.figures
            )
            self._summary_memo = (key, summary)
        self._view_at = now
        self._view_json = None
        m = self.metrics
        m.fleet_nodes.clear()
        for (region, status), count in summary.statuses.items():
            m.fleet_nodes.labels(region, status).set(count)
        m.node_health.clear()
        for (region, grade), count in summary.grades.items():
            m.node_health.labels(region, grade).set(count)
        m.unhealthy_nodes.clear()
        for region, count in summary.unhealthy.items():
            m.unhealthy_nodes.labels(region).set(count)
        m.utilization.clear()
        m.capacity.clear()
        m.throughput.clear()
        for (region, pool), load in summary.groups.items():
            m.capacity.labels(region, pool).set(load.capacity + load.missing_capacity)
            m.throughput.labels(region, pool).set(load.throughput)
            if load.ratio is not None:
                m.utilization.labels(region, pool).set(load.ratio)
        m.monthly_cost.set(float(summary.monthly_cost))

    def _node_loads(
        self,
        spec: FleetSpec,
        nodes: Sequence[RecordedNode],
        now: datetime,
        unhealthy: frozenset[str],
    ) -> list[NodeLoad]:
        """The autoscaler's inputs, the same list again while nothing they depend on changed
        (each node's figures come from the cache otherwise)."""
        key = (spec, self.recorded, self._recent_version, unhealthy)
        memo = self._loads_memo
        if memo is not None and _same_inputs(memo[0], key) and _still(memo[1], now):
            return memo[2]
        loads = node_loads(spec, nodes, self.recent, now, unhealthy, self.figures)
        until: datetime | None = None
        for node in nodes:
            ends = self.figures.until(node.name)
            if ends is not None and (until is None or ends < until):
                until = ends
        self._loads_memo = (key, until, loads)
        return loads

    async def _job_autoscale(self) -> None:
        spec = self.spec
        if not spec.scaling.enabled:
            self.desired_counts = {}
            self.decisions = ()
            return
        if not await self._refresh():
            return
        now = self.clock.now()
        nodes = [n for n in self.recorded.nodes if n.status is not NodeStatus.DECOMMISSIONED]
        health = self.liveness.assess(nodes, now, spec.health)
        loads = self._node_loads(spec, nodes, now, health.unhealthy)
        bounds = region_bounds(spec)
        counted: dict[str, int] = {}
        for node in nodes:
            if node.status in COUNTED:
                counted[node.region] = counted.get(node.region, 0) + 1
        current: dict[str, int] = {}
        for region, bound in bounds.items():
            base = self.desired_counts.get(region, counted.get(region, 0))
            current[region] = min(max(base, bound.minimum), bound.maximum)
        costs = CostResolver(spec, self.recorded.cost_overrides)
        monthly = sum(
            (costs.node(n.plan, n.pool)[0] for n in nodes if n.status in COUNTED), Decimal(0)
        )
        # a region seen for the first time (start, failover, spec change) remembers its
        # current count as a recommendation: no scale-down before a full window has passed
        history = dict(self.scaler_state.recommendations)
        for region, count in current.items():
            if not history.get(region):
                history[region] = (Recommendation(now, count),)
        result = evaluate(
            loads,
            current,
            bounds,
            spec.scaling,
            ScalerState(recommendations=history),
            now,
            monthly_budget=spec.costs.monthly_budget,
            monthly_cost=monthly,
        )
        self.scaler_state = result.state
        self.decisions = result.decisions
        changed = False
        for decision in result.decisions:
            self.metrics.desired_nodes.labels(decision.region).set(decision.desired)
            previous = self.desired_counts.get(decision.region)
            if decision.changed or previous is None or previous != decision.desired:
                level = logging.INFO
            else:
                level = logging.DEBUG
            log.log(
                level,
                decision.reason,
                extra={
                    "event": "scaling.decision",
                    "region": decision.region,
                    "current": decision.current,
                    "desired": decision.desired,
                    "utilization": (
                        None if decision.utilization is None else round(decision.utilization, 4)
                    ),
                    "target": decision.target,
                    "throughput_per_day": round(decision.throughput, 1),
                    "capacity_per_day": decision.capacity,
                },
            )
            if decision.changed:
                direction = "up" if decision.desired > decision.current else "down"
                self.metrics.scaling_decisions.labels(decision.region, direction).inc()
            if previous != decision.desired:
                changed = True
            self.desired_counts[decision.region] = decision.desired
        for region in list(self.desired_counts):
            if region not in bounds:
                del self.desired_counts[region]
        # vertical: keep nodes already moved up; add those whose queue stayed high
        plans: dict[str, str] = {}
        for node in nodes:
            region_spec = spec.regions.get(node.region)
            if region_spec is not None and node.plan in region_spec.vertical_plans:
                plans[node.name] = node.plan
        vertical: tuple[VerticalDecision, ...] = ()
        if spec.scaling.vertical.enabled:
            # only nodes in rotation in a region with a plan ladder can move up
            ladders = {name for name, region in spec.regions.items() if region.vertical_plans}
            rotation = [
                (n.name, n.region, n.plan)
                for n in nodes
                if n.status.in_rotation and n.region in ladders
            ]
            queues = {
                name: [QueueSample(b.at, b.queue_length) for b in self.recent.get(name, ())]
                for name, _, _ in rotation
            }
            vertical = vertical_decisions(spec, rotation, queues, now)
        for move in vertical:
            if self.node_plans.get(move.node) != move.to_plan:
                log.info(
                    move.reason,
                    extra={"event": "scaling.vertical", "node": move.node, "to_plan": move.to_plan},
                )
                changed = True
            plans[move.node] = move.to_plan
        self.node_plans = plans
        self.vertical_notes = tuple(d.reason for d in vertical)
        for (region, pool), load in utilization_by(loads, spec.scaling.per_core_rate).items():
            if load.ratio is not None:
                self.metrics.utilization.labels(region, pool).set(load.ratio)
        if changed:
            self.request_reconcile("autoscaler changed a desired count")

    def current_counts(self) -> dict[str, int]:
        """The count of every autoscaled region: the autoscaler's, else (before its first
        evaluation) the nodes counted now, within min/max, so that a restart or a failover
        never shrinks a region to its minimum."""
        counted: dict[str, int] = {}
        for node in self.recorded.nodes:
            if node.status in COUNTED:
                counted[node.region] = counted.get(node.region, 0) + 1
        result: dict[str, int] = {}
        for region, bound in region_bounds(self.spec).items():
            count = self.desired_counts.get(region, counted.get(region, 0))
            result[region] = min(max(count, bound.minimum), bound.maximum)
        return result

    def plan_options(self) -> PlanOptions:
        spec = self.spec
        latest_queue = {
            name: max(beats, key=lambda b: b.at).queue_length
            for name, beats in self.recent.items()
            if beats
        }
        scaling_reasons = {d.region: d.reason for d in self.decisions if d.changed}
        notes = tuple(d.reason for d in self.decisions) + self.vertical_notes
        revision = self._pending[0] if self._pending is not None else self.revision
        if revision:
            notes += (f"spec revision {revision[:19]} ({self.source.status().kind})",)
        return PlanOptions(
            spec_hash=self.loaded.spec_hash,
            allow_mass_destroy=self.settings.allow_mass_destroy,
            desired_counts=self.current_counts() if spec.scaling.enabled else None,
            unhealthy=self.assessment.unhealthy,
            replace_unhealthy=self.assessment.replace,
            queue_empty=frozenset(n for n, q in latest_queue.items() if q == 0),
            metrics_known=bool(self.recent),
            scaling_reasons=scaling_reasons or None,
            node_plans=dict(self.node_plans) or None,
            notes=notes,
            reputation_paused=self.reputation_paused(),
            # the daemon receives heartbeats: a new node's first beat is part of verifying it
            require_heartbeat=self.provisioning is not None and self.provisioning.require_heartbeat,
        )

    def reputation_paused(self) -> dict[str, str] | None:
        """Nodes the last reputation assessment takes out of rotation, with why (None before
        the first assessment: the planner then decides nothing about reputation)."""
        job = self.reputation_job
        if job is None or job.view.at is None:
            return None
        return {
            name: "; ".join(a.pause_reasons)
            for name, a in sorted(job.view.nodes.items())
            if a.pause
        }

    async def _job_reconcile(self) -> None:
        if self.stopping.is_set():
            return
        if self._reconcile_task is not None and not self._reconcile_task.done():
            self._rerun = True
            return
        self._reconcile_task = asyncio.get_running_loop().create_task(
            self._reconcile_loop(), name="reconcile"
        )
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._reconcile_task)

    async def _reconcile_loop(self) -> None:
        for _ in range(5):  # bounded: requests arriving during a run get one more run each
            self._rerun = False
            await self.reconcile_now()
            if self._costs_due and not self.stopping.is_set():
                await self.refresh_costs()
            if not self._rerun or self.stopping.is_set():
                return

    async def reconcile_now(self) -> Plan | None:
        """One run as the leader (the engine's lifecycle, with the epoch on every write and a
        live leadership check before every mutation), on the engine's thread and loop.
        Returns the plan (None: not leader)."""
        epoch = self.guard.epoch
        if epoch is None:
            if self._provisioning_conditions or self._slot_conditions:
                # only the leader judges the breakers and the slots (the new leader raises
                # them again)
                self._provisioning_conditions = ()
                self._slot_conditions = ()
                self.metrics.failed_slots.set(0)
                await self._update_alerts(self.clock.now())
            return None
        started = time.monotonic()
        reconciler = Reconciler(
            self.loaded,
            self.cloud,
            self.store,
            self.clock,
            poll_interval=self.settings.poll_interval,
            provisioning=self.provisioning,
            prices=self.prices,
            recorded_fleet=self._recorded_fleet_reader(epoch),
        )
        dry_run = self.settings.dry_run
        options = self.plan_options()
        failures: dict[str, int] | None = None
        # the recorded costs follow the spec's prices and the cost constants only
        costs_key = (self.loaded.spec_hash, _constants_key(self.recorded))
        request = RunRequest(
            mode="dry-run" if dry_run else "daemon",
            dry_run=dry_run,
            options=options,
            epoch=epoch,
            actor=f"daemon {self.settings.holder}",
            # a revision on trial is what this run plans
            revision=self._pending[0] if self._pending is not None else self.revision,
            costs_current=costs_key == self._costs_current_for,
        )
        outcome = "ok"
        result: RunResult | None = None
        hooks = _DaemonHooks(self, asyncio.get_running_loop())
        try:
            failures, run = await self._on_engine(_run_engine(reconciler, request, hooks))
            result = run
            outcome = self._translate(run)
            if (
                not dry_run
                and run.error is None
                and run.report is not None
                and run.costs_error is None
            ):
                # the run refreshed the recorded costs (or knew them current): a later run
                # with nothing to apply need not read the whole fleet again for them
                self._costs_current_for = costs_key
            if run.plan is not None:
                await self._slot_alerts(run.plan)
        except asyncio.CancelledError:
            outcome = "abandoned"
            raise
        except Exception:
            outcome = "failed"
            self.metrics.reconcile_errors.labels("bug").inc()
            log.exception("reconcile failed unexpectedly", extra={"event": "reconcile.bug"})
        finally:
            self.reconcile_count += 1
            self.last_reconcile = (self.clock.now(), outcome)
            release_memory()
            self.metrics.reconciles.labels(outcome).inc()
            self.metrics.reconcile_duration.observe(time.monotonic() - started)
        if failures is not None or self.spec.provisioning is None:
            breakers = breaker_conditions(self.spec, failures)
            if breakers != self._provisioning_conditions:
                self._provisioning_conditions = breakers
                await self._update_alerts(self.clock.now())
        return result.plan if result is not None else self.last_plan

    def _recorded_fleet_reader(self, epoch: int) -> Callable[[], Awaitable[RecordedFleet]]:
        """What a reconcile (on the engine's loop) reads the recorded fleet with, after its
        listing: ``_recorded_for_run`` on the daemon's loop, which owns the fleet in memory."""
        home = asyncio.get_running_loop()

        async def recorded_fleet() -> RecordedFleet:
            if asyncio.get_running_loop() is home:
                return await self._recorded_for_run(epoch)
            try:
                future = asyncio.run_coroutine_threadsafe(self._recorded_for_run(epoch), home)
            except RuntimeError:  # the daemon's loop has closed: the store itself
                return await asyncio.to_thread(self.store.load_fleet, self.fleet)
            return await asyncio.wrap_future(future)

        return recorded_fleet

    async def _recorded_for_run(self, epoch: int) -> RecordedFleet:
        """The recorded fleet a reconcile plans from: the fleet in memory brought up to date
        with the store now (the poll of what changed since the last sweep, from any writer),
        with the pending intents read afresh (a handful of rows). A full load first when the
        fleet in memory was not loaded under this epoch (a standby that became leader, a
        lease lost and regained): a new leader trusts no state kept before it led. A store
        failure is the store's error, as ``load_fleet`` would raise it."""
        if self._loaded_epoch != epoch:
            self._full_load_due = True
        if not await self._refresh():
            return await asyncio.to_thread(self.store.load_fleet, self.fleet)
        intents = await asyncio.to_thread(self.store.pending_intents, self.fleet)
        return dataclasses.replace(self.state.recorded, pending_intents=intents)

    async def _on_engine(self, run: Coroutine[Any, Any, _T]) -> _T:
        """``run`` on the engine's thread and loop (never this loop: its store calls and its
        planning would stop the lease renewal, the sweeps and the stop's grace)."""
        if self.engine is not None:
            return await self.engine.call(run)
        engine = EngineLoop().start()  # outside ``run``: a thread and a loop for this call
        try:
            return await engine.call(run)
        finally:
            await engine.close(1.0)

    def _translate(self, result: RunResult) -> str:
        """A run's result as log lines and metrics; returns the outcome label."""
        error = result.error
        if isinstance(error, LeadershipLostError):
            self.metrics.reconcile_errors.labels("leadership_lost").inc()
            log.error(f"reconcile stopped: {error.message}", extra={"event": "reconcile.stopped"})
            return "leadership_lost"
        if isinstance(error, GuardRefusedError) or result.refused_by:
            log.error(
                "plan refused by a guard: nothing applied (see the warnings above)",
                extra={"event": "reconcile.refused"},
            )
            return "refused"
        if isinstance(error, ProviderError | StoreError):
            self.metrics.reconcile_errors.labels(type(error).__name__).inc()
            log.warning(
                f"reconcile failed ({type(error).__name__}): {error.message}; retried next "
                "interval",
                extra={"event": "reconcile.failed"},
            )
            return "failed"
        if isinstance(error, ReconcilerError | SpecError):
            self.metrics.reconcile_errors.labels(type(error).__name__).inc()
            log.error(f"reconcile failed: {error.message}", extra={"event": "reconcile.failed"})
            return "failed"
        plan = result.plan
        if plan is None or plan.is_empty:
            # one line per no-op reconcile (what an operator tailing the log expects to see)
            revision = self.revision or ""
            log.info(
                f"no changes: fleet {self.fleet} matches the spec"
                + (f" (revision {revision[:19]})" if revision else ""),
                extra={"event": "reconcile.noop", "revision": revision},
            )
            return "ok"
        if self.settings.dry_run:
            return "dry-run"
        report = result.report
        assert report is not None
        log.info(
            f"reconcile {report.outcome}: {len(report.done)} done, {len(report.failed)} "
            f"failed, {len(report.waiting)} waiting",
            extra={"event": "reconcile.done", "outcome": report.outcome},
        )
        return report.outcome

    async def _job_costs(self) -> None:
        """Daily: prune heartbeat figures older than a day, and (as the leader, right after
        the next reconcile, never beside one) refresh the recorded monthly costs."""
        now = self.clock.now()
        with contextlib.suppress(StoreError):
            await asyncio.to_thread(self.store.prune_metrics, now - timedelta(days=1))
        self._costs_due = True
        self.request_reconcile("daily cost refresh")

    async def refresh_costs(self) -> None:
        """Bring each node's recorded monthly cost in line with the cost constants."""
        epoch = self.guard.epoch
        if epoch is None or self.settings.dry_run:
            return
        self._costs_due = False
        try:
            changed = await asyncio.to_thread(
                refresh_recorded_costs,
                self.spec,
                self.store,
                epoch=epoch,
                before_mutation=self.guard.before_mutation,
            )
        except (LeadershipLostError, StoreError) as exc:
            log.warning(f"cost refresh not written: {exc.message}", extra={"event": "costs.failed"})
            return
        if changed:
            log.info(
                f"recorded monthly cost refreshed for {len(changed)} node(s)",
                extra={"event": "costs.refreshed", "nodes": len(changed)},
            )


async def _run_engine(
    reconciler: Reconciler, request: RunRequest, hooks: _DaemonHooks
) -> tuple[dict[str, int] | None, RunResult]:
    """One run, on the engine's loop: the provisioning failures (read once: the plan pauses
    creation by them, the leader's alerts say so), then the engine's run."""
    failures: dict[str, int] | None = None
    if reconciler.spec.provisioning is not None and request.options is not None:
        try:
            failures = reconciler.provisioning_failures()
        except StoreError:
            failures = None  # the run itself reports the store; no alert change
        else:
            options = dataclasses.replace(request.options, provisioning_failures=failures)
            request = dataclasses.replace(request, options=options)
    return failures, await reconciler.reconcile(request, hooks)


async def _bounded_close(close: Callable[[], None], what: str, wait: float = 3.0) -> None:
    """Close in a daemon thread, waiting at most ``wait`` s (a frozen database must not hold
    the exit: a close stuck on it is left behind, its connections abandoned)."""
    failure = await call_within(close, name=f"close {what}", wait=wait)
    if isinstance(failure, LeftBehindError):
        log.warning(
            f"closing {what} did not finish within {wait:g}s (the database does not answer): "
            "its connections are abandoned",
            extra={"event": "daemon.close_timeout"},
        )
        return
    if failure is None:
        return
    if not isinstance(failure, ReconcilerError):
        raise failure
    log.warning(f"closing {what} failed: {failure.message}", extra={"event": "daemon.close_failed"})


def _same_inputs(old: tuple[Any, ...], new: tuple[Any, ...]) -> bool:
    """Memo keys: the spec and the recorded fleet by identity (replaced when they change),
    the rest by value."""
    return old[0] is new[0] and old[1] is new[1] and old[2:] == new[2:]


def _still(until: datetime | None, now: datetime) -> bool:
    return until is None or now < until


def _constants_key(recorded: RecordedFleet) -> tuple[tuple[str, str, str, str], ...]:
    return tuple(
        sorted(
            (c.key, c.scope, str(c.value), c.set_at.isoformat()) for c in recorded.cost_overrides
        )
    )


def start_stand_in_agent(node: str, url: str, token: str) -> Callable[[], Awaitable[None]]:
    """A simulated node's agent, as systemd would start it on a real node: the real
    ``Agent`` (signed heartbeats to ``url``) with quiet figures, in this process."""
    agent = Agent(node, url, token, QuietFigures(), interval=30.0)
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(agent.run(stop))

    async def stopper() -> None:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)

    return stopper


class QuietFigures:
    """An idle node's figures (the stand-in sends nothing)."""

    def read(self) -> Figures:
        return Figures(
            cpu=0.02, memory=0.2, disk=0.1, queue_length=0, sent=0, bounces=0, complaints=0
        )


def _with_agent_url(environ: Mapping[str, str], settings: DaemonSettings) -> Mapping[str, str]:
    """Nodes post heartbeats to this daemon: its own URL unless the operator names another
    (``RECONCILER_AGENT_URL``, e.g. a public name in front of it)."""
    if (environ.get(AGENT_URL_ENV) or "").strip() or settings.listen is None:
        return environ
    host, port = settings.listen
    return {**environ, AGENT_URL_ENV: f"http://{host}:{port}"}


def daemon_blocklist_checker(
    spec: FleetSpec, environ: Mapping[str, str]
) -> BlocklistChecker | None:
    """The daemon's DNSBL checker: only through a resolver the operator or the spec names
    (``RECONCILER_DNSBL_RESOLVER``, ``reputation.resolver``), never the machine's
    /etc/resolv.conf (None: blocklists unchecked, one low alert says so; docs/reputation.md).
    """
    return build_blocklist_checker(spec.reputation, environ, system_fallback=False)


async def serve_daemon(settings: DaemonSettings, environ: Mapping[str, str]) -> int:
    """The composition root of ``reconcile daemon``: spec, store, leadership, cloud."""
    # a stop signal while starting is logged and ends the process; Daemon.run installs its
    # own handlers over these (no moment without a handler)
    restore_signals = exit_on_stop_while_starting()
    running: list[Daemon] = []
    try:
        return await _serve_daemon(settings, environ, running)
    finally:
        if not running:
            restore_signals()


async def _serve_daemon(
    settings: DaemonSettings, environ: Mapping[str, str], running: list[Daemon]
) -> int:
    source: SpecSource | None = None
    if settings.git is not None:
        source = git_source(settings.git, default_state_dir(environ), environ)
        loaded = await off_loop(source.initial)
        if settings.webhook_secret is None:
            secret = (environ.get(WEBHOOK_SECRET_ENV) or "").strip() or None
            settings = dataclasses.replace(settings, webhook_secret=secret)
    else:
        paths = list(settings.paths)
        loaded = await off_loop(lambda: load_spec(paths))
    for warning in loaded.warnings:
        log.warning(f"spec: {warning.render()}", extra={"event": "spec.warning"})
    master = MasterSecret.from_env(environ)
    store = await asyncio.to_thread(build_store, environ)
    stopped: StopSignals | None = None
    try:
        leadership = leadership_for(None, loaded.spec.name, settings.holder, environ=environ)
        try:
            state_dir = default_state_dir(environ)
            # the cloud client, the embedded simulator and the provisioning adapters live on
            # the reconcile's loop (an httpx client's connections belong to one loop)
            engine = EngineLoop().start()
            try:
                cloud = await engine.enter(
                    build_cloud(loaded, environ=environ, state_dir=state_dir)
                )
                provisioning = await engine.enter(
                    build_provisioning(
                        loaded,
                        cloud,
                        environ=_with_agent_url(environ, settings),
                        state_dir=state_dir,
                        agent_starter=start_stand_in_agent,
                    )
                )
                if settings.poll_interval <= 0:
                    settings = dataclasses.replace(
                        settings, poll_interval=poll_interval_for(loaded.spec)
                    )
                if provisioning is not None and provisioning.agent_url:
                    provisioning = dataclasses.replace(provisioning, require_heartbeat=True)
                if settings.status_tokens == StatusTokens():
                    settings = dataclasses.replace(
                        settings, status_tokens=StatusTokens.from_env(environ)
                    )
                daemon = Daemon(
                    settings,
                    loaded,
                    store,
                    cloud,
                    leadership,
                    master,
                    reputation=reputation_store_for(store),
                    checker_factory=lambda spec: daemon_blocklist_checker(spec, environ),
                    provisioning=provisioning,
                    source=source,
                    engine=engine,
                )
                daemon.exit_process = True
                running.append(daemon)
                try:
                    return await daemon.run()
                finally:
                    stopped = daemon.stop_signals
            finally:
                await engine.close(ENGINE_STUCK_WAIT if _left_behind(running) else 3.0)
        finally:
            await _bounded_close(
                leadership.close, "the leadership connection", _close_wait(running)
            )
    finally:
        await _bounded_close(store.close, "the store", _close_wait(running))
        if stopped is not None:
            # the interpreter exits now, or within a bound (code 1 when an error ends the run);
            # at once when the stop left calls to an unanswering database behind
            stopped.stopped(failed=sys.exc_info()[0] is not None, left_behind=_left_behind(running))


def _left_behind(running: list[Daemon]) -> list[str]:
    return running[0].left_behind if running else []


def _close_wait(running: list[Daemon]) -> float:
    """How long a close may wait: short once the stop found the database not answering."""
    return CLOSE_STUCK_WAIT if _left_behind(running) else 3.0
