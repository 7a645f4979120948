"""A stateful property test of the whole loop (planner + engine) against FakeCloud.

Random spec edits (region counts, plans, an IP pool's size), applies, crashes mid-apply (at a
random mutating step), servers deleted, created, stopped or suspended behind our back, unmanaged
servers, failed builds and API faults. Invariants, after every step:

- never two servers with one name, and no server created twice for one slot: never a create of
  a name while a server of that name exists, and at most 1 + ``create_retries`` creates of a
  name until a server of that name goes away;
- never a change to an unmanaged server (it still exists, same name, plan and status, no rDNS);
- every recorded node names a server of ours;
- a pool is never over-filled: no run raises a pool's occupancy (servers of ours recorded in it
  plus the pending creates meant for it) above the spec's size;
- a stopped server (SHUTOFF, suspended, locked) is never left in rotation by a run;
and at the end: a few quiet runs converge to an empty plan with the store and the cloud in step.
The fenced machine adds: a writer that lost leadership (after any number of wire checks, or
while calls wait for a rate-limit token) makes no cloud mutation afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from reconciler.cli.nodes import _retry_failed_slot
from reconciler.core.addresses import owned_by_fleet, parse_node_name
from reconciler.core.errors import (
    GuardRefusedError,
    LeadershipLostError,
    TerminalError,
    TransientError,
)
from reconciler.core.fleet import ObservedServer, ServerStatus
from reconciler.core.planning import PlanOptions, stopped
from reconciler.core.plans import Plan, Resolution
from reconciler.engine.applying import OutcomeStatus
from reconciler.engine.fences import WriterFence
from reconciler.engine.reconciling import ALL_GUARDS, RunHooks, RunRequest
from specs.model import FleetSpec
from tests.engine.conftest import LOCATIONS, Crash, World, crash_at, make_spec
from tests.fakes.cloud import FakeCloud

REGIONS = ("dallas", "seattle", "amsterdam")
ALLOW = PlanOptions(allow_mass_destroy=True)
FAULTS = (
    ("add_instance", TransientError("read timeout")),
    ("add_instance", TerminalError("Location Id is invalid.")),
    ("set_rdns", TransientError("connection reset")),
    ("terminate", TransientError("read timeout")),
    ("upgrade_server", TransientError("read timeout")),
    ("confirm_upgrade", TerminalError("The server is locked.")),
    ("get_instance", TransientError("HTTP 502")),
    ("get_instances", TransientError("HTTP 502")),
    ("get_instance_ids", TransientError("HTTP 503")),
)
QUIET_RUNS = 6
#: the pool draws from two of the three regions
POOL_REGIONS = ["dallas", "seattle"]


class FleetMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.world = World(build_seconds=45)
        self.counts: dict[str, int] = {}
        self.plans: dict[str, str] = {}
        self.unmanaged: dict[int, ObservedServer] = {}
        self.extra_seq = 500
        #: faults queue up until an action consumes them: a few per example, so that a few
        #: quiet runs can drain them
        self.faults_left = 3
        self.pool_size = 0
        #: pool -> the ceiling a crashed or partly failed run left to the next clean run
        self.pool_ceiling: dict[str, int] = {}
        #: names of servers stopped or suspended behind our back (booted again at the end)
        self.stopped: set[str] = set()

    # --- the spec ------------------------------------------------------------------------

    def spec(self) -> FleetSpec:
        return make_spec(
            self.counts,
            plan=self.plans,
            disruption={"max_unavailable": 4, "max_destroys_per_run": 20},
            ip_pools={"main": {"size": self.pool_size, "regions": POOL_REGIONS}},
        )

    @initialize(
        counts=st.tuples(*(st.integers(0, 3) for _ in REGIONS)),
        plans=st.tuples(*(st.sampled_from(["baseline", "large"]) for _ in REGIONS)),
        pool_size=st.integers(0, 4),
    )
    def start(self, counts: tuple[int, ...], plans: tuple[str, ...], pool_size: int) -> None:
        self.counts = dict(zip(REGIONS, counts, strict=True))
        self.plans = dict(zip(REGIONS, plans, strict=True))
        self.pool_size = pool_size

    @rule(size=st.integers(0, 5))
    def edit_pool(self, size: int) -> None:
        self.pool_size = size

    @rule(region=st.sampled_from(REGIONS), count=st.integers(0, 4))
    def edit_count(self, region: str, count: int) -> None:
        self.counts[region] = count

    @rule(region=st.sampled_from(REGIONS))
    def edit_plan(self, region: str) -> None:
        # upward only: Hostwinds refuses to shrink a disk ("Disk cannot be downgraded.")
        self.plans[region] = "large"

    # --- runs ----------------------------------------------------------------------------

    def _run(self, **kwargs: object) -> bool:
        """One run; True when it ran to its end (not crashed, observed, not refused)."""
        before = self.pool_occupancy()
        clean = False
        try:
            _plan, report = self.world.run(self.spec(), options=ALLOW, **kwargs)  # type: ignore[arg-type]
            clean = report is None or all(o.status is OutcomeStatus.DONE for o in report.outcomes)
        except (TransientError, GuardRefusedError):
            # a failed observation (a list fault) or a guard's refusal applies nothing
            return False
        finally:
            self.check_pools(before, clean=clean)
        return True

    @rule()
    def apply(self) -> None:
        if self._run():
            self.assert_stopped_out_of_rotation()

    @rule(step=st.integers(1, 40))
    def crash_mid_apply(self, step: int) -> None:
        with contextlib.suppress(Crash):  # the process 'died' here; the next run must cope
            self._run(before_mutation=crash_at(step))

    @rule(seconds=st.sampled_from([5, 30, 120, 400]))
    def time_passes(self, seconds: int) -> None:
        self.world.clock.advance(seconds)

    # --- the world changes behind our back -----------------------------------------------

    def _ours(self) -> list[ObservedServer]:
        return sorted(
            (s for s in self.world.cloud.snapshot() if owned_by_fleet("acme", s.name)),
            key=lambda s: s.service_id,
        )

    def _active_ours(self) -> list[ObservedServer]:
        return [s for s in self._ours() if s.status is ServerStatus.ACTIVE and not s.suspended]

    @precondition(lambda self: bool(self._active_ours()))
    @rule(data=st.data(), how=st.sampled_from(["shutoff", "suspended"]))
    def a_server_stops(self, data: st.DataObject, how: str) -> None:
        server = data.draw(st.sampled_from(self._active_ours()))
        if how == "shutoff":
            self.world.cloud.set_status(server.service_id, ServerStatus.SHUTOFF)
        else:
            self.world.cloud.suspend(server.service_id)
        self.stopped.add(server.name)

    def boot_stopped_servers(self) -> None:
        """An operator boots and unsuspends what was stopped (before the quiet runs)."""
        for server in self._ours():
            if server.name in self.stopped:
                if server.status is ServerStatus.SHUTOFF:
                    self.world.cloud.set_status(server.service_id, ServerStatus.ACTIVE)
                self.world.cloud.suspend(server.service_id, suspended=False)

    @precondition(lambda self: bool(self._ours()))
    @rule(data=st.data())
    def delete_behind_our_back(self, data: st.DataObject) -> None:
        server = data.draw(st.sampled_from(self._ours()))
        self.world.cloud.delete_behind_our_back(server.service_id)

    def _highest_seq(self) -> int:
        """The highest sequence number any server, record or intent of ours uses."""
        recorded = self.world.store.load_fleet("acme")
        names = [s.name for s in self.world.cloud.snapshot()]
        names += [n.name for n in recorded.nodes]
        names += [i.target for i in recorded.pending_intents]
        seqs = [parsed[1] for n in names if (parsed := parse_node_name("acme", n)) is not None]
        return max(seqs, default=0)

    @rule(region=st.sampled_from(REGIONS))
    def create_ours_behind_our_back(self, region: str) -> None:
        # someone uses our naming scheme with a name we have not used (the same name as ours
        # would be their duplicate, not ours)
        self.extra_seq = max(self.extra_seq, self._highest_seq()) + 50
        name = f"acme-{region}-{self.extra_seq:03d}"
        self.world.cloud.add_unmanaged(name, location_id=LOCATIONS[region], rid=52)

    @precondition(
        lambda self: len(self.unmanaged) < 4  # one of each name
    )
    @rule(name=st.sampled_from(["legacy-mail", "acmex-dallas-001", "acme-dallas", "web-1"]))
    def create_unmanaged(self, name: str) -> None:
        if any(s.name == name for s in self.unmanaged.values()):
            return
        sid = self.world.cloud.add_unmanaged(name, location_id=13, rid=51)
        server = next(s for s in self.world.cloud.snapshot() if s.service_id == sid)
        self.unmanaged[sid] = server

    @precondition(lambda self: self.faults_left > 0)
    @rule(fault=st.sampled_from(FAULTS))
    def api_fault(self, fault: tuple[str, Exception]) -> None:
        self.faults_left -= 1
        action, exc = fault
        self.world.cloud.fail_next(action, exc)

    @precondition(lambda self: self.faults_left > 0)
    @rule(applied=st.booleans())
    def create_times_out(self, applied: bool) -> None:
        self.faults_left -= 1
        self.world.cloud.fail_next("add_instance", TransientError("read timeout"), applied=applied)

    @precondition(lambda self: self.faults_left > 0)
    @rule()
    def a_build_fails(self) -> None:
        self.faults_left -= 1
        self.world.cloud.fail_builds(1)

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def never_two_servers_with_one_name(self) -> None:
        names = Counter(s.name for s in self.world.cloud.snapshot())
        ours = {n: c for n, c in names.items() if owned_by_fleet("acme", n)}
        assert all(c == 1 for c in ours.values()), ours

    @invariant()
    def no_server_created_twice_for_one_slot(self) -> None:
        cloud = self.world.cloud
        assert not cloud.created_over_live, f"created beside a live one: {cloud.created_over_live}"
        bound = 1 + max(0, ALLOW.create_retries)
        over = {name: n for name, n in cloud.slot_creates.items() if n > bound}
        assert not over, f"more than {bound} creates for one slot: {over}"

    def pool_occupancy(self) -> dict[str, int]:
        """IPs per pool: recorded nodes of ours whose server exists, plus the pending creates
        meant for the pool (not yet recorded)."""
        recorded = self.world.store.load_fleet("acme")
        alive = {s.name for s in self.world.cloud.snapshot()}
        held: Counter[str] = Counter()
        for node in recorded.nodes:
            if node.pool is not None and node.name in alive:
                held[node.pool] += 1
        names = {n.name for n in recorded.nodes}
        for intent in recorded.pending_intents:
            pool = intent.params.get("pool")
            if intent.kind == "create" and pool and intent.target not in names:
                held[pool] += 1
        return dict(held)

    def check_pools(self, before: dict[str, int], *, clean: bool) -> None:
        """A pool is never over-filled by a run: a run that ran to its end with every change
        done leaves each pool at most at its size (or at what it held before, for a pool shrunk
        in the spec: nodes are not removed for it, but nothing is added). A crashed or partly
        failed run may leave a replacement beside the node it replaces (a create done, the
        destroy not yet): the next clean run must bring the pool back under that ceiling."""
        after = self.pool_occupancy()
        for pool in set(after) | set(self.pool_ceiling):
            ceiling = max(self.pool_size, before.get(pool, 0))
            if pool in self.pool_ceiling:
                ceiling = max(ceiling, self.pool_ceiling[pool])
            if clean:
                held = after.get(pool, 0)
                assert held <= ceiling, f"pool {pool}: {held} IPs, size {self.pool_size} ({before})"
                self.pool_ceiling.pop(pool, None)
            elif pool not in self.pool_ceiling:
                self.pool_ceiling[pool] = ceiling

    def assert_stopped_out_of_rotation(self) -> None:
        """After a run that ran to its end, no node whose server is stopped is in rotation."""
        servers = {s.service_id: s for s in self.world.cloud.snapshot()}
        for node in self.world.store.load_fleet("acme").nodes:
            server = servers.get(node.service_id) if node.service_id is not None else None
            if server is not None and stopped(server) is not None:
                assert not node.status.in_rotation, (node.name, node.status, stopped(server))

    @invariant()
    def unmanaged_servers_are_untouched(self) -> None:
        now = {s.service_id: s for s in self.world.cloud.snapshot()}
        for sid, before in self.unmanaged.items():
            after = now.get(sid)
            assert after is not None, f"unmanaged server {sid} ({before.name}) was destroyed"
            assert after.name == before.name
            assert after.plan_rid == before.plan_rid
            assert after.status is before.status
            assert self.world.cloud.rdns_of(after.main_ip or "") is None

    @invariant()
    def records_name_servers_of_ours(self) -> None:
        for node in self.world.store.load_fleet("acme").nodes:
            assert owned_by_fleet("acme", node.name)

    def operator_retries_failed_slots(self, plan: Plan) -> None:
        """A slot whose re-creates are used up waits for an operator (issue 9): before that,
        no more than 1 + create_retries creates were sent for it (no double spend); the
        operator then releases it (`reconcile node retry NAME`)."""
        failed = {c.address for c in plan.changes if c.resolution is Resolution.EXHAUSTED}
        for node in self.world.store.load_fleet("acme").nodes:
            if node.name in failed:
                assert _retry_failed_slot(self.world.store, "acme", node, "ops", "checked")

    def teardown(self) -> None:
        """A few quiet runs (no new faults; queued ones drain) converge."""
        self.boot_stopped_servers()
        world = self.world
        spec = self.spec()
        converged = False
        for _ in range(QUIET_RUNS):
            world.clock.advance(400)  # past builds and the adoption grace
            try:
                plan = world.plan(spec, ALLOW)
                if plan.is_empty:
                    converged = True
                    break
                self.operator_retries_failed_slots(plan)
                world.run(spec, options=ALLOW)
            except TransientError:
                continue
        if not converged:
            world.clock.advance(400)
            plan = world.plan(spec, ALLOW)
            assert plan.is_empty, [(c.action.value, c.address, c.reason) for c in plan.changes]
        servers = [s for s in world.cloud.snapshot() if owned_by_fleet("acme", s.name)]
        for region in REGIONS:
            live = [
                s
                for s in servers
                if s.name.startswith(f"acme-{region}-") and s.status is ServerStatus.ACTIVE
            ]
            assert len(live) == self.counts.get(region, 0), (region, live)
        world.assert_sound(spec)
        world.store.close()


FleetMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFleetMachine = FleetMachine.TestCase


class TokenCloud(FakeCloud):
    """FakeCloud whose mutating calls first wait for a rate-limit token: ``token_ticks`` turns
    of the event loop per call already waiting (0: no wait, plain FakeCloud)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.token_ticks = 0
        self.waiting = 0

    async def _enter(self, action: str, *, defer: bool = False) -> Any:
        if self.token_ticks and not action.startswith(("get_", "check_")):
            self.waiting += 1
            try:
                for _ in range(self.token_ticks * self.waiting):
                    await asyncio.sleep(0)
            finally:
                self.waiting -= 1
        return await super()._enter(action, defer=defer)


class FencedFleetMachine(FleetMachine):
    """The same fleet, where the writer may lose leadership at any point of an apply (a
    number of wire checks in, or while calls wait for a rate-limit token): no cloud mutation
    is sent after the loss (issue 9)."""

    def __init__(self) -> None:
        super().__init__()
        self.locked: set[str] = set()
        self.cloud = TokenCloud(clock=self.world.clock, build_seconds=45, resize_seconds=20)
        self.world.cloud = self.cloud

    def _fenced_run(
        self,
        fence: WriterFence,
        at_loss: list[int],
        loser: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        """One run under ``fence`` (with ``loser`` running beside it); ``at_loss`` holds the
        number of cloud mutations when leadership was lost: none may follow."""
        reconciler = self.world.reconciler(self.spec())
        request = RunRequest(options=ALLOW, overridable=ALL_GUARDS)

        async def go() -> bool:
            side = asyncio.ensure_future(loser()) if loser is not None else None
            try:
                result = await reconciler.reconcile(request, RunHooks(fence=fence))
                return result.outcome == "ok" and (
                    result.report is None
                    or all(o.status is OutcomeStatus.DONE for o in result.report.outcomes)
                )
            finally:
                if side is not None:
                    side.cancel()
                    await asyncio.gather(side, return_exceptions=True)

        before = self.pool_occupancy()
        clean = False
        try:
            with contextlib.suppress(TransientError):
                clean = asyncio.run(go())
        finally:
            self.cloud.token_ticks = 0
            self.check_pools(before, clean=clean)
        if at_loss:
            assert self.cloud.mutations == at_loss[0], "a cloud mutation was sent after the loss"

    @rule(checks=st.integers(0, 12))
    def lose_leadership_mid_apply(self, checks: int) -> None:
        seen = 0
        at_loss: list[int] = []

        def still_leading() -> None:
            nonlocal seen
            seen += 1
            if seen > checks:
                if not at_loss:
                    at_loss.append(self.cloud.mutations)
                raise LeadershipLostError("lease lost")

        self._fenced_run(WriterFence(still_leading), at_loss)

    @rule(ticks=st.integers(0, 80), token=st.integers(1, 6))
    def lose_leadership_while_calls_wait(self, ticks: int, token: int) -> None:
        """Leadership is lost after ``ticks`` turns of the loop (another thread's lease check,
        a renewal that failed), typically while calls wait for their rate-limit token."""
        fence = WriterFence(poll_seconds=0.001)
        at_loss: list[int] = []

        async def lose_later() -> None:
            for _ in range(ticks):
                await asyncio.sleep(0)
            at_loss.append(self.cloud.mutations)
            fence.lose("lease lost (renewal failed)")

        self.cloud.token_ticks = token
        self._fenced_run(fence, at_loss, lose_later)

    @precondition(lambda self: bool(self._ours()))
    @rule(data=st.data())
    def a_server_is_locked(self, data: st.DataObject) -> None:
        server = data.draw(st.sampled_from(self._ours()))
        self.world.cloud.lock(server.service_id)
        self.locked.add(server.name)

    def teardown(self) -> None:
        # a stopped (here: locked) server is never left in rotation by a run
        if self._run():
            self.assert_stopped_out_of_rotation()
        # locked servers cannot be destroyed or changed: unlock them (an operator) first
        for server in self._ours():
            if server.name in self.locked:
                self.world.cloud.lock(server.service_id, locked=False)
        super().teardown()


FencedFleetMachine.TestCase.settings = settings(
    max_examples=15,
    stateful_step_count=10,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFencedFleetMachine = FencedFleetMachine.TestCase
