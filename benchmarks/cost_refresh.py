"""What issue 16's cost work adds to a run, on SQLite (and PostgreSQL when
``RECONCILER_TEST_POSTGRES_URL`` is set and ``--postgres`` is given).

Run: ``.venv/bin/python benchmarks/cost_refresh.py [--nodes 1000] [--postgres]``. Prints the
median of a few runs of:

- the refresh at the end of every apply when nothing changed (one load + one read);
- the refresh after finance changed a constant (every node rewritten, with its cost period);
- ``costs report`` arithmetic and ``costs reconcile`` over one invoice line per node, from the
  recorded history (two months, each node resized once).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.core.billing import Tolerance, cost_report, parse_invoices, reconcile_invoices
from reconciler.core.fleet import NodeStatus, RecordedNode
from reconciler.engine.costing import refresh_recorded_costs
from specs.model import FleetSpec
from state.store import SqlStore, open_store

SPEC = {
    "metadata": {"name": "bench"},
    "plans": {
        "baseline": {"rid": 52, "vcpu": 1, "ram_gb": 2, "disk_gb": 50, "monthly_price": "9.99"},
        "large": {"rid": 53, "vcpu": 2, "ram_gb": 4, "disk_gb": 75, "monthly_price": "19.99"},
    },
    "regions": {"dallas": {"location_id": 13, "plan": "baseline", "nodes": 10}},
}


def timed(func: Callable[[], object], repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        func()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def run(url: str, nodes: int, *, upgrade: bool | None = None) -> None:
    clock = [datetime(2026, 9, 1, tzinfo=UTC)]
    store = open_store(url, clock=lambda: clock[0], upgrade=upgrade)
    assert isinstance(store, SqlStore)
    spec = FleetSpec.model_validate(SPEC)
    batch = [
        RecordedNode(
            id="",
            fleet="bench",
            name=f"bench-dallas-{i:05d}",
            region="dallas",
            plan="baseline",
            status=NodeStatus.ACTIVE,
            service_id=100000 + i,
            ip_address=f"10.{i // 65536}.{i // 256 % 256}.{i % 256}",
            pool=None,
            approximate_cost=Decimal("14.98"),
        )
        for i in range(nodes)
    ]
    started = time.perf_counter()
    for start in range(0, nodes, 500):
        store.upsert_nodes(batch[start : start + 500])
    print(
        f"  record {nodes} nodes (with their cost periods): {time.perf_counter() - started:.2f} s"
    )
    clock[0] = datetime(2026, 10, 15, tzinfo=UTC)
    refresh_recorded_costs(spec, store)
    quiet = timed(lambda: refresh_recorded_costs(spec, store))
    print(f"  refresh after an apply, nothing changed: {quiet * 1000:.0f} ms")
    prices = iter(["5.49", "4.99", "5.49", "4.99"])

    def change() -> None:
        store.set_cost_constant("ip_monthly_price", "global", Decimal(next(prices)), "b", clock[0])
        assert len(refresh_recorded_costs(spec, store)) == nodes

    print(f"  refresh after a constant change (all {nodes} rewritten): {timed(change, 2):.2f} s")
    clock[0] = datetime(2026, 12, 1, tzinfo=UTC)
    periods = store.cost_periods("bench", datetime(2026, 9, 1, tzinfo=UTC))
    now = clock[0]
    report = timed(
        lambda: cost_report(
            "bench",
            periods,
            "2026-10",
            "region",
            hours_per_month=Decimal(730),
            ips_per_node=1,
            contracts={},
            now=now,
        )
    )
    print(f"  costs report over {len(periods)} periods: {report * 1000:.0f} ms")
    text = "date,service_id,description,amount,period\n" + "".join(
        f"2026-10-01,{100000 + i},VPS,14.98,2026-10\n" for i in range(nodes)
    )
    lines = parse_invoices(text, "bench.csv")
    check = timed(
        lambda: reconcile_invoices(
            lines, periods, hours_per_month=Decimal(730), tolerance=Tolerance(), now=now
        )
    )
    print(f"  costs reconcile, {nodes} invoice lines: {check * 1000:.0f} ms")
    store.close()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(f"SQLite, {args.nodes} nodes")
        run(f"sqlite:///{folder}/bench.db", args.nodes)
    url = os.environ.get("RECONCILER_TEST_POSTGRES_URL")
    if args.postgres and url:
        from sqlalchemy import create_engine, text

        name = f"bench_costs_{os.getpid()}"
        admin = create_engine(url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text(f"CREATE DATABASE {name}"))
        try:
            print(f"PostgreSQL, {args.nodes} nodes")
            run(url.rsplit("/", 1)[0] + f"/{name}", args.nodes, upgrade=True)
        finally:
            with admin.connect() as connection:
                connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
            admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
