"""A stateful property: random spec edits, applies, crashes mid-apply, servers deleted or made
behind our back. Invariants: never two servers with one name, never a change to an unmanaged
server, and a few quiet runs always converge to an empty plan."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from reconciler.core.addresses import node_name, parse_node_name
from reconciler.core.fleet import (
    Observed,
    ObservedServer,
    RecordedFleet,
    RecordedIntent,
    ServerStatus,
)
from reconciler.core.planning import PlanOptions, plan
from reconciler.core.plans import Action, Plan
from specs.model import FleetSpec
from tests.core.factories import NOW, ip_for, make_spec, simulated_apply

REGIONS = ("dallas", "seattle")
UNMANAGED = (
    ObservedServer(service_id=7, name="web-1", location_id=12, status=ServerStatus.ACTIVE),
    ObservedServer(service_id=8, name="acme-db", location_id=13, status=ServerStatus.ACTIVE),
)


class Fleet(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.counts: dict[str, int] = {"dallas": 2, "seattle": 1}
        self.plans: dict[str, str] = {"dallas": "baseline", "seattle": "baseline"}
        self.now: datetime = NOW
        self.observed = Observed(servers=UNMANAGED, observed_at=NOW)
        self.recorded = RecordedFleet(fleet="acme")
        self.next_sid = 5000
        self.next_intent = 1
        self.options = PlanOptions(allow_mass_destroy=True)
        #: servers in a region neither the spec nor the store knows: never ours
        self.foreign: set[ObservedServer] = set()

    # --- helpers -------------------------------------------------------------------------

    def spec(self) -> FleetSpec:
        regions: dict[str, Any] = {
            r: {"plan": self.plans[r], "nodes": n} for r, n in self.counts.items()
        }
        return make_spec(regions, disruption={"max_unavailable": 2, "max_destroys_per_run": 3})

    def plan(self) -> Plan:
        p = plan(self.spec(), self.observed, self.recorded, self.now, self.options)
        unmanaged = {s.service_id for s in UNMANAGED}
        for change in p.changes:
            assert change.service_id not in unmanaged
            assert change.address not in {s.name for s in UNMANAGED}
        return p

    def apply(self, p: Plan) -> None:
        self.observed, self.recorded = simulated_apply(
            self.spec(), self.observed, self.recorded, p, self.now
        )

    def tick(self, minutes: int = 1) -> None:
        self.now += timedelta(minutes=minutes)

    # --- rules ---------------------------------------------------------------------------

    @rule(region=st.sampled_from(REGIONS), count=st.integers(0, 4))
    def edit_count(self, region: str, count: int) -> None:
        self.counts[region] = count

    @rule(region=st.sampled_from(REGIONS), plan_name=st.sampled_from(["small", "baseline"]))
    def edit_plan(self, region: str, plan_name: str) -> None:
        self.plans[region] = plan_name

    @rule()
    def reconcile(self) -> None:
        self.apply(self.plan())
        self.tick()

    @rule(data=st.data())
    def crash_mid_apply(self, data: st.DataObject) -> None:
        """Apply a prefix of the plan; the next change was cut short."""
        p = self.plan()
        if not p.changes:
            return
        cut = data.draw(st.integers(0, len(p.changes) - 1))
        done = replace(p, changes=p.changes[:cut])
        self.apply(done)
        interrupted = p.changes[cut]
        if interrupted.action is Action.CREATE:
            # intent written; the create call may or may not have reached Hostwinds
            intent = RecordedIntent(
                id=self.next_intent,
                fleet="acme",
                kind="create",
                target=interrupted.address,
                params={"region": interrupted.region, "plan": interrupted.plan or "baseline"},
                created_at=self.now,
            )
            self.next_intent += 1
            self.recorded = replace(
                self.recorded, pending_intents=(*self.recorded.pending_intents, intent)
            )
            if data.draw(st.booleans()):
                self.add_server(interrupted.address, interrupted.plan or "baseline")
        self.tick()

    def add_server(self, name: str, plan_name: str) -> None:
        known = [s.service_id for s in self.observed.servers] + [
            n.service_id for n in self.recorded.nodes if n.service_id is not None
        ]
        self.next_sid = max([*known, self.next_sid]) + 1  # service ids are never reused
        parsed = parse_node_name("acme", name)
        assert parsed is not None
        spec = self.spec()
        server = ObservedServer(
            service_id=self.next_sid,
            name=name,
            location_id=spec.regions[parsed[0]].location_id if parsed[0] in spec.regions else 20,
            status=ServerStatus.ACTIVE,
            main_ip=ip_for(self.next_sid),
            plan_rid=spec.plans[plan_name].rid,
        )
        self.observed = replace(self.observed, servers=(*self.observed.servers, server))

    @precondition(lambda self: len(self.observed.servers) > len(UNMANAGED))
    @rule(data=st.data())
    def delete_behind_our_back(self, data: st.DataObject) -> None:
        ours = [s for s in self.observed.servers if s not in UNMANAGED]
        victim = data.draw(st.sampled_from(ours))
        self.foreign.discard(victim)
        self.observed = replace(
            self.observed, servers=tuple(s for s in self.observed.servers if s != victim)
        )

    @rule(region=st.sampled_from((*REGIONS, "paris")), seq=st.integers(50, 60))
    def create_behind_our_back(self, region: str, seq: int) -> None:
        name = node_name("acme", region, seq)
        taken = (
            {s.name for s in self.observed.servers}
            | {n.name for n in self.recorded.nodes}
            | {i.target for i in self.recorded.pending_intents}
        )
        if name not in taken:
            self.add_server(name, "large")
            if region not in REGIONS:
                self.foreign.add(self.observed.servers[-1])

    @rule()
    def time_passes(self) -> None:
        self.tick(10)

    # --- invariants ----------------------------------------------------------------------

    @invariant()
    def one_server_per_name(self) -> None:
        names = Counter(s.name for s in self.observed.servers)
        assert max(names.values()) == 1, names.most_common(2)

    @invariant()
    def unmanaged_servers_untouched(self) -> None:
        assert set(UNMANAGED) <= set(self.observed.servers)

    def teardown(self) -> None:
        """A few quiet runs (time passing for pending intents) converge."""
        for _ in range(12):
            p = self.plan()
            if p.is_empty:
                break
            self.apply(p)
            self.tick(10)
            self.one_server_per_name()
        else:
            raise AssertionError(
                f"no convergence: {[(c.action.value, c.address) for c in p.changes]}"
            )
        wanted = sum(self.counts.values())
        # a server in a region neither the spec nor the store knows is not ours (issue 9)
        ours = [
            s
            for s in self.observed.servers
            if s not in UNMANAGED and (parse_node_name("acme", s.name) or ("",))[0] in REGIONS
        ]
        assert len(ours) == wanted
        assert self.foreign <= set(self.observed.servers)


Fleet.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestFleet = Fleet.TestCase
