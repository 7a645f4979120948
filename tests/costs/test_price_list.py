"""Provider prices (issue 16): `get_price_list` through the Hostwinds client, served by the
simulator over its real HTTP socket, cached, and plans that warn with both figures when a spec
plan's `monthly_price` is not what the provider charges for its rid."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest

from providers.hostwinds import HostwindsClient
from providers.hostwinds.wire import PriceEntryWire
from providers.simulator.serving import SimulatorServer
from reconciler.core.costs import PRICES_GUARD, price_warnings
from reconciler.core.fleet import PricePlan
from reconciler.engine.pricing import PriceListCache
from reconciler.engine.reconciling import Reconciler
from specs.loading import spec_hash
from tests.engine.conftest import Loaded, make_spec
from tests.fakes.clocks import FakeClock
from tests.fakes.store import InMemoryStore

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def simulator() -> Iterator[SimulatorServer]:
    with SimulatorServer(build_seconds=1.0) as server:
        yield server


@pytest.fixture
async def admin(simulator: SimulatorServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=simulator.url, timeout=10.0) as client:
        await client.post("/sim/reset")
        try:
            yield client
        finally:
            await client.post("/sim/reset")


@pytest.fixture
async def hostwinds(simulator: SimulatorServer) -> AsyncIterator[HostwindsClient]:
    async with HostwindsClient(
        simulator.api_url,
        "simulator",
        rate_limit=500.0,
        timeout=5.0,
        max_read_retries=1,
        sleep=FakeClock().sleep,
        rng=random.Random(1),
    ) as client:
        yield client


async def test_the_simulator_serves_prices_as_strings_with_promotions(
    admin: httpx.AsyncClient, hostwinds: HostwindsClient
) -> None:
    answer = await admin.post(
        "/sim/prices", json={"rid": 52, "monthly": "10.99", "promo_percent": "20"}
    )
    assert answer.status_code == 200, answer.text
    raw = (await admin.get("/sim/prices")).json()["52"]
    assert (raw["monthly"], raw["promo"], raw["percent"], raw["firsts"]) == (
        "10.99",
        1,
        "20",
        "8.79",
    )
    plans = {p.rid: p for p in await hostwinds.price_list()}
    baseline = plans[52]
    assert baseline.monthly == Decimal("10.99")
    assert isinstance(baseline.monthly, Decimal)
    assert baseline.promo
    assert baseline.promo_percent == Decimal(20)
    assert baseline.first_payment == Decimal("8.79")
    assert "monthly" in baseline.cycles
    assert plans[53].monthly == Decimal("19.99")
    assert not plans[53].promo
    # the admin endpoint refuses what the provider could not mean
    assert (await admin.post("/sim/prices", json={"rid": 99, "monthly": "1.00"})).status_code == 404
    bad = await admin.post("/sim/prices", json={"rid": 52, "monthly": "-1"})
    assert bad.status_code == 400


def _reconciler(
    hostwinds: HostwindsClient, clock: FakeClock, cache: PriceListCache, **spec: Any
) -> Reconciler:
    fleet = make_spec({"dallas": 1}, **spec)
    return Reconciler(
        Loaded(fleet, spec_hash(fleet)),
        hostwinds,
        InMemoryStore(now=clock.now),
        clock,
        prices=cache,
    )


async def test_plans_warn_with_both_figures_and_read_the_list_once_an_hour(
    admin: httpx.AsyncClient, hostwinds: HostwindsClient
) -> None:
    await admin.post("/sim/stats/reset")
    clock = FakeClock()
    cache = PriceListCache()
    engine = _reconciler(hostwinds, clock, cache)
    plan = engine.plan(await engine.observe())
    assert [w for w in plan.warnings if w.guard == PRICES_GUARD] == []  # spec = provider

    await admin.post("/sim/prices", json={"rid": 52, "monthly": "10.99", "promo_percent": "20"})
    clock.advance(3601)
    plan = engine.plan(await engine.observe())
    warnings = [w for w in plan.warnings if w.guard == PRICES_GUARD]
    assert len(warnings) == 1
    text = warnings[0].message
    assert "plan baseline (rid 52)" in text
    assert "$9.99/month" in text
    assert "$10.99/month" in text
    assert "promotion 20 %" in text
    assert "first payment $8.79" in text
    assert not warnings[0].blocking
    assert warnings[0].hint is not None
    assert "10.99" in warnings[0].hint

    # within the hour the cached list serves: a price change is not seen yet
    await admin.post("/sim/prices", json={"rid": 52, "monthly": "9.99"})
    for _ in range(3):
        clock.advance(60)
        plan = engine.plan(await engine.observe())
        assert any(w.guard == PRICES_GUARD for w in plan.warnings)
    stats = (await admin.get("/sim/stats")).json()
    assert stats["requests"]["get_price_list"] == 2
    clock.advance(3600)
    plan = engine.plan(await engine.observe())
    assert not any(w.guard == PRICES_GUARD for w in plan.warnings)
    assert cache.reads == 3


async def test_a_failed_read_says_so_and_never_fails_the_plan(
    admin: httpx.AsyncClient, hostwinds: HostwindsClient
) -> None:
    clock = FakeClock()
    cache = PriceListCache(ttl=timedelta(minutes=5))
    engine = _reconciler(hostwinds, clock, cache)
    faults = {"malformed_json_rate": 1.0, "actions": ["get_price_list"]}
    assert (await admin.post("/sim/faults", json=faults)).status_code == 200
    plan = engine.plan(await engine.observe())
    assert any(n.startswith("provider prices not checked") for n in plan.notes), plan.notes
    assert not any(w.guard == PRICES_GUARD for w in plan.warnings)
    await admin.delete("/sim/faults")
    clock.advance(301)
    plan = engine.plan(await engine.observe())
    assert not any("provider prices" in n for n in plan.notes)
    # a later failure keeps the older list, and says so
    await admin.post("/sim/faults", json=faults)
    clock.advance(301)
    plan = engine.plan(await engine.observe())
    assert any(n.startswith("provider prices from an older read") for n in plan.notes)


async def test_a_spec_plan_the_provider_does_not_sell_is_named(
    admin: httpx.AsyncClient, hostwinds: HostwindsClient
) -> None:
    plans = {
        "baseline": {"rid": 52, "vcpu": 1, "ram_gb": "2", "disk_gb": 50, "monthly_price": "9.99"},
        "ghost": {"rid": 77, "vcpu": 1, "ram_gb": "2", "disk_gb": 50, "monthly_price": "5.00"},
    }
    clock = FakeClock()
    engine = _reconciler(hostwinds, clock, PriceListCache(), plans=plans)
    plan = engine.plan(await engine.observe())
    messages = [w.message for w in plan.warnings if w.guard == PRICES_GUARD]
    assert messages == [
        "plan ghost (rid 77): not in the provider's price list; the spec's $5.00/month cannot "
        "be checked"
    ]


def _offer(rid: int, monthly: str, **extra: Any) -> PricePlan:
    return PricePlan(rid, f"rid {rid}", 1, Decimal(2), 50, "2000", Decimal(monthly), **extra)


@pytest.mark.parametrize(
    ("spec_price", "offer", "expected"),
    [
        ("9.99", _offer(52, "9.99"), None),
        ("9.99", _offer(52, "9.990"), None),  # the same amount, written differently
        (
            "9.99",
            _offer(52, "10.00"),
            "the spec says $9.99/month, the provider's price list $10.00",
        ),
        ("9.99", _offer(52, "9.98"), "$9.98/month"),
        ("9.995", _offer(52, "9.99"), "the spec says $9.995/month"),
        (
            "9.99",
            _offer(
                52,
                "12.00",
                promo=True,
                promo_percent=Decimal("12.5"),
                first_payment=Decimal("10.50"),
            ),
            "promotion 12.5 %, first payment $10.50",
        ),
        ("9.99", _offer(52, "12.00", cycles=("monthly", "annually")), "cycles monthly, annually"),
    ],
)
def test_price_warning_table(spec_price: str, offer: PricePlan, expected: str | None) -> None:
    plans = {
        "baseline": {
            "rid": 52,
            "vcpu": 1,
            "ram_gb": "2",
            "disk_gb": 50,
            "monthly_price": spec_price,
        }
    }
    spec = make_spec({"dallas": 1}, plans=plans)
    warnings = price_warnings(spec, [offer])
    if expected is None:
        assert warnings == []
    else:
        assert len(warnings) == 1
        assert expected in warnings[0].message


@pytest.mark.parametrize(
    ("raw", "promo", "percent", "first", "cycles"),
    [
        (
            {"promo": "1", "percent": "20", "firsts": "7.99", "cycles": ["monthly"]},
            True,
            "20",
            "7.99",
            ("monthly",),
        ),
        ({"promo": 0, "percent": "0"}, False, "0", None, ()),
        (
            {"promo": "false", "cycles": {"monthly": "9.99", "annually": "119.88"}},
            False,
            "0",
            None,
            ("monthly", "annually"),
        ),
        (
            {"promo": True, "percent": "x", "cycles": "monthly, quarterly"},
            True,
            "0",
            None,
            ("monthly", "quarterly"),
        ),
    ],
)
def test_price_entries_read_as_the_api_writes_them(
    raw: dict[str, Any], promo: bool, percent: str, first: str | None, cycles: tuple[str, ...]
) -> None:
    plan = PriceEntryWire.model_validate(
        {"rid": "52", "name": "VPS", "monthly": "9.99", **raw}
    ).to_plan()
    assert plan is not None
    assert (plan.promo, plan.promo_percent, plan.first_payment, plan.cycles) == (
        promo,
        Decimal(percent),
        Decimal(first) if first is not None else None,
        cycles,
    )
