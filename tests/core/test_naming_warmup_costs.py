"""Node names, warmup arithmetic and cost resolution."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reconciler.core.addresses import node_name, owned_by_fleet, parse_node_name
from reconciler.core.costs import fleet_monthly_cost, node_monthly_cost
from reconciler.core.fleet import CostConstant
from reconciler.core.plans import AppliedConstant
from reconciler.core.warmup import daily_limit, warmup_complete, warmup_day
from specs.model import WARMUP_PRESETS, WarmupSchedule
from tests.core.factories import make_spec

# --- names -------------------------------------------------------------------------------


def test_node_name_shape() -> None:
    assert node_name("acme", "dallas", 3) == "acme-dallas-003"
    assert node_name("acme", "us-east", 1234) == "acme-us-east-1234"
    with pytest.raises(ValueError, match="start at 1"):
        node_name("acme", "dallas", 0)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("acme-dallas-003", ("dallas", 3)),
        ("acme-us-east-2-010", ("us-east-2", 10)),
        ("acme-dallas-1000", ("dallas", 1000)),
        ("acme-dallas-03", None),  # fewer than 3 digits
        ("acme-dallas-000", None),
        ("acme-dallas", None),
        ("acme-web", None),
        ("acmes-dallas-001", None),
        ("other-dallas-001", None),
        ("acme-Dallas-001", None),
        ("acme--001", None),
    ],
)
def test_parse_node_name(name: str, expected: tuple[str, int] | None) -> None:
    assert parse_node_name("acme", name) == expected
    assert owned_by_fleet("acme", name) is (expected is not None)


@given(
    region=st.from_regex(r"\A[a-z][a-z0-9]{0,6}(-[a-z0-9]{1,4}){0,2}\Z"),
    seq=st.integers(1, 99999),
)
def test_names_round_trip(region: str, seq: int) -> None:
    assert parse_node_name("acme", node_name("acme", region, seq)) == (region, seq)


# --- warmup ------------------------------------------------------------------------------


def test_standard_preset_ramps_linearly_within_each_phase() -> None:
    standard = WARMUP_PRESETS["standard"]
    assert daily_limit(standard, 0) == 0
    assert daily_limit(standard, 1) == 10
    assert daily_limit(standard, 14) == 100
    assert daily_limit(standard, 8) == 10 + 90 * 7 // 13
    assert daily_limit(standard, 15) == 100
    assert daily_limit(standard, 28) == 300
    assert daily_limit(standard, 42) == 500
    assert daily_limit(standard, 400) == 500


def test_max_daily_increase_caps_the_ramp() -> None:
    schedule = WarmupSchedule.model_validate(
        {
            "phases": [{"days": "1-2", "start": 10, "end": 1000}],
            "safety": {"max_daily_increase": 50},
        }
    )
    assert [daily_limit(schedule, d) for d in (1, 2, 3, 4)] == [10, 60, 110, 160]
    assert daily_limit(schedule, 1000) == 1000


@given(day=st.integers(-5, 400), name=st.sampled_from(sorted(WARMUP_PRESETS)))
def test_presets_never_decrease_and_stay_in_bounds(day: int, name: str) -> None:
    schedule = WARMUP_PRESETS[name]
    today = daily_limit(schedule, day)
    assert 0 <= today <= schedule.final_limit
    assert daily_limit(schedule, day + 1) >= today


def test_warmup_day_counts_from_one() -> None:
    start = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert warmup_day(None, start) == 0
    assert warmup_day(start, start) == 1
    assert warmup_day(start, start + timedelta(hours=23)) == 1
    assert warmup_day(start, start + timedelta(days=1)) == 2
    assert warmup_day(start, start - timedelta(days=3)) == 1
    standard = WARMUP_PRESETS["standard"]
    assert not warmup_complete(standard, start, start + timedelta(days=41))
    assert warmup_complete(standard, start, start + timedelta(days=42))


# --- costs -------------------------------------------------------------------------------

SET_AT = datetime(2026, 10, 1, tzinfo=UTC)


def override(key: str, scope: str, value: str, at: datetime = SET_AT) -> CostConstant:
    return CostConstant(key=key, scope=scope, value=Decimal(value), set_by="finance", set_at=at)


def cost_spec() -> object:
    return make_spec(
        {"dallas": 1},
        pools={
            "plain": {"size": 5, "regions": ["dallas"]},
            "priced": {"size": 5, "regions": ["dallas"], "ip_monthly_price": "3.00"},
            "contracted": {"size": 5, "regions": ["dallas"], "contract": "bigco"},
        },
        costs={
            "ip_monthly_price": "4.99",
            "contracts": {"bigco": {"ip_monthly_price": "2.50", "plan_prices": {"baseline": "8"}}},
        },
    )


def test_spec_constants_by_precedence() -> None:
    spec = cost_spec()
    total, used = node_monthly_cost(spec, "baseline", None, ())  # type: ignore[arg-type]
    assert total == Decimal("14.98")
    assert used == (
        AppliedConstant("plan_monthly_price:baseline", Decimal("9.99"), "spec"),
        AppliedConstant("ip_monthly_price", Decimal("4.99"), "spec"),
    )
    total, used = node_monthly_cost(spec, "baseline", "priced", ())  # type: ignore[arg-type]
    assert total == Decimal("12.99")
    assert used[1].source == "spec:pool:priced"
    total, used = node_monthly_cost(spec, "baseline", "contracted", ())  # type: ignore[arg-type]
    assert total == Decimal("10.50")
    assert [c.source for c in used] == ["spec:contract:bigco", "spec:contract:bigco"]


def test_store_overrides_beat_the_spec_most_specific_first() -> None:
    spec = cost_spec()
    overrides = [
        override("ip_monthly_price", "global", "6.00"),
        override("ip_monthly_price", "contract:bigco", "1.00"),
        override("ip_monthly_price", "pool:priced", "2.00", SET_AT - timedelta(days=9)),
        override("ip_monthly_price", "pool:priced", "2.25"),  # the latest wins
        override("plan_monthly_price", "plan:baseline", "7.77"),
    ]
    total, used = node_monthly_cost(spec, "baseline", "priced", overrides)  # type: ignore[arg-type]
    assert total == Decimal("10.02")
    assert used[0].source.startswith("store:plan:baseline (set by finance at 2026-10-01")
    assert used[1].value == Decimal("2.25")
    assert used[1].source.startswith("store:pool:priced")
    assert node_monthly_cost(spec, None, "contracted", overrides)[0] == Decimal("1.00")  # type: ignore[arg-type]
    assert node_monthly_cost(spec, None, "plain", overrides)[0] == Decimal("6.00")  # type: ignore[arg-type]


def test_ips_per_node_multiplies_and_unknown_plans_cost_only_ips() -> None:
    spec = make_spec({"dallas": 1}, costs={"ips_per_node": 3, "ip_monthly_price": "1.10"})
    total, used = node_monthly_cost(spec, "baseline", None)
    assert total == Decimal("13.29")
    assert AppliedConstant("ips_per_node", Decimal(3), "spec") in used
    assert node_monthly_cost(spec, "no-such-plan", None)[0] == Decimal("3.30")
    total, constants = fleet_monthly_cost(spec, [("baseline", None), ("large", None)])
    assert total == Decimal("13.29") + Decimal("23.29")
    assert [c.key for c in constants] == [
        "ip_monthly_price",
        "ips_per_node",
        "plan_monthly_price:baseline",
        "plan_monthly_price:large",
    ]
