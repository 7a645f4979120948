"""Cost constants with their history, and reconcile runs."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest
from state_builders import FakeClock

from reconciler.core.errors import StoreError
from reconciler.core.ports import RunRecord
from state import SqlStore
from state.store import InvalidRecordError


def test_cost_constants_and_history(store: SqlStore, clock: FakeClock) -> None:
    store.set_cost_constant("ip_monthly_price", "global", Decimal("4.99"), "alice", clock.now())
    store.set_cost_constant(
        "ip_monthly_price", "global", Decimal("5.25"), "bob", clock.advance(3600)
    )
    store.set_cost_constant("ip_monthly_price", "global", Decimal("5.2500"), "bob", clock.now())
    store.set_cost_constant(
        "plan_monthly_price", "plan:small", Decimal("9.99"), "carol", clock.now()
    )
    (ip, plan) = store.load_fleet("acme").cost_overrides
    assert (ip.key, ip.scope, ip.value, ip.set_by) == (
        "ip_monthly_price",
        "global",
        Decimal("5.25"),
        "bob",
    )
    assert plan.scope == "plan:small"
    history = store.cost_history("ip_monthly_price")
    assert [(h["old"], h["new"], h["set_by"]) for h in history] == [
        ("4.99", "5.25", "bob"),
        ("", "4.99", "alice"),
    ]
    assert history[0]["set_at"] == clock.now().isoformat()
    assert len(store.cost_history()) == 3
    assert store.cost_constants() == [ip, plan]


@pytest.mark.parametrize(
    ("scope", "value", "message"),
    [
        ("tenant:x", Decimal(1), "cost scope"),
        ("pool:", Decimal(1), "cost scope"),
        ("global", 4.99, "must be a Decimal"),
        ("global", Decimal("-1"), "negative"),
        ("global", Decimal("0.00001"), "does not fit"),
    ],
)
def test_bad_cost_constants(
    store: SqlStore, clock: FakeClock, scope: str, value: Decimal, message: str
) -> None:
    with pytest.raises(InvalidRecordError, match=message):
        store.set_cost_constant("ip_monthly_price", scope, value, "x", clock.now())
    assert store.cost_history() == []


def test_runs(store: SqlStore, clock: FakeClock) -> None:
    run_id = store.start_run(
        RunRecord(
            fleet="acme",
            started_at=clock.now(),
            spec_hash="abc123",
            mode="apply",
            summary={"create": "2", "monthly_after": "29.97"},
        )
    )
    store.finish_run(run_id, "ok", clock.advance(42.5))
    (run,) = store.recent_runs("acme")
    assert run.outcome == "ok"
    assert run.finished_at == clock.now()
    assert run.summary == {"create": "2", "monthly_after": "29.97"}
    assert run.finished_at - run.started_at == timedelta(seconds=42.5)
    failed = store.start_run(
        RunRecord(fleet="acme", started_at=clock.now(), spec_hash="d", mode="daemon", summary={})
    )
    store.finish_run(failed, "failed", clock.advance(1), error="cloud said no")
    assert [(r.outcome, r.error) for r in store.recent_runs("acme")] == [
        ("failed", "cloud said no"),
        ("ok", None),
    ]
    with pytest.raises(StoreError, match="no reconcile run with id 999"):
        store.finish_run(999, "ok", clock.now())
