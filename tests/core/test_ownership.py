"""Own only what is ours (issue 9): a server is the fleet's only when its name parses exactly as
``<fleet>-<region>-<seq>`` with a region of the spec or of the store; anything else is reported
and never touched; a server discovered unrecorded is adopted, never destroyed in that run."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.fleet import NodeStatus, ServerStatus
from reconciler.core.planning import PlanOptions, plan
from reconciler.core.plans import Action, Plan
from tests.core.factories import NOW, intent, node, pair, server, world
from tests.core.factories import make_spec as spec_of


def actions(p: Plan) -> list[tuple[str, str]]:
    return [(c.action.value, c.address) for c in p.changes]


def guards(p: Plan) -> dict[str, bool]:
    return {w.guard: w.blocking for w in p.warnings}


def touched(p: Plan) -> set[int]:
    return {c.service_id for c in p.changes if c.service_id is not None}


def test_another_fleet_whose_name_extends_ours_is_never_touched() -> None:
    # fleet "acme" and fleet "acme-eu" share the account: acme-eu-dallas-001 parses as
    # acme's region "eu-dallas", which is neither in acme's spec nor in its store
    theirs = [server("acme-eu-dallas-001", 901), server("acme-eu-dallas-002", 902)]
    ours = pair("acme-dallas-001", 101)
    p = plan(spec_of({"dallas": 1}), *world([*theirs, ours[0]], [ours[1]]), NOW)
    assert p.is_empty
    assert not touched(p) & {901, 902}
    assert {u.name for u in p.unmanaged} == {"acme-eu-dallas-001", "acme-eu-dallas-002"}
    assert guards(p) == {"not_ours": False}  # reported, never blocking
    warning = p.warnings[0]
    assert "acme-eu-dallas-001 (#901)" in warning.message
    assert p.summary.node_count_before == 1


def test_names_that_do_not_parse_are_reported_and_do_not_block_the_plan() -> None:
    odd = [server("acme-dallas-1", 1), server("acme-web", 2), server("acme-dallas-001-old", 3)]
    p = plan(spec_of({"dallas": 1}), *world(odd), NOW)
    assert actions(p) == [("create", "acme-dallas-001")]
    assert not p.blocked
    assert "not_ours" in guards(p)
    assert not touched(p) & {1, 2, 3}


def test_a_region_removed_from_the_spec_but_recorded_still_owns_its_servers() -> None:
    old = pair("acme-paris-001", 201)
    keep = pair("acme-dallas-001", 101)
    p = plan(
        spec_of({"dallas": 1}),
        *world([old[0], keep[0]], [old[1], keep[1]]),
        NOW,
        PlanOptions(allow_mass_destroy=True),
    )
    assert ("drain", "acme-paris-001") in actions(p)
    assert "not_ours" not in guards(p)


def test_a_pending_intents_region_is_known() -> None:
    pending = replace(intent(7, "acme-paris-001"), params={"region": "paris"})
    found = server("acme-paris-001", 201)
    p = plan(
        spec_of({"dallas": 0}),
        *world([found], [], [pending]),
        NOW,
        PlanOptions(allow_mass_destroy=True),
    )
    assert ("adopt", "acme-paris-001") in actions(p)


def test_an_unrecorded_server_in_an_unknown_region_is_not_ours() -> None:
    stray = server("acme-paris-001", 201)
    keep = pair("acme-dallas-001", 101)
    p = plan(spec_of({"dallas": 1}), *world([stray, keep[0]], [keep[1]]), NOW)
    assert p.is_empty
    assert 201 not in touched(p)
    assert "not_ours" in guards(p)


def test_an_unrecorded_server_is_adopted_and_not_destroyed_in_the_run_that_finds_it() -> None:
    a, b = pair("acme-dallas-001", 101), pair("acme-dallas-002", 102)
    stray = server("acme-dallas-003", 103)
    p = plan(spec_of({"dallas": 2}), *world([a[0], b[0], stray], [a[1], b[1]]), NOW)
    # surplus of one, but no destroy or drain falls on anything in the discovery run
    assert [c.action for c in p.changes] == [Action.ADOPT, Action.SET_RDNS, Action.ACTIVATE][
        : len(p.changes)
    ]
    assert not [c for c in p.changes if c.action in (Action.DESTROY, Action.DRAIN)]
    assert not [c for c in p.changes if c.action is Action.CREATE]
    assert any("adopted this run" in note for note in p.notes)


def test_an_unrecorded_failed_server_is_adopted_out_of_rotation_not_destroyed_yet() -> None:
    broken = server("acme-dallas-004", 104, status=ServerStatus.ERROR)
    p = plan(spec_of({"dallas": 1}), *world([broken]), NOW)
    assert actions(p) == [("adopt", "acme-dallas-004"), ("create", "acme-dallas-005")]
    assert p.changes[0].after is not None
    assert p.changes[0].after["status"] == "draining"
    # the next run (recorded now) destroys it
    assert p.changes[0].status is NodeStatus.DRAINING
    recorded = node("acme-dallas-004", 104, status=NodeStatus.DRAINING)
    later = plan(spec_of({"dallas": 1}), *world([broken], [recorded]), NOW)
    assert ("destroy", "acme-dallas-004") in actions(later)


def test_a_server_renamed_to_a_foreign_name_is_kept_counted_and_never_replaced() -> None:
    rec = node("acme-dallas-001", 101)
    renamed = server("web-frontend", 101)
    p = plan(spec_of({"dallas": 1}), *world([renamed], [rec]), NOW)
    assert p.is_empty  # neither forgotten nor replaced: that would double the fleet
    assert guards(p) == {"renamed": False}
    assert "web-frontend" in p.warnings[0].message


def test_a_renamed_fleet_gets_a_warning_in_the_plan() -> None:
    # the spec's metadata.name changed from "old" to "acme": the store records nothing of
    # "acme" while the account holds old-dallas-001..002
    olds = [server("old-dallas-001", 1), server("old-dallas-002", 2)]
    p = plan(spec_of({"dallas": 2}), *world(olds), NOW)
    assert [c.action for c in p.changes] == [Action.CREATE, Action.CREATE]
    assert guards(p) == {"rename": False}
    assert "old-" in p.warnings[0].message
    assert p.warnings[0].hint is not None
    assert "metadata.name" in p.warnings[0].hint
    # a fleet with records of its own is not warned about its neighbours
    mine = pair("acme-dallas-001", 101)
    p = plan(spec_of({"dallas": 1}), *world([*olds, mine[0]], [mine[1]]), NOW)
    assert "rename" not in guards(p)


@given(
    other=st.sampled_from(["acme-eu", "acme-dallas", "acme-x1", "acmeeu", "ac"]),
    seqs=st.lists(st.integers(1, 999), min_size=1, max_size=6, unique=True),
    region=st.sampled_from(["dallas", "seattle"]),
)
def test_no_change_ever_touches_another_fleets_servers(
    other: str, seqs: list[int], region: str
) -> None:
    theirs = [server(f"{other}-{region}-{seq:03d}", 5000 + seq) for seq in seqs]
    ours = pair("acme-dallas-001", 101)
    spec = spec_of({"dallas": 2, "seattle": 1})
    for recorded_nodes in ([], [ours[1]]):
        observed = [*theirs, ours[0]]
        p = plan(spec, *world(observed, recorded_nodes), NOW, PlanOptions(allow_mass_destroy=True))
        assert not touched(p) & {s.service_id for s in theirs}
        assert not [c for c in p.changes if c.address in {s.name for s in theirs}]


# --- pending creates count (issue 9) -------------------------------------------------------


def test_pending_creates_hold_their_pool_slot_and_count_in_cost_and_budget() -> None:
    pools = {"dedicated": {"size": 2, "regions": ["dallas"]}}
    spec = spec_of({"dallas": 3}, pools=pools, costs={"monthly_budget": "40"})
    young = replace(
        intent(7, "acme-dallas-001", age=timedelta(minutes=1)),
        params={"region": "dallas", "plan": "baseline", "pool": "dedicated"},
    )
    also = replace(
        intent(8, "acme-dallas-002", age=timedelta(minutes=1)),
        params={"region": "dallas", "plan": "baseline", "pool": "dedicated"},
    )
    p = plan(spec, *world([], [], [young, also]), NOW)
    creates = [c for c in p.changes if c.action is Action.CREATE]
    assert [c.address for c in creates] == ["acme-dallas-003"]
    # the pool of two is full with the two creates in flight: no third IP from it
    assert creates[0].pool is None
    # the two creates in flight are bought already: the cost before counts them
    assert p.summary.node_count_before == 2
    assert p.summary.monthly_cost_before == Decimal("29.96")
    assert p.summary.node_count_after == 3
    assert p.summary.monthly_cost_after == Decimal("44.94")
    # so the budget guard sees them (before issue 9: $0 -> $14.98, under the budget)
    assert guards(p)["budget"] is True


# --- stopped servers (issue 9) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "how",
    [
        {"status": ServerStatus.SHUTOFF},
        {"suspended": True},
        {"locked": True},
    ],
    ids=["shutoff", "suspended", "locked"],
)
def test_a_stopped_server_leaves_rotation_is_shown_and_is_replaced_after_a_timeout(
    how: dict[str, object],
) -> None:
    from reconciler.views.human import render_plan

    spec = spec_of({"dallas": 2})
    a, b = pair("acme-dallas-001", 101), pair("acme-dallas-002", 102)
    halted = replace(a[0], **how)  # type: ignore[arg-type]
    # a SHUTOFF server (neither locked nor suspended) is booted first (issue 9)
    boot = [("boot", "acme-dallas-001")] if halted.status is ServerStatus.SHUTOFF else []
    p = plan(spec, *world([halted, b[0]], [a[1], b[1]]), NOW)
    assert actions(p) == [("pause", "acme-dallas-001"), *boot]
    assert p.changes[0].status is NodeStatus.UNHEALTHY
    assert "stopped" in guards(p)
    # recorded out of rotation: nothing else to do yet, and never "matches the spec"
    paused = replace(a[1], status=NodeStatus.UNHEALTHY, status_changed_at=NOW)
    p = plan(spec, *world([halted, b[0]], [paused, b[1]]), NOW)
    assert actions(p) == boot
    text = render_plan(p)
    assert "matches the spec" not in text
    if not boot:
        assert "does not match the spec yet" in text
    # a second node may not be disrupted meanwhile: it counts as unavailable
    bigger = spec_of({"dallas": 2, "seattle": 0}, disruption={"max_unavailable": 1})
    c = pair("acme-dallas-003", 103)
    p = plan(bigger, *world([halted, b[0], c[0]], [paused, b[1], c[1]]), NOW)
    assert not [x for x in p.changes if x.action is Action.DRAIN]
    # past health.replace_after (10 min): destroyed and replaced (a locked server cannot be
    # terminated: it stays out of rotation, and the warning stays)
    later = NOW + timedelta(minutes=11)
    p = plan(spec, *world([halted, b[0]], [paused, b[1]]), later)
    if halted.locked:
        assert p.is_empty
        assert "stopped" in guards(p)
    else:
        assert ("destroy", "acme-dallas-001") in actions(p)
        assert ("create", "acme-dallas-003") in actions(p)
        assert ("boot", "acme-dallas-001") not in actions(p)  # replaced, not booted


def test_a_steady_fleet_still_matches_the_spec() -> None:
    from reconciler.views.human import render_plan

    a = pair("acme-dallas-001", 101)
    p = plan(spec_of({"dallas": 1}), *world([a[0]], [a[1]]), NOW)
    assert "No changes. Fleet acme matches the spec" in render_plan(p)
