"""Billing-aware scale-down (issue 16): with `disruption.billing_aware`, among equally good
victims the node whose paid month ends soonest goes, and the plan says what that saves; without
it, the default order (least warmed first) is kept. Paid months: table tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from reconciler.core.billing import paid_until, unused_paid
from reconciler.core.plans import Action
from tests.engine.conftest import World, make_spec


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.mark.parametrize(
    ("created", "now", "until"),
    [
        ("2026-11-10T08:00:00", "2026-11-20", "2026-12-10T08:00:00"),
        ("2026-11-10T08:00:00", "2026-12-10T08:00:00", "2027-01-10T08:00:00"),  # renewed now
        ("2026-11-10T08:00:00", "2026-12-10T07:59:59", "2026-12-10T08:00:00"),
        ("2026-01-31", "2026-02-15", "2026-02-28"),  # the 31st renews on a short month's end
        ("2026-01-31", "2026-03-01", "2026-03-31"),
        ("2025-12-15", "2026-11-20", "2026-12-15"),
        ("2026-11-10", "2026-11-01", "2026-12-10"),  # not created yet: its first month
    ],
)
def test_paid_until_table(created: str, now: str, until: str) -> None:
    assert paid_until(at(created), at(now)) == at(until)


def test_unused_paid_is_the_rest_of_the_month_at_most_a_month() -> None:
    assert unused_paid(at("2026-11-10"), at("2026-11-30"), Decimal("73"), Decimal(730)) == Decimal(
        "24"
    )  # 240 hours left x 73 / 730
    assert unused_paid(at("2026-11-10"), at("2026-11-10"), Decimal("9.99"), Decimal(24)) == Decimal(
        "9.99"
    )


def _three_nodes_ten_days_apart(*, billing_aware: bool) -> World:
    world = World(build_seconds=5)
    for count in (1, 2, 3):
        spec = make_spec({"dallas": count}, disruption={"billing_aware": billing_aware})
        world.converge(spec)
        world.clock.advance(timedelta(days=10).total_seconds())
    return world


def test_billing_aware_scale_down_picks_the_node_whose_paid_month_ends_soonest() -> None:
    world = _three_nodes_ten_days_apart(billing_aware=True)
    spec = make_spec({"dallas": 2}, disruption={"billing_aware": True})
    plan = world.plan(spec)
    removed = sorted(
        {c.address for c in plan.changes if c.action in (Action.DRAIN, Action.DESTROY)}
    )
    assert removed == ["acme-dallas-001"]  # the oldest: its month renews in about 10 days
    (note,) = [n for n in plan.notes if "billing-aware" in n]
    assert "destroys acme-dallas-001 (paid until" in note
    assert "instead of acme-dallas-003" in note
    # 20 days more of paid time kept: 480 h x 14.98 / 730 = 9.85 (give or take the minutes
    # the creates took)
    saving = Decimal(note.split("saves $")[1].split(" ")[0])
    assert Decimal("9.7") <= saving <= Decimal("9.9")


def test_without_it_the_least_warmed_node_goes_and_nothing_is_said() -> None:
    world = _three_nodes_ten_days_apart(billing_aware=False)
    plan = world.plan(make_spec({"dallas": 2}))
    removed = sorted(
        {c.address for c in plan.changes if c.action in (Action.DRAIN, Action.DESTROY)}
    )
    assert removed == ["acme-dallas-003"]
    assert not [n for n in plan.notes if "billing-aware" in n]


def test_state_and_health_still_come_first() -> None:
    world = _three_nodes_ten_days_apart(billing_aware=True)
    spec = make_spec({"dallas": 2}, disruption={"billing_aware": True})
    from reconciler.core.planning import PlanOptions

    plan = world.plan(spec, PlanOptions(unhealthy=frozenset({"acme-dallas-003"})))
    removed = sorted(
        {c.address for c in plan.changes if c.action in (Action.DRAIN, Action.DESTROY)}
    )
    assert removed == ["acme-dallas-003"]  # unhealthy beats the paid month
