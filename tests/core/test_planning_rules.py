"""Table tests of the planner: one rule of docs/planning.md per test."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from reconciler.core.fleet import NodeStatus, PausedBy, ServerStatus
from reconciler.core.planning import PlanOptions, plan
from reconciler.core.plans import Action, Change, Plan
from tests.core.factories import (
    NOW,
    intent,
    node,
    pair,
    server,
    world,
)
from tests.core.factories import make_spec as spec_of


def actions(p: Plan) -> list[tuple[str, str]]:
    return [(c.action.value, c.address) for c in p.changes]


def only(p: Plan, action: Action) -> list[Change]:
    return [c for c in p.changes if c.action is action]


def guards(p: Plan) -> dict[str, bool]:
    return {w.guard: w.blocking for w in p.warnings}


# --- create ------------------------------------------------------------------------------


def test_empty_fleet_creates_every_node_with_names_plans_and_costs() -> None:
    spec = spec_of({"dallas": 2, "seattle": 1})
    p = plan(spec, *world(), NOW)
    assert actions(p) == [
        ("create", "acme-dallas-001"),
        ("create", "acme-dallas-002"),
        ("create", "acme-seattle-001"),
    ]
    first = p.changes[0]
    assert first.region == "dallas"
    assert first.plan == "baseline"
    assert first.location_id == 13
    assert first.monthly_cost_delta == Decimal("14.98")
    assert first.reason == "dallas: 0 nodes, spec wants 2"
    assert p.summary.monthly_cost_before == Decimal("0.00")
    assert p.summary.monthly_cost_after == Decimal("44.94")
    assert (p.summary.node_count_before, p.summary.node_count_after) == (0, 3)
    assert p.summary.counts["create"] == 3
    assert p.generated_at == NOW


def test_steady_fleet_plans_nothing() -> None:
    a, b = pair("acme-dallas-001", 101), pair("acme-dallas-002", 102)
    p = plan(spec_of({"dallas": 2}), *world([a[0], b[0]], [a[1], b[1]]), NOW)
    assert p.is_empty
    assert not p.warnings
    assert p.summary.monthly_cost_before == p.summary.monthly_cost_after == Decimal("29.96")
    assert p.summary.node_count_before == p.summary.node_count_after == 2


def test_missing_node_reason_and_next_sequence_skips_every_known_name() -> None:
    a = pair("acme-dallas-001", 101)
    gap = server("acme-dallas-005", 105)  # observed, unrecorded: adopted
    closed = node("acme-dallas-007", 107, status=NodeStatus.DECOMMISSIONED)
    pending = intent(1, "acme-dallas-009", age=timedelta(seconds=10))
    p = plan(spec_of({"dallas": 5}), *world([a[0], gap], [a[1], closed], [pending]), NOW)
    created = [c.address for c in only(p, Action.CREATE)]
    assert created == ["acme-dallas-010", "acme-dallas-011"]
    assert only(p, Action.CREATE)[0].reason == "dallas: 3 nodes, spec wants 5"


def test_autoscaler_count_is_clamped_and_range_defaults_to_min() -> None:
    spec = spec_of({"dallas": {"min": 1, "max": 3}, "seattle": {"min": 2, "max": 4}})
    p = plan(spec, *world(), NOW)
    assert len([c for c in p.changes if c.region == "dallas"]) == 1
    assert len([c for c in p.changes if c.region == "seattle"]) == 2
    p = plan(
        spec,
        *world(),
        NOW,
        PlanOptions(
            desired_counts={"dallas": 9, "seattle": 0},
            scaling_reasons={"dallas": "dallas: 1 -> 3 nodes, utilization 0.86 >= 0.80"},
        ),
    )
    dallas = [c for c in p.changes if c.region == "dallas"]
    assert len(dallas) == 3
    assert dallas[0].reason == "dallas: 1 -> 3 nodes, utilization 0.86 >= 0.80"
    assert len([c for c in p.changes if c.region == "seattle"]) == 2


def test_pools_fill_in_declaration_order_skipping_draining_full_and_foreign() -> None:
    pools = {
        "old": {"size": 5, "regions": ["dallas"], "status": "draining"},
        "west": {"size": 5, "regions": ["seattle"]},
        "first": {"size": 1, "regions": ["dallas"]},
        "second": {"size": 1, "regions": ["dallas"]},
    }
    p = plan(spec_of({"dallas": 3}, pools=pools), *world(), NOW)
    assert [c.pool for c in p.changes] == ["first", "second", None]
    assert p.changes[0].after == {"plan": "baseline", "location_id": "13", "pool": "first"}


def test_pool_occupancy_counts_recorded_nodes() -> None:
    pools = {
        "first": {"size": 1, "regions": ["dallas"]},
        "second": {"size": 3, "regions": ["dallas"]},
    }
    a = pair("acme-dallas-001", 101, pool="first")
    p = plan(spec_of({"dallas": 2}, pools=pools), *world([a[0]], [a[1]]), NOW)
    assert [c.pool for c in only(p, Action.CREATE)] == ["second"]


# --- unmanaged ---------------------------------------------------------------------------


def test_servers_without_our_name_shape_are_unmanaged_and_never_changed() -> None:
    strangers = [
        server("web-1", 1),
        server("acme-web", 2),  # our prefix but not <region>-<seq>
        server("other-dallas-001", 3),
        server("acme-dallas-x01", 4),
    ]
    p = plan(spec_of({"dallas": 1}), *world(strangers), NOW)
    assert [u.name for u in p.unmanaged] == [
        "acme-dallas-x01",
        "acme-web",
        "other-dallas-001",
        "web-1",
    ]
    assert actions(p) == [("create", "acme-dallas-001")]
    assert all(c.service_id not in {1, 2, 3, 4} for c in p.changes)
    assert p.summary.node_count_before == 0


# --- intents (design §3) -----------------------------------------------------------------


def test_pending_intent_found_is_resolved_not_recreated_nor_adopted() -> None:
    found = server("acme-dallas-001", 101, status=ServerStatus.BUILD)
    p = plan(spec_of({"dallas": 1}), *world([found], [], [intent(7, "acme-dallas-001")]), NOW)
    assert actions(p) == [("resolve", "acme-dallas-001")]
    change = p.changes[0]
    assert change.service_id == 101
    assert change.after is not None
    assert change.after["found"] == "yes"
    assert "observed" in change.reason


def test_pending_intent_found_but_failed_is_adopted_out_of_rotation_and_destroyed() -> None:
    broken = server("acme-dallas-001", 101, status=ServerStatus.ERROR)
    p = plan(spec_of({"dallas": 1}), *world([broken], [], [intent(7, "acme-dallas-001")]), NOW)
    assert actions(p) == [
        ("adopt", "acme-dallas-001"),
        ("destroy", "acme-dallas-001"),
        ("create", "acme-dallas-002"),
    ]
    assert p.changes[0].after == {
        "service_id": "101",
        "plan": "baseline",
        "intent_ids": "7",
        "status": "draining",
    }


def test_pending_intent_not_found_waits_for_the_grace_then_recreates() -> None:
    spec = spec_of({"dallas": 2})
    young = intent(7, "acme-dallas-001", age=timedelta(minutes=1))
    p = plan(spec, *world([], [], [young]), NOW)
    assert actions(p) == [("resolve", "acme-dallas-001"), ("create", "acme-dallas-002")]
    resolve = p.changes[0]
    assert resolve.after is not None
    assert resolve.after["grace_until"] == (NOW + timedelta(minutes=4)).isoformat()
    assert "wait" in resolve.reason
    old = intent(7, "acme-dallas-001", age=timedelta(hours=2))
    p = plan(spec, *world([], [], [old]), NOW)
    resolve = p.changes[0]
    assert resolve.after is not None
    assert resolve.after["recreate"] == "yes"
    assert "create it anew" in resolve.reason
    assert resolve.monthly_cost_delta == Decimal("14.98")
    assert p.summary.node_count_after == 2


def test_pending_intent_beyond_the_desired_count_is_not_recreated() -> None:
    a = pair("acme-dallas-001", 101)
    p = plan(spec_of({"dallas": 1}), *world([a[0]], [a[1]], [intent(3, "acme-dallas-002")]), NOW)
    assert actions(p) == [("resolve", "acme-dallas-002")]
    assert p.changes[0].after is not None
    assert p.changes[0].after["recreate"] == "no"
    assert p.changes[0].monthly_cost_delta == 0


# --- adopt -------------------------------------------------------------------------------


def test_unrecorded_server_with_our_name_is_adopted_with_its_plan() -> None:
    stray = server("acme-dallas-004", 104, plan="baseline")
    p = plan(spec_of({"dallas": {"plan": "large", "nodes": 1}}), *world([stray]), NOW)
    adopt = only(p, Action.ADOPT)
    assert [c.address for c in adopt] == ["acme-dallas-004"]
    assert adopt[0].plan == "baseline"
    assert adopt[0].service_id == 104
    assert adopt[0].region == "dallas"
    # the spec's plan wins afterwards: resize it
    assert [c.action for c in p.changes] == [Action.ADOPT, Action.RESIZE]
    assert not only(p, Action.CREATE)


def test_adopted_server_in_a_removed_region_is_adopted_out_of_rotation_destroyed_next_run() -> None:
    # paris is no longer in the spec but the store still records a node there: its servers
    # are ours. An unrecorded one is adopted out of rotation, never destroyed in the run that
    # discovers it (issue 9); the next run removes it.
    stray = server("acme-paris-002", 202)
    old = node("acme-paris-001", None, status=NodeStatus.DRAINING)
    keep = pair("acme-dallas-001", 101)
    p = plan(
        spec_of({"dallas": 1}),
        *world([stray, keep[0]], [keep[1], old]),
        NOW,
        PlanOptions(allow_mass_destroy=True),
    )
    assert actions(p) == [("forget", "acme-paris-001"), ("adopt", "acme-paris-002")]
    assert p.changes[1].after is not None
    assert p.changes[1].after["status"] == "draining"
    recorded = node("acme-paris-002", 202, status=NodeStatus.DRAINING)
    p = plan(
        spec_of({"dallas": 1}),
        *world([stray, keep[0]], [keep[1], recorded]),
        NOW,
        PlanOptions(allow_mass_destroy=True),
    )
    assert actions(p) == [("destroy", "acme-paris-002")]
    assert p.changes[0].reason.startswith("region paris is not in the spec")


def test_duplicate_name_is_reported_and_never_touched() -> None:
    a = pair("acme-dallas-001", 101)
    twin = server("acme-dallas-001", 555)
    p = plan(spec_of({"dallas": 1}), *world([a[0], twin], [a[1]]), NOW)
    assert p.is_empty
    assert "duplicate_name" in guards(p)
    assert p.summary.node_count_before == 2


# --- the node pipeline (design §3b) ------------------------------------------------------


def test_pipeline_resumes_at_the_first_unfinished_step() -> None:
    spec = spec_of({"dallas": 3})
    s1, s2, s3 = (
        server("acme-dallas-001", 101),
        server("acme-dallas-002", 102),
        server("acme-dallas-003", 103, status=ServerStatus.BUILD, ip=None),
    )
    n1 = node("acme-dallas-001", 101, status=NodeStatus.PROVISIONING, rdns_done=False, ip=None)
    n2 = node("acme-dallas-002", 102, status=NodeStatus.PROVISIONING, rdns_done=True)
    n3 = node("acme-dallas-003", 103, status=NodeStatus.PROVISIONING, rdns_done=False, ip=None)
    p = plan(spec, *world([s1, s2, s3], [n1, n2, n3]), NOW)
    assert actions(p) == [
        ("set_rdns", "acme-dallas-001"),
        ("activate", "acme-dallas-001"),
        ("activate", "acme-dallas-002"),
    ]
    assert p.changes[0].after == {"rdns": "acme-dallas-001", "ip": s1.main_ip}
    assert p.changes[1].after == {"status": "warming"}
    assert any("acme-dallas-003" in note and "BUILD" in note for note in p.notes)


def test_warming_node_graduates_to_active_when_its_schedule_ends() -> None:
    spec = spec_of({"dallas": 2})
    # the standard preset lasts 42 days: day 43 is past it, day 10 is not
    done = node(
        "acme-dallas-001",
        101,
        status=NodeStatus.WARMING,
        warmup_started_at=NOW - timedelta(days=43),
    )
    young = node(
        "acme-dallas-002", 102, status=NodeStatus.WARMING, warmup_started_at=NOW - timedelta(days=9)
    )
    servers = [server("acme-dallas-001", 101), server("acme-dallas-002", 102)]
    p = plan(spec, *world(servers, [done, young]), NOW)
    assert actions(p) == [("activate", "acme-dallas-001")]
    assert p.changes[0].before == {"status": "warming"}
    assert p.changes[0].after == {"status": "active"}
    assert "warmup" in p.changes[0].reason
    # an unhealthy warming node does not graduate
    sick = plan(
        spec,
        *world(servers, [done, young]),
        NOW,
        PlanOptions(unhealthy=frozenset({"acme-dallas-001"})),
    )
    assert ("activate", "acme-dallas-001") not in actions(sick)


def test_a_vertical_scale_up_the_spec_allows_is_kept_by_a_plain_run() -> None:
    region = {"plan": "baseline", "nodes": 2, "vertical_plans": ["large"]}
    spec = spec_of({"dallas": region})
    up = pair("acme-dallas-001", 101, plan="large")
    other = pair("acme-dallas-002", 102, plan="small")  # not an allowed vertical plan
    p = plan(spec, *world([up[0], other[0]], [up[1], other[1]]), NOW)
    assert actions(p) == [("resize", "acme-dallas-002")]
    assert p.changes[0].after == {"plan": "baseline"}


def test_a_plan_with_a_smaller_disk_is_never_resized_to_and_says_why() -> None:
    spec = spec_of({"dallas": {"plan": "small", "nodes": 1}})
    srv, rec = pair("acme-dallas-001", 101, plan="baseline")
    p = plan(spec, *world([srv], [rec]), NOW)
    assert actions(p) == []
    (warning,) = [w for w in p.warnings if w.guard == "disk_downgrade"]
    assert "acme-dallas-001 (baseline -> small)" in warning.message
    assert not warning.blocking
    assert warning.hint is not None


def test_failed_build_is_destroyed_and_replaced() -> None:
    bad = server("acme-dallas-001", 101, status=ServerStatus.ERROR)
    rec = node("acme-dallas-001", 101, status=NodeStatus.PROVISIONING, rdns_done=False)
    p = plan(spec_of({"dallas": 1}), *world([bad], [rec]), NOW)
    assert actions(p) == [("destroy", "acme-dallas-001"), ("create", "acme-dallas-002")]
    assert "build failed" in p.changes[0].reason
    assert not p.blocked  # a failed build is not a mass delete


# --- drift -------------------------------------------------------------------------------


def test_server_deleted_behind_our_back_is_forgotten_and_replaced() -> None:
    rec = node("acme-dallas-001", 101)
    p = plan(spec_of({"dallas": 1}), *world([], [rec]), NOW)
    assert actions(p) == [("forget", "acme-dallas-001"), ("create", "acme-dallas-002")]
    assert p.changes[0].drift
    assert "behind our back" in p.changes[0].reason


def test_a_service_id_now_carrying_another_name_is_not_this_node() -> None:
    rec = node("acme-dallas-001", 101)
    other = server("acme-dallas-007", 101)  # same id, another name: not this node's server
    p = plan(spec_of({"dallas": 1}), *world([other], [rec]), NOW)
    assert actions(p) == [("forget", "acme-dallas-001"), ("adopt", "acme-dallas-007")]


def test_record_of_our_own_destroy_is_forgotten_without_drift() -> None:
    rec = node("acme-dallas-002", 102, status=NodeStatus.DRAINING)
    a = pair("acme-dallas-001", 101)
    p = plan(
        spec_of({"dallas": 1}),
        *world([a[0]], [a[1], rec], [intent(4, "acme-dallas-002", kind="destroy")]),
        NOW,
    )
    assert actions(p) == [("forget", "acme-dallas-002")]
    assert not p.changes[0].drift


def test_ip_changed_behind_our_back_is_repaired_as_drift() -> None:
    srv = server("acme-dallas-001", 101, ip="203.0.113.9")
    rec = node("acme-dallas-001", 101)
    p = plan(spec_of({"dallas": 1}), *world([srv], [rec]), NOW)
    assert actions(p) == [("repair", "acme-dallas-001")]
    change = p.changes[0]
    assert change.drift
    assert change.before == {"ip": rec.ip_address}
    assert change.after == {"ip": "203.0.113.9"}


def test_resized_behind_our_back_is_repaired_then_resized_back() -> None:
    srv = server("acme-dallas-001", 101, plan="baseline")
    rec = node("acme-dallas-001", 101, plan="large")
    spec = spec_of({"dallas": {"plan": "large", "nodes": 1}})
    p = plan(spec, *world([srv], [rec]), NOW)
    assert actions(p) == [("repair", "acme-dallas-001"), ("resize", "acme-dallas-001")]
    repair, resize = p.changes
    assert repair.before == {"plan": "large"}
    assert repair.after == {"plan": "baseline"}
    assert resize.before == {"plan": "baseline"}
    assert resize.after == {"plan": "large"}
    assert resize.monthly_cost_delta == Decimal("10.00")
    assert p.summary.monthly_cost_before == Decimal("14.98")


def test_upsized_behind_our_back_is_repaired_but_not_shrunk_back() -> None:
    srv = server("acme-dallas-001", 101, plan="large")
    rec = node("acme-dallas-001", 101, plan="baseline")
    p = plan(spec_of({"dallas": 1}), *world([srv], [rec]), NOW)
    assert actions(p) == [("repair", "acme-dallas-001")]
    assert [w.guard for w in p.warnings] == ["disk_downgrade"]
    assert p.summary.monthly_cost_before == Decimal("24.98")


# --- resize ------------------------------------------------------------------------------


def test_resizes_roll_within_the_disruption_budget() -> None:
    pairs = [pair(f"acme-dallas-00{i}", 100 + i, plan="small") for i in (1, 2, 3)]
    spec = spec_of({"dallas": 3})
    p = plan(spec, *world([s for s, _ in pairs], [n for _, n in pairs]), NOW)
    assert actions(p) == [("resize", "acme-dallas-001")]
    assert p.changes[0].monthly_cost_delta == Decimal("5.00")
    assert p.changes[0].before == {"plan": "small"}
    assert p.changes[0].plan == "baseline"
    assert guards(p) == {"disruption_budget": False}
    assert "2 more resize(s) wait for the disruption budget" in p.warnings[0].message


def test_no_resize_while_the_budget_is_used_by_an_unavailable_node() -> None:
    pairs = [pair(f"acme-dallas-00{i}", 100 + i, plan="small") for i in (1, 2)]
    down = pair("acme-dallas-003", 103, status=NodeStatus.MAINTENANCE)
    servers = [s for s, _ in pairs] + [down[0]]
    p = plan(spec_of({"dallas": 3}), *world(servers, [n for _, n in pairs] + [down[1]]), NOW)
    assert p.is_empty
    assert guards(p) == {"disruption_budget": False}


def test_resize_in_progress_is_finished_without_using_the_budget() -> None:
    busy = server("acme-dallas-001", 101, status=ServerStatus.RESIZED, plan="small")
    rec = node("acme-dallas-001", 101, plan="small")
    p = plan(spec_of({"dallas": 1}), *world([busy], [rec]), NOW)
    assert actions(p) == [("resize", "acme-dallas-001")]
    assert "RESIZED" in p.changes[0].reason


def test_vertical_scaling_target_from_options() -> None:
    a = pair("acme-dallas-001", 101)
    p = plan(
        spec_of({"dallas": 1}),
        *world([a[0]], [a[1]]),
        NOW,
        PlanOptions(node_plans={"acme-dallas-001": "large"}),
    )
    assert actions(p) == [("resize", "acme-dallas-001")]
    assert p.changes[0].plan == "large"


# --- scale-down --------------------------------------------------------------------------


def test_victims_are_unhealthy_then_paused_then_least_warmed_then_highest_seq() -> None:
    old = NOW - timedelta(days=50)
    recent = NOW - timedelta(days=2)
    nodes = [
        pair("acme-dallas-001", 101, status=NodeStatus.ACTIVE, warmup_started_at=old),
        pair("acme-dallas-002", 102, status=NodeStatus.PAUSED, warmup_started_at=old),
        pair("acme-dallas-003", 103, status=NodeStatus.WARMING, warmup_started_at=recent),
        pair("acme-dallas-004", 104, status=NodeStatus.UNHEALTHY, warmup_started_at=old),
        pair("acme-dallas-005", 105, status=NodeStatus.ACTIVE, warmup_started_at=old),
    ]
    servers, records = [s for s, _ in nodes], [n for _, n in nodes]
    opts = PlanOptions(allow_mass_destroy=True)
    for wanted, victims in [
        (4, ["acme-dallas-004"]),
        (3, ["acme-dallas-002", "acme-dallas-004"]),
        (2, ["acme-dallas-002", "acme-dallas-003", "acme-dallas-004"]),
        (1, ["acme-dallas-002", "acme-dallas-003", "acme-dallas-004", "acme-dallas-005"]),
    ]:
        spec = spec_of({"dallas": wanted}, disruption={"max_unavailable": 5})
        p = plan(spec, *world(servers, records), NOW, opts)
        touched = sorted({c.address for c in p.changes})
        assert touched == victims, wanted


def test_nodes_in_rotation_drain_first_then_are_destroyed() -> None:
    a, b = pair("acme-dallas-001", 101), pair("acme-dallas-002", 102)
    spec = spec_of({"dallas": 1})
    # the daemon (queue figures known): drain now, destroy once the queue is empty
    p = plan(spec, *world([a[0], b[0]], [a[1], b[1]]), NOW, PlanOptions(metrics_known=True))
    assert actions(p) == [("drain", "acme-dallas-002")]
    assert p.changes[0].after == {"status": "draining"}
    assert p.changes[0].reason.startswith("dallas: 2 nodes, spec wants 1")
    # a CLI run (no queue figures): drained at once, so destroyed right after, same apply
    p = plan(spec, *world([a[0], b[0]], [a[1], b[1]]), NOW)
    assert actions(p) == [("drain", "acme-dallas-002"), ("destroy", "acme-dallas-002")]
    assert "no queue data" in p.changes[1].reason
    draining = node("acme-dallas-002", 102, status=NodeStatus.DRAINING)
    state = world([a[0], b[0]], [a[1], draining])
    p = plan(spec, *state, NOW)  # CLI: no queue data -> counts as drained
    assert actions(p) == [("destroy", "acme-dallas-002")]
    assert p.changes[0].monthly_cost_delta == Decimal("-14.98")
    p = plan(spec, *state, NOW, PlanOptions(metrics_known=True))
    assert p.is_empty
    assert any("waiting for its queue" in n for n in p.notes)
    p = plan(
        spec,
        *state,
        NOW,
        PlanOptions(metrics_known=True, queue_empty=frozenset({"acme-dallas-002"})),
    )
    assert actions(p) == [("destroy", "acme-dallas-002")]


def test_draining_node_past_the_drain_timeout_is_destroyed() -> None:
    a = pair("acme-dallas-001", 101)
    b = pair("acme-dallas-002", 102)
    stuck = replace(b[1], status=NodeStatus.DRAINING, status_changed_at=NOW - timedelta(minutes=31))
    options = PlanOptions(metrics_known=True)
    p = plan(spec_of({"dallas": 1}), *world([a[0], b[0]], [a[1], stuck]), NOW, options)
    assert actions(p) == [("destroy", "acme-dallas-002")]
    assert "drain timeout" in p.changes[0].reason
    recent = replace(stuck, status_changed_at=NOW - timedelta(minutes=5))
    p = plan(spec_of({"dallas": 1}), *world([a[0], b[0]], [a[1], recent]), NOW, options)
    assert p.is_empty


def test_draining_node_no_longer_surplus_is_resumed() -> None:
    a = pair("acme-dallas-001", 101)
    b = pair(
        "acme-dallas-002",
        102,
        status=NodeStatus.DRAINING,
        warmup_started_at=NOW - timedelta(days=60),
    )
    p = plan(spec_of({"dallas": 2}), *world([a[0], b[0]], [a[1], b[1]]), NOW)
    assert actions(p) == [("resume", "acme-dallas-002")]
    assert p.changes[0].after == {"status": "active"}  # the 42-day warmup is over
    young = node("acme-dallas-002", 102, status=NodeStatus.DRAINING, warmup_started_at=NOW)
    p = plan(spec_of({"dallas": 2}), *world([a[0], b[0]], [a[1], young]), NOW)
    assert p.changes[0].after == {"status": "warming"}


@pytest.mark.parametrize(
    "how",
    ["spec", "region", "store", "record"],
)
def test_protected_nodes_are_never_destroyed(how: str) -> None:
    name = "acme-dallas-002"
    regions: dict[str, Any] = {"dallas": 1}
    extra: dict[str, Any] = {}
    protected_names: frozenset[str] = frozenset()
    if how == "spec":
        extra["disruption"] = {"protected": [name], "max_unavailable": 3}
    if how == "region":
        regions = {"dallas": {"plan": "baseline", "nodes": 1, "protected": [name]}}
    if how == "store":
        protected_names = frozenset({name})
    a = pair("acme-dallas-001", 101, status=NodeStatus.PAUSED)
    b = pair(name, 102, status=NodeStatus.PAUSED, protected=how == "record")
    spec = spec_of(regions, **extra)
    p = plan(spec, *world([a[0], b[0]], [a[1], b[1]], protected_names=protected_names), NOW)
    assert actions(p) == [("destroy", "acme-dallas-001")]  # the other one goes instead
    spec0 = (
        spec_of({"dallas": 0}, **extra)
        if how != "region"
        else spec_of({"dallas": {"plan": "baseline", "nodes": 0, "protected": [name]}})
    )
    p = plan(
        spec0,
        *world([a[0], b[0]], [a[1], b[1]], protected_names=protected_names),
        NOW,
        PlanOptions(allow_mass_destroy=True),
    )
    assert name not in [c.address for c in p.changes]
    assert "protected" in guards(p)


def test_failed_protected_node_is_kept_with_a_warning() -> None:
    bad = server("acme-dallas-001", 101, status=ServerStatus.ERROR)
    rec = node("acme-dallas-001", 101, protected=True)
    p = plan(spec_of({"dallas": 1}), *world([bad], [rec]), NOW)
    assert actions(p) == [("create", "acme-dallas-002")]
    assert guards(p) == {"protected": False}


# --- guards ------------------------------------------------------------------------------


def test_destroys_beyond_the_per_run_budget_wait() -> None:
    bad = [server(f"acme-dallas-00{i}", 100 + i, status=ServerStatus.ERROR) for i in range(1, 5)]
    records = [
        node(s.name, s.service_id, status=NodeStatus.PROVISIONING, rdns_done=False) for s in bad
    ]
    spec = spec_of({"dallas": 4}, disruption={"max_destroys_per_run": 2})
    p = plan(spec, *world(bad, records), NOW)
    assert len(only(p, Action.DESTROY)) == 2
    assert len(only(p, Action.CREATE)) == 4
    assert guards(p) == {"destroy_budget": False}
    assert "2 more destroy(s)" in p.warnings[0].message


def test_emptying_a_region_is_refused_unless_allowed() -> None:
    keep = [pair(f"acme-dallas-00{i}", 100 + i) for i in (1, 2, 3)]
    gone = pair("acme-paris-001", 201, status=NodeStatus.PAUSED)
    state = world([s for s, _ in keep] + [gone[0]], [n for _, n in keep] + [gone[1]])
    spec = spec_of({"dallas": 3})
    p = plan(spec, *state, NOW)
    assert p.blocked
    (warning,) = p.warnings
    assert warning.guard == "mass_delete"
    assert warning.blocking
    assert "every node of paris" in warning.message
    assert warning.hint == "re-run with --allow-mass-destroy if this is intended"
    assert actions(p) == [("destroy", "acme-paris-001")]  # shown, refused as a whole
    p = plan(spec, *state, NOW, PlanOptions(allow_mass_destroy=True))
    assert not p.blocked
    assert guards(p) == {"mass_delete": False}


def test_removing_more_than_the_threshold_is_refused() -> None:
    nodes = [pair(f"acme-dallas-00{i}", 100 + i, status=NodeStatus.PAUSED) for i in range(1, 5)]
    state = world([s for s, _ in nodes], [n for _, n in nodes])
    p = plan(spec_of({"dallas": 3}), *state, NOW)  # 1 of 4 = 25 %: allowed
    assert not p.blocked
    threshold = spec_of({"dallas": 2}).disruption.mass_delete_threshold
    assert threshold == 0.5
    p = plan(spec_of({"dallas": 2}), *state, NOW)  # 2 of 4 = 50 %: at the threshold
    assert p.blocked
    assert "at or over the 50% threshold" in p.warnings[0].message
    p = plan(spec_of({"dallas": 1}), *state, NOW)  # 3 of 4 = 75 %
    assert p.blocked
    assert "removes 3 of 4 nodes" in p.warnings[0].message


def test_budget_guard_blocks_a_plan_that_raises_cost_over_budget() -> None:
    spec = spec_of({"dallas": 3}, costs={"monthly_budget": "30"})
    p = plan(spec, *world(), NOW)
    assert p.blocked
    assert guards(p) == {"budget": True}
    assert p.summary.monthly_budget == Decimal("30")


# --- health (daemon) ---------------------------------------------------------------------


def test_unhealthy_nodes_leave_rotation_and_are_replaced_after_the_grace() -> None:
    a, b = pair("acme-dallas-001", 101), pair("acme-dallas-002", 102)
    state = world([a[0], b[0]], [a[1], b[1]])
    spec = spec_of({"dallas": 2})
    p = plan(spec, *state, NOW, PlanOptions(unhealthy=frozenset({"acme-dallas-001"})))
    assert actions(p) == [("pause", "acme-dallas-001")]
    assert p.changes[0].after == {"status": "unhealthy"}
    p = plan(
        spec,
        *state,
        NOW,
        PlanOptions(
            unhealthy=frozenset({"acme-dallas-001"}),
            replace_unhealthy=frozenset({"acme-dallas-001"}),
        ),
    )
    assert actions(p) == [("destroy", "acme-dallas-001"), ("create", "acme-dallas-003")]


def test_unhealthy_replacements_wait_for_the_destroy_budget_as_any_destroy() -> None:
    """Replacing unhealthy nodes goes through the guards and the disruption budget of any
    destroy (issue 10): of four to replace, two destroys a run (the new servers are created
    meanwhile), and destroying half the region at once is refused as a mass delete unless
    allowed; one of four to replace passes."""
    nodes = [pair(f"acme-dallas-00{i}", 100 + i) for i in range(1, 5)]
    state = world([s for s, _ in nodes], [n for _, n in nodes])
    names = frozenset(n.name for _, n in nodes)
    spec = spec_of({"dallas": 4}, disruption={"max_destroys_per_run": 2})
    p = plan(spec, *state, NOW, PlanOptions(unhealthy=names, replace_unhealthy=names))
    assert len(only(p, Action.DESTROY)) == 2
    assert len(only(p, Action.CREATE)) == 4
    assert guards(p) == {"destroy_budget": False, "mass_delete": True}
    assert p.blocked
    one = frozenset({"acme-dallas-001"})
    p = plan(spec, *state, NOW, PlanOptions(unhealthy=one, replace_unhealthy=one))
    assert actions(p) == [("destroy", "acme-dallas-001"), ("create", "acme-dallas-005")]
    assert not p.blocked


def test_node_that_comes_back_returns_to_rotation() -> None:
    a = pair("acme-dallas-001", 101, status=NodeStatus.UNHEALTHY)
    state = world([a[0]], [a[1]])
    spec = spec_of({"dallas": 1})
    assert plan(spec, *state, NOW).is_empty  # CLI: no health data, leave it
    p = plan(spec, *state, NOW, PlanOptions(metrics_known=True))
    assert actions(p) == [("resume", "acme-dallas-001")]


def test_reputation_pauses_a_listed_node_and_resumes_it_when_clear() -> None:
    a, b = pair("acme-dallas-001", 101), pair("acme-dallas-002", 102)
    state = world([a[0], b[0]], [a[1], b[1]])
    spec = spec_of({"dallas": 2})
    assert plan(spec, *state, NOW, PlanOptions(reputation_paused={})).is_empty
    held = {"acme-dallas-001": "listed on zen.spamhaus.org (SBL, 127.0.0.2)"}
    p = plan(spec, *state, NOW, PlanOptions(reputation_paused=held))
    assert actions(p) == [("pause", "acme-dallas-001")]
    (change,) = p.changes
    assert change.status is NodeStatus.PAUSED
    assert "zen.spamhaus.org" in change.reason
    # a paused node stays paused while the reputation says so, resumes when it is clear,
    # and a CLI run (no assessment) leaves it alone
    paused = pair("acme-dallas-001", 101, status=NodeStatus.PAUSED)
    paused = (paused[0], replace(paused[1], paused_by=PausedBy.REPUTATION))
    state = world([paused[0], b[0]], [paused[1], b[1]])
    assert plan(spec, *state, NOW, PlanOptions(reputation_paused=held)).is_empty
    assert plan(spec, *state, NOW).is_empty
    p = plan(spec, *state, NOW, PlanOptions(reputation_paused={}))
    assert actions(p) == [("resume", "acme-dallas-001")]
    assert p.changes[0].status in (NodeStatus.ACTIVE, NodeStatus.WARMING)
    assert change.paused_by is PausedBy.REPUTATION
    # missed heartbeats win: an unhealthy node is paused as unhealthy, not twice
    p = plan(
        spec,
        *world([a[0], b[0]], [a[1], b[1]]),
        NOW,
        PlanOptions(unhealthy=frozenset({"acme-dallas-001"}), reputation_paused=held),
    )
    assert [c.status for c in p.changes] == [NodeStatus.UNHEALTHY]
    assert [c.paused_by for c in p.changes] == [PausedBy.HEALTH]


@pytest.mark.parametrize("owner", [None, PausedBy.OPERATOR, PausedBy.HEALTH])
def test_a_delisting_resumes_only_what_reputation_paused(owner: PausedBy | None) -> None:
    """A node paused by someone else (an operator, the health rule, an unknown owner) stays
    paused when reputation is clear: the delisting resumes only its own pauses."""
    a, b = pair("acme-dallas-001", 101, status=NodeStatus.PAUSED), pair("acme-dallas-002", 102)
    state = world([a[0], b[0]], [replace(a[1], paused_by=owner), b[1]])
    spec = spec_of({"dallas": 2})
    p = plan(spec, *state, NOW, PlanOptions(reputation_paused={}, metrics_known=True))
    assert actions(p) == []
    assert any("not by reputation" in note for note in p.notes)


def test_health_hands_a_recovered_node_to_the_reputation_pause() -> None:
    """Unhealthy and listed: when its heartbeats come back it goes straight to a reputation
    pause (never into rotation in between), and the pause is then reputation's."""
    a, b = pair("acme-dallas-001", 101, status=NodeStatus.UNHEALTHY), pair("acme-dallas-002", 102)
    state = world([a[0], b[0]], [replace(a[1], paused_by=PausedBy.HEALTH), b[1]])
    spec = spec_of({"dallas": 2})
    held = {"acme-dallas-001": "listed on zen.spamhaus.org (SBL, 127.0.0.2)"}
    p = plan(spec, *state, NOW, PlanOptions(reputation_paused=held, metrics_known=True))
    assert actions(p) == [("pause", "acme-dallas-001")]
    assert (p.changes[0].status, p.changes[0].paused_by) == (
        NodeStatus.PAUSED,
        PausedBy.REPUTATION,
    )
    p = plan(spec, *state, NOW, PlanOptions(reputation_paused={}, metrics_known=True))
    assert actions(p) == [("resume", "acme-dallas-001")]


# --- determinism and order ---------------------------------------------------------------


def test_changes_are_sorted_by_region_address_and_action_order() -> None:
    stray = server("acme-seattle-004", 304, plan="small")
    bad = server("acme-dallas-001", 101, status=ServerStatus.ERROR)
    p = plan(
        spec_of({"dallas": 1, "seattle": 1}),
        *world([stray, bad], [node("acme-dallas-001", 101)]),
        NOW,
        PlanOptions(spec_hash="abc"),
    )
    assert actions(p) == [
        ("destroy", "acme-dallas-001"),
        ("create", "acme-dallas-002"),
        ("adopt", "acme-seattle-004"),
        ("resize", "acme-seattle-004"),
    ]
    assert p.spec_hash == "abc"


def test_a_host_key_quarantine_pauses_the_node_and_its_release_resumes_it() -> None:
    a = pair("acme-dallas-001", 101)
    spec = spec_of({"dallas": 1})
    state = world([a[0]], [replace(a[1], quarantine="host key changed")])
    p = plan(spec, *state, NOW, PlanOptions(reputation_paused={}))
    assert actions(p) == [("pause", "acme-dallas-001")]
    assert p.changes[0].paused_by is PausedBy.QUARANTINE
    # still quarantined: nothing, whatever reputation says
    held = replace(a[1], quarantine="host key changed", status=NodeStatus.PAUSED)
    held = replace(held, paused_by=PausedBy.QUARANTINE)
    assert plan(spec, *world([a[0]], [held]), NOW, PlanOptions(reputation_paused={})).is_empty
    # released (also by the CLI, which has no reputation assessment): back into rotation
    released = replace(held, quarantine=None)
    for options in (PlanOptions(), PlanOptions(reputation_paused={})):
        p = plan(spec, *world([a[0]], [released]), NOW, options)
        assert actions(p) == [("resume", "acme-dallas-001")]


def test_a_server_being_adopted_is_not_reported_as_a_stalled_provisioning_node() -> None:
    # the adoption is this run's work for it: the "waiting on a pipeline step with nothing to
    # do" warning is for recorded nodes only (found by the planner's speed work)
    provisioning = {"domain": "mail.example.com", "sink": "probe@sink.example.com"}
    stray = server("acme-dallas-004", 104, plan="baseline")
    adopting = plan(
        spec_of({"dallas": {"plan": "baseline", "nodes": 1}}, provisioning=provisioning),
        *world([stray]),
        NOW,
    )
    assert [c.action for c in adopting.changes] == [Action.ADOPT]
    assert "provisioning" not in guards(adopting)


def test_an_unhealthy_node_a_run_without_heartbeats_cannot_resume_is_not_settled() -> None:
    # found by the stateful apply test: a node paused because its server was suspended stayed
    # out of rotation after the server ran again, and the CLI said the fleet matched the spec
    observed, recorded = pair("acme-dallas-001", 101)
    sick = replace(recorded, status=NodeStatus.UNHEALTHY, paused_by=PausedBy.HEALTH)
    cli = plan(spec_of({"dallas": 1}), *world([observed], [sick]), NOW)
    assert not cli.changes
    assert guards(cli) == {"unhealthy": False}
    assert [w.guard for w in cli.unsettled] == ["unhealthy"]
    assert "acme-dallas-001" in cli.warnings[0].message
    # the daemon sees heartbeats: healthy again means back into rotation, nothing unsettled
    daemon = plan(
        spec_of({"dallas": 1}), *world([observed], [sick]), NOW, PlanOptions(metrics_known=True)
    )
    assert [c.action for c in daemon.changes] == [Action.RESUME]
    assert not daemon.unsettled
