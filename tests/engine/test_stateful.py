"""A stateful property test of the whole loop (planner + engine) against FakeCloud.

Random spec edits (region counts, plans), applies, crashes mid-apply (at a random mutating
step), servers deleted or created behind our back, unmanaged servers, failed builds and API
faults. Invariants, after every step:

- never two servers with one name;
- never a change to an unmanaged server (it still exists, same name, plan and status, no rDNS);
- every recorded node names a server of ours;
and at the end: a few quiet runs converge to an empty plan with the store and the cloud in step.
"""

from __future__ import annotations

import contextlib
from collections import Counter

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from reconciler.cli.nodes import _retry_failed_slot
from reconciler.core.addresses import owned_by_fleet, parse_node_name
from reconciler.core.errors import GuardRefusedError, TerminalError, TransientError
from reconciler.core.fleet import ObservedServer, ServerStatus
from reconciler.core.planning import PlanOptions
from reconciler.core.plans import Plan, Resolution
from specs.model import FleetSpec
from tests.engine.conftest import LOCATIONS, Crash, World, crash_at, make_spec

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

    # --- the spec ------------------------------------------------------------------------

    def spec(self) -> FleetSpec:
        return make_spec(
            self.counts,
            plan=self.plans,
            disruption={"max_unavailable": 4, "max_destroys_per_run": 20},
        )

    @initialize(
        counts=st.tuples(*(st.integers(0, 3) for _ in REGIONS)),
        plans=st.tuples(*(st.sampled_from(["baseline", "large"]) for _ in REGIONS)),
    )
    def start(self, counts: tuple[int, ...], plans: tuple[str, ...]) -> None:
        self.counts = dict(zip(REGIONS, counts, strict=True))
        self.plans = dict(zip(REGIONS, plans, strict=True))

    @rule(region=st.sampled_from(REGIONS), count=st.integers(0, 4))
    def edit_count(self, region: str, count: int) -> None:
        self.counts[region] = count

    @rule(region=st.sampled_from(REGIONS))
    def edit_plan(self, region: str) -> None:
        # upward only: Hostwinds refuses to shrink a disk ("Disk cannot be downgraded.")
        self.plans[region] = "large"

    # --- runs ----------------------------------------------------------------------------

    def _run(self, **kwargs: object) -> None:
        # a failed observation (a list fault) or a guard's refusal applies nothing
        with contextlib.suppress(TransientError, GuardRefusedError):
            self.world.run(self.spec(), options=ALLOW, **kwargs)  # type: ignore[arg-type]

    @rule()
    def apply(self) -> None:
        self._run()

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


class FencedFleetMachine(FleetMachine):
    """The same fleet, where the writer may lose leadership at any point of an apply (a
    number of wire checks in): no cloud mutation is sent after the loss (issue 9)."""

    @rule(checks=st.integers(0, 12))
    def lose_leadership_mid_apply(self, checks: int) -> None:
        import asyncio

        from reconciler.core.errors import LeadershipLostError
        from reconciler.engine.fences import WriterFence
        from reconciler.engine.reconciling import ALL_GUARDS, RunHooks, RunRequest

        cloud = self.world.cloud
        seen = 0
        at_loss: list[int] = []

        def still_leading() -> None:
            nonlocal seen
            seen += 1
            if seen > checks:
                if not at_loss:
                    at_loss.append(cloud.mutations)
                raise LeadershipLostError("lease lost")

        reconciler = self.world.reconciler(self.spec())
        request = RunRequest(options=ALLOW, overridable=ALL_GUARDS)
        with contextlib.suppress(TransientError):
            asyncio.run(reconciler.reconcile(request, RunHooks(fence=WriterFence(still_leading))))
        if at_loss:
            assert cloud.mutations == at_loss[0], "a cloud mutation was sent after the loss"

    @precondition(lambda self: bool(self._ours()))
    @rule(data=st.data())
    def a_server_is_locked(self, data: st.DataObject) -> None:
        server = data.draw(st.sampled_from(self._ours()))
        self.world.cloud.lock(server.service_id)
        self.locked.add(server.name)

    def __init__(self) -> None:
        super().__init__()
        self.locked: set[str] = set()

    def teardown(self) -> None:
        # a stopped (here: locked) server is never left in rotation by a run
        self._run()
        for node in self.world.store.load_fleet("acme").nodes:
            if node.name in self.locked and node.service_id is not None:
                assert not node.status.in_rotation, node
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
