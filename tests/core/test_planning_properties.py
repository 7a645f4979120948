"""Hypothesis properties of the planner over random specs and random fleets."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.core.addresses import node_name, parse_node_name
from reconciler.core.fleet import (
    NodeStatus,
    Observed,
    ObservedServer,
    RecordedFleet,
    RecordedIntent,
    RecordedNode,
    ServerStatus,
)
from reconciler.core.matching import known_regions
from reconciler.core.planning import PlanOptions, desired_count, plan
from reconciler.core.plans import Action, Plan
from reconciler.views.documents import plan_to_document
from specs.model import FleetSpec
from tests.core.factories import NOW, intent, make_spec, node, server, simulated_apply

REGIONS = ["dallas", "seattle", "amsterdam"]
PLAN_NAMES = ["small", "baseline", "large"]
KINDS = [
    "steady",
    "steady",
    "steady",
    "no_record",
    "no_server",
    "provisioning",
    "provisioning_rdns",
    "build",
    "error",
    "resized_behind",
    "ip_changed",
    "draining",
    "paused",
    "unhealthy",
    "maintenance",
    "resizing",
    "pending_found",
    "pending_missing",
    "pending_young",
]


@dataclass(frozen=True)
class Case:
    spec: FleetSpec
    observed: Observed
    recorded: RecordedFleet
    options: PlanOptions


@st.composite
def specs(draw: st.DrawFn) -> FleetSpec:
    chosen = draw(st.lists(st.sampled_from(REGIONS), min_size=1, max_size=3, unique=True))
    regions: dict[str, Any] = {}
    for region in sorted(chosen):
        low = draw(st.integers(0, 4))
        nodes: Any = low
        if draw(st.booleans()):
            nodes = {"min": low, "max": low + draw(st.integers(0, 3))}
        regions[region] = {
            "plan": draw(st.sampled_from(PLAN_NAMES)),
            "nodes": nodes,
            "protected": draw(
                st.lists(st.sampled_from([f"acme-{region}-00{i}" for i in (1, 2)]), max_size=1)
            ),
        }
    pools = None
    if draw(st.booleans()):
        pools = {
            "first": {"size": draw(st.integers(0, 4)), "regions": sorted(chosen)},
            "second": {"size": 50, "regions": [chosen[0]], "ip_monthly_price": "3.50"},
        }
    disruption = {
        "max_unavailable": draw(st.integers(1, 3)),
        "max_destroys_per_run": draw(st.integers(1, 5)),
        "mass_delete_threshold": draw(st.sampled_from([0.3, 0.5, 1.0])),
    }
    return make_spec(regions, pools=pools, disruption=disruption)


@st.composite
def cases(draw: st.DrawFn, *, allow_mass_destroy: bool | None = None) -> Case:
    spec = draw(specs())
    slots = draw(
        st.lists(
            st.tuples(st.sampled_from([*REGIONS, "paris"]), st.integers(1, 9)),
            max_size=9,
            unique=True,
        )
    )
    servers: list[ObservedServer] = []
    nodes: list[RecordedNode] = []
    intents: list[RecordedIntent] = []
    sid = 1000
    for region, seq in slots:
        sid += 1
        name = node_name("acme", region, seq)
        kind = draw(st.sampled_from(KINDS))
        plan_name = draw(st.sampled_from(PLAN_NAMES))
        started = NOW - timedelta(days=draw(st.integers(0, 80)))
        steady_node = node(name, sid, plan=plan_name, warmup_started_at=started)
        steady_server = server(name, sid, plan=plan_name)
        if kind == "steady":
            status = draw(st.sampled_from([NodeStatus.ACTIVE, NodeStatus.WARMING]))
            servers.append(steady_server)
            nodes.append(replace(steady_node, status=status))
        elif kind == "no_record":
            servers.append(steady_server)
        elif kind == "no_server":
            nodes.append(steady_node)
        elif kind in ("provisioning", "provisioning_rdns"):
            servers.append(steady_server)
            nodes.append(
                replace(
                    steady_node,
                    status=NodeStatus.PROVISIONING,
                    rdns_done=kind == "provisioning_rdns",
                    ip_address=None if kind == "provisioning" else steady_node.ip_address,
                    warmup_started_at=None,
                )
            )
        elif kind == "build":
            servers.append(replace(steady_server, status=ServerStatus.BUILD, main_ip=None))
            nodes.append(
                replace(
                    steady_node, status=NodeStatus.PROVISIONING, rdns_done=False, ip_address=None
                )
            )
        elif kind == "error":
            servers.append(replace(steady_server, status=ServerStatus.ERROR))
            if draw(st.booleans()):
                nodes.append(replace(steady_node, status=NodeStatus.PROVISIONING, rdns_done=False))
        elif kind == "resized_behind":
            other = draw(st.sampled_from(PLAN_NAMES))
            servers.append(server(name, sid, plan=other))
            nodes.append(steady_node)
        elif kind == "ip_changed":
            servers.append(replace(steady_server, main_ip="203.0.113.77"))
            nodes.append(steady_node)
        elif kind in ("draining", "paused", "unhealthy", "maintenance"):
            servers.append(steady_server)
            nodes.append(replace(steady_node, status=NodeStatus(kind)))
        elif kind == "resizing":
            moving = draw(st.sampled_from([ServerStatus.RESIZE, ServerStatus.RESIZED]))
            servers.append(replace(steady_server, status=moving))
            nodes.append(steady_node)
        elif kind == "pending_found":
            servers.append(steady_server)
            intents.append(intent(sid, name))
        elif kind == "pending_missing":
            intents.append(intent(sid, name, age=timedelta(hours=3)))
        elif kind == "pending_young":
            intents.append(intent(sid, name, age=timedelta(minutes=1)))
    for index in range(draw(st.integers(0, 2))):
        servers.append(server(f"mail-{index}", 50 + index))
    names = sorted({s.name for s in servers if s.name.startswith("acme-")})
    unhealthy = (
        frozenset(draw(st.lists(st.sampled_from(names), max_size=2))) if names else frozenset()
    )
    replace_unhealthy = (
        frozenset(draw(st.lists(st.sampled_from(sorted(unhealthy)), max_size=1)))
        if unhealthy
        else frozenset()
    )
    desired_counts = None
    if draw(st.booleans()):
        desired_counts = {r: draw(st.integers(0, 6)) for r in spec.regions}
    options = PlanOptions(
        spec_hash="h",
        allow_mass_destroy=draw(st.booleans())
        if allow_mass_destroy is None
        else allow_mass_destroy,
        desired_counts=desired_counts,
        unhealthy=unhealthy,
        replace_unhealthy=replace_unhealthy,
    )
    protected_names = (
        frozenset(draw(st.lists(st.sampled_from(names), max_size=1))) if names else frozenset()
    )
    return Case(
        spec,
        Observed(servers=tuple(servers), observed_at=NOW),
        RecordedFleet(
            fleet="acme",
            nodes=tuple(nodes),
            pending_intents=tuple(intents),
            protected_names=protected_names,
        ),
        options,
    )


def shuffled(case: Case, seed: int) -> Case:
    rng = random.Random(seed)
    servers = list(case.observed.servers)
    nodes = list(case.recorded.nodes)
    intents = list(case.recorded.pending_intents)
    for items in (servers, nodes, intents):
        rng.shuffle(items)
    return replace(
        case,
        observed=replace(case.observed, servers=tuple(servers)),
        recorded=replace(case.recorded, nodes=tuple(nodes), pending_intents=tuple(intents)),
    )


def run(case: Case) -> Plan:
    return plan(case.spec, case.observed, case.recorded, NOW, case.options)


def check_invariants(case: Case, p: Plan) -> None:
    spec, options = case.spec, case.options
    regions = known_regions(spec, case.recorded)

    def ours(name: str) -> bool:
        parsed = parse_node_name("acme", name)
        return parsed is not None and parsed[0] in regions

    unmanaged_ids = {s.service_id for s in case.observed.servers if not ours(s.name)}
    unmanaged_names = {s.name for s in case.observed.servers if s.service_id in unmanaged_ids}
    assert {u.service_id for u in p.unmanaged} == unmanaged_ids
    for change in p.changes:
        assert change.service_id not in unmanaged_ids
        assert change.address not in unmanaged_names
        assert parse_node_name("acme", change.address) is not None
    # creates: unique, fresh names
    existing = (
        {s.name for s in case.observed.servers}
        | {n.name for n in case.recorded.nodes}
        | {i.target for i in case.recorded.pending_intents}
    )
    created = [c.address for c in p.changes if c.action is Action.CREATE]
    assert len(created) == len(set(created))
    assert not set(created) & existing
    # protected nodes are never destroyed
    protected = set(spec.disruption.protected) | set(case.recorded.protected_names)
    for region in spec.regions.values():
        protected |= set(region.protected)
    protected |= {n.name for n in case.recorded.nodes if n.protected}
    destroyed = [c.address for c in p.changes if c.action is Action.DESTROY]
    assert not set(destroyed) & protected
    assert len(destroyed) <= spec.disruption.max_destroys_per_run
    # disruption budget: new disruptions of in-rotation nodes
    in_rotation = {n.name for n in case.recorded.nodes if n.status.in_rotation}
    resizing = {
        s.name
        for s in case.observed.servers
        if s.status in (ServerStatus.RESIZE, ServerStatus.RESIZED)
    }
    disrupting = [
        c
        for c in p.changes
        if c.action is Action.DRAIN
        or (
            c.action is Action.RESIZE
            and c.address in in_rotation
            and c.address not in resizing
            and c.address not in options.unhealthy
        )
    ]
    assert len(disrupting) <= spec.disruption.max_unavailable
    # one change of each action per address at most
    per_address = Counter((c.address, c.action) for c in p.changes)
    assert max(per_address.values(), default=1) == 1
    # mass delete: refused unless allowed
    if any(w.guard == "mass_delete" for w in p.warnings):
        assert p.blocked != options.allow_mass_destroy
    # summary is consistent
    assert p.summary.counts == {a.value: sum(1 for c in p.changes if c.action is a) for a in Action}
    assert p.summary.monthly_cost_after - p.summary.monthly_cost_before == sum(
        (c.monthly_cost_delta for c in p.changes), start=p.summary.monthly_cost_before * 0
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(), seed=st.integers(0, 1000))
def test_plans_are_deterministic_and_independent_of_input_order(case: Case, seed: int) -> None:
    first, again, other = run(case), run(case), run(shuffled(case, seed))
    assert first == again == other
    rendered = [json.dumps(plan_to_document(p), sort_keys=True) for p in (first, again, other)]
    assert rendered[0] == rendered[1] == rendered[2]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases())
def test_every_plan_respects_the_invariants(case: Case) -> None:
    check_invariants(case, run(case))


def _names_unique(observed: Observed) -> None:
    names = Counter(s.name for s in observed.servers)
    assert max(names.values(), default=1) == 1, names.most_common(2)


_DEFERRALS = {"destroy_budget", "disruption_budget"}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=cases(allow_mass_destroy=True))
def test_a_simulated_apply_converges_to_an_empty_plan(case: Case) -> None:
    observed, recorded = case.observed, case.recorded
    _names_unique(observed)
    p = run(case)
    one_round = (
        not any(w.guard in _DEFERRALS for w in p.warnings)
        and not any(c.action is Action.DRAIN for c in p.changes)
        # a server discovered unrecorded is never removed in the run that adopts it
        and not any(c.action is Action.ADOPT for c in p.changes)
        and not any((c.after or {}).get("grace_until") for c in p.changes)
    )
    rounds = 0
    while not p.is_empty:
        assert rounds < 25, f"no convergence: {[(c.action.value, c.address) for c in p.changes]}"
        observed, recorded = simulated_apply(case.spec, observed, recorded, p)
        _names_unique(observed)
        rounds += 1
        current = replace(case, observed=observed, recorded=recorded)
        p = run(current)
        check_invariants(current, p)
        if rounds == 1 and one_round:
            young = any((c.after or {}).get("grace_until") for c in p.changes)
            assert p.is_empty or young, [(c.action.value, c.address, c.reason) for c in p.changes]
        if all((c.after or {}).get("grace_until") for c in p.changes) and p.changes:
            break  # only intents waiting for their grace period: the engine waits too
    # converged: every spec region holds what it should (protected or waiting nodes aside)
    live = Counter(
        n.region
        for n in recorded.nodes
        if n.status is not NodeStatus.DECOMMISSIONED and n.service_id is not None
    )
    waiting = Counter(
        parse_node_name("acme", i.target)[0]  # type: ignore[index]
        for i in recorded.pending_intents
    )
    for region in case.spec.regions:
        wanted = desired_count(case.spec, region, case.options)
        assert live[region] + waiting[region] >= wanted


@given(case=cases(allow_mass_destroy=False))
@settings(max_examples=100, deadline=None)
def test_unmanaged_servers_survive_any_number_of_applies(case: Case) -> None:
    observed, recorded = case.observed, case.recorded
    strangers = {s for s in observed.servers if parse_node_name("acme", s.name) is None}
    for _ in range(4):
        p = run(replace(case, observed=observed, recorded=recorded))
        if p.blocked:
            break
        observed, recorded = simulated_apply(case.spec, observed, recorded, p)
    assert strangers <= set(observed.servers)
