"""Table tests of an operator's hold in the planner (core.lifecycle): cordon, drain and
maintenance take a node out of the rotation, keep it out (neither paused nor replaced as
unhealthy), show in the plan's notes, and end with uncordon/resume."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reconciler.core.fleet import HoldKind, Maintenance, NodeStatus, RecordedNode
from reconciler.core.planning import PlanOptions, plan
from reconciler.core.plans import Action, Plan
from tests.core.factories import NOW, pair, world
from tests.core.factories import make_spec as spec_of

NAME = "acme-dallas-001"
SINCE = NOW - timedelta(hours=2)


def held(kind: HoldKind, *, ended: bool = False) -> Maintenance:
    return Maintenance(
        "disk check", "cli alice@ops", SINCE, NOW - timedelta(minutes=1) if ended else None, kind
    )


def state(record_status: NodeStatus, hold: Maintenance | None, **changes: object):  # type: ignore[no-untyped-def]
    srv, rec = pair(NAME, 101, status=record_status, warmup_started_at=NOW - timedelta(days=60))
    rec = replace(rec, maintenance=hold, status_changed_at=NOW - timedelta(minutes=10), **changes)  # type: ignore[arg-type]
    other_srv, other = pair("acme-dallas-002", 102)
    return world([srv, other_srv], [rec, other])


def moves(p: Plan) -> list[tuple[str, str, str | None]]:
    return [(c.action.value, c.address, c.status.value if c.status else None) for c in p.changes]


SPEC = spec_of({"dallas": 2}, disruption={"drain_timeout": "1h"})
DAEMON = PlanOptions(metrics_known=True)


@pytest.mark.parametrize(
    ("kind", "status", "options", "expected"),
    [
        # cordon and maintenance: straight out of the rotation, whatever the queue
        (HoldKind.CORDON, NodeStatus.ACTIVE, PlanOptions(), [("pause", NAME, "maintenance")]),
        (HoldKind.CORDON, NodeStatus.WARMING, DAEMON, [("pause", NAME, "maintenance")]),
        (HoldKind.CORDON, NodeStatus.UNHEALTHY, DAEMON, [("pause", NAME, "maintenance")]),
        (HoldKind.MAINTENANCE, NodeStatus.ACTIVE, DAEMON, [("pause", NAME, "maintenance")]),
        # already out: nothing more to do
        (HoldKind.CORDON, NodeStatus.MAINTENANCE, DAEMON, []),
        (HoldKind.DRAIN, NodeStatus.MAINTENANCE, DAEMON, []),
        # drain with queue figures (daemon): draining first ...
        (HoldKind.DRAIN, NodeStatus.ACTIVE, DAEMON, [("drain", NAME, "draining")]),
        # ... held once the queue is empty
        (
            HoldKind.DRAIN,
            NodeStatus.DRAINING,
            PlanOptions(metrics_known=True, queue_empty=frozenset({NAME})),
            [("drain", NAME, "maintenance")],
        ),
        # ... still waiting while the queue is not empty (and the timeout not reached)
        (HoldKind.DRAIN, NodeStatus.DRAINING, DAEMON, []),
        # drain without queue figures (a CLI run): drained at once, in one change
        (HoldKind.DRAIN, NodeStatus.ACTIVE, PlanOptions(), [("drain", NAME, "maintenance")]),
        # a provisioning node stops at its step: no status change
        (HoldKind.DRAIN, NodeStatus.PROVISIONING, DAEMON, []),
        (HoldKind.CORDON, NodeStatus.PROVISIONING, DAEMON, []),
    ],
)
def test_a_hold_takes_the_node_out_of_rotation(
    kind: HoldKind, status: NodeStatus, options: PlanOptions, expected: list[object]
) -> None:
    p = plan(SPEC, *state(status, held(kind)), NOW, options)
    assert moves(p) == expected
    note = next(n for n in p.notes if n.startswith(NAME))
    assert "cli alice@ops" in note
    assert "disk check" in note
    ends = "resume" if kind is HoldKind.MAINTENANCE else "uncordon"
    assert f"reconcile node {ends} {NAME}" in note


def test_a_drain_times_out_after_the_drain_timeout() -> None:
    srv_state = state(NodeStatus.DRAINING, held(HoldKind.DRAIN))
    p = plan(SPEC, *srv_state, NOW, DAEMON)
    assert moves(p) == []
    assert any("waiting for its queue to empty" in n for n in p.notes)
    observed, recorded = srv_state
    late = replace(
        recorded,
        nodes=tuple(
            replace(n, status_changed_at=NOW - timedelta(hours=2)) if n.name == NAME else n
            for n in recorded.nodes
        ),
    )
    p = plan(SPEC, observed, late, NOW, DAEMON)
    assert moves(p) == [("drain", NAME, "maintenance")]
    assert "drain timeout reached" in p.changes[0].reason


@pytest.mark.parametrize("kind", list(HoldKind))
def test_a_held_node_is_neither_paused_nor_replaced_as_unhealthy(kind: HoldKind) -> None:
    options = PlanOptions(
        metrics_known=True,
        unhealthy=frozenset({NAME}),
        replace_unhealthy=frozenset({NAME}),
        reputation_paused={NAME: "listed on zen.spamhaus.org"},
    )
    p = plan(SPEC, *state(NodeStatus.MAINTENANCE, held(kind)), NOW, options)
    assert moves(p) == []
    # the same node without the hold is replaced
    p = plan(SPEC, *state(NodeStatus.UNHEALTHY, None), NOW, options)
    assert ("destroy", NAME, None) in moves(p)


@pytest.mark.parametrize("kind", list(HoldKind))
@pytest.mark.parametrize("status", [NodeStatus.MAINTENANCE, NodeStatus.DRAINING])
def test_an_ended_hold_puts_the_node_back(kind: HoldKind, status: NodeStatus) -> None:
    p = plan(SPEC, *state(status, held(kind, ended=True)), NOW, DAEMON)
    if status is NodeStatus.DRAINING and kind is not HoldKind.DRAIN:
        # a draining node that no cordon put there: back as no longer surplus
        assert moves(p) == [("resume", NAME, "active")]
        assert "no longer surplus" in p.changes[0].reason
        return
    assert moves(p) == [("resume", NAME, "active")]
    assert "over" in p.changes[0].reason
    assert not any(n.startswith(NAME) for n in p.notes)


def test_an_ended_hold_hands_a_listed_node_to_the_reputation_pause() -> None:
    options = PlanOptions(metrics_known=True, reputation_paused={NAME: "listed on zen"})
    p = plan(SPEC, *state(NodeStatus.MAINTENANCE, held(HoldKind.CORDON, ended=True)), NOW, options)
    assert moves(p) == [("pause", NAME, "paused")]
    assert "reputation: listed on zen" in p.changes[0].reason


def test_a_hold_ended_before_another_rule_took_the_node_out_does_not_resume_it() -> None:
    # out of the rotation (maintenance status) since after the hold ended: not the hold's
    observed, recorded = state(NodeStatus.MAINTENANCE, held(HoldKind.CORDON, ended=True))
    nodes: list[RecordedNode] = [
        replace(n, status_changed_at=NOW) if n.name == NAME else n for n in recorded.nodes
    ]
    p = plan(SPEC, observed, replace(recorded, nodes=tuple(nodes)), NOW, DAEMON)
    assert moves(p) == []


def test_a_hold_survives_a_spec_change_and_is_in_every_plan() -> None:
    bigger = spec_of({"dallas": 3}, disruption={"drain_timeout": "1h"})
    p = plan(bigger, *state(NodeStatus.MAINTENANCE, held(HoldKind.CORDON)), NOW, DAEMON)
    assert [c.action.value for c in p.changes] == ["create"]
    assert any(n.startswith(f"{NAME}: cordoned by cli alice@ops") for n in p.notes)


def test_the_hold_describes_itself_by_kind_and_status() -> None:
    assert held(HoldKind.CORDON).describe() == (
        "cordoned by cli alice@ops since 2026-11-23 16:00 UTC: disk check"
    )
    drain = held(HoldKind.DRAIN)
    assert drain.verb(NodeStatus.DRAINING) == "draining"
    assert drain.verb(NodeStatus.ACTIVE) == "draining"
    assert drain.verb(NodeStatus.MAINTENANCE) == "drained"
    assert held(HoldKind.MAINTENANCE).verb() == "in maintenance"
    assert held(HoldKind.CORDON, ended=True).verb() == "cordoned (ended)"


@given(
    kind=st.sampled_from(list(HoldKind)),
    status=st.sampled_from(
        [s for s in NodeStatus if s not in (NodeStatus.DECOMMISSIONED, NodeStatus.PROVISIONING)]
    ),
    unhealthy=st.booleans(),
    replace_it=st.booleans(),
    listed=st.booleans(),
    metrics=st.booleans(),
    empty=st.booleans(),
    minutes=st.integers(min_value=0, max_value=600),
)
@settings(max_examples=200, deadline=None)
def test_a_held_node_never_goes_back_into_rotation_nor_is_replaced(
    kind: HoldKind,
    status: NodeStatus,
    unhealthy: bool,
    replace_it: bool,
    listed: bool,
    metrics: bool,
    empty: bool,
    minutes: int,
) -> None:
    names = frozenset({NAME})
    options = PlanOptions(
        metrics_known=metrics,
        unhealthy=names if unhealthy else frozenset(),
        replace_unhealthy=names if replace_it else frozenset(),
        reputation_paused={NAME: "listed"} if listed else None,
        queue_empty=names if empty else frozenset(),
    )
    observed, recorded = state(status, held(kind))
    recorded = replace(
        recorded,
        nodes=tuple(
            replace(n, status_changed_at=NOW - timedelta(minutes=minutes)) if n.name == NAME else n
            for n in recorded.nodes
        ),
    )
    p = plan(SPEC, observed, recorded, NOW, options)
    mine = [c for c in p.changes if c.address == NAME]
    assert all(c.action in (Action.PAUSE, Action.DRAIN) for c in mine), mine
    assert all(c.status is not None and not c.status.in_rotation for c in mine)
    assert len(mine) <= 1
    # the rest of the fleet is not disturbed by the hold (no replacement for it)
    assert [c for c in p.changes if c.address != NAME] == []
