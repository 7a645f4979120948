"""The heartbeat batch writer's latency while another thread keeps the GIL busy (issue 14).

The daemon writes each heartbeat batch on a worker thread; every database round trip
releases the GIL and the thread must get it back, which it does only when the thread holding
it lets go: a busy event loop does so when the interpreter's switch interval runs out
(Python's default: 5 ms). This benchmark writes batches of ``--batch`` beats (one per node,
as the daemon's batcher does) on a thread through ``SqlStore.record_heartbeats`` while the
main thread spins in Python, at the default switch interval and at the daemon's
(``reconciler.core.collector.SERVICE_SWITCH_INTERVAL``), alternating, and prints each
setting's batch latency and throughput.

Run: ``.venv/bin/python benchmarks/heartbeat_writer_contention.py [--nodes 2000]
[--batch 16] [--pairs 2]``. Needs PostgreSQL (``RECONCILER_TEST_POSTGRES_URL``, default
postgres@127.0.0.1:5432); creates and drops its own database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.daemonsetup import fresh_database
from reconciler.core.collector import SERVICE_SWITCH_INTERVAL
from reconciler.core.fleet import NodeMetrics, NodeStatus, RecordedNode
from state import SqlStore, open_store

DEFAULT_SWITCH_INTERVAL = 0.005
START = datetime(2026, 1, 1, tzinfo=UTC)


def measure(
    store: SqlStore, names: list[str], batch: int, first_round: int, rounds: int
) -> tuple[list[float], float]:
    """Batch latencies (s) and beats/s of ``rounds`` rounds over the nodes, written on a
    thread while this one spins."""
    latencies: list[float] = []
    stop = threading.Event()

    def write() -> None:
        for r in range(first_round, first_round + rounds):
            at = START + timedelta(seconds=30 * r)
            for offset in range(0, len(names), batch):
                beats = [
                    NodeMetrics(n, at, 0.3, 0.5, 0.2, 1, 4, 0, 0)
                    for n in names[offset : offset + batch]
                ]
                started = time.perf_counter()
                store.record_heartbeats("bench", beats)
                latencies.append(time.perf_counter() - started)
        stop.set()

    writer = threading.Thread(target=write)
    started = time.perf_counter()
    writer.start()
    spins = 0
    while not stop.is_set():  # the busy event loop's stand-in: pure Python, holding the GIL
        for i in range(1000):
            spins += i
    writer.join()
    return latencies, len(names) * rounds / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3, help="rounds over the nodes per run")
    parser.add_argument("--pairs", type=int, default=2)
    args = parser.parse_args()
    with fresh_database() as url:
        store = open_store(url, upgrade=True)
        try:
            names = [f"bench-dallas-{i:05d}" for i in range(args.nodes)]
            store.upsert_nodes(
                [
                    RecordedNode(
                        id=str(uuid.uuid4()),
                        fleet="bench",
                        name=name,
                        region="dallas",
                        plan="baseline",
                        status=NodeStatus.ACTIVE,
                    )
                    for name in names
                ]
            )
            results: dict[float, list[tuple[float, float, float]]] = {}
            first = 0
            default = sys.getswitchinterval()
            try:
                for _ in range(args.pairs):
                    for interval in (DEFAULT_SWITCH_INTERVAL, SERVICE_SWITCH_INTERVAL):
                        sys.setswitchinterval(interval)
                        latencies, rate = measure(store, names, args.batch, first, args.rounds)
                        first += args.rounds
                        latencies.sort()
                        p50 = statistics.median(latencies) * 1000
                        p90 = latencies[int(len(latencies) * 0.9)] * 1000
                        results.setdefault(interval, []).append((p50, p90, rate))
                        print(
                            f"switch interval {interval * 1000:.1f} ms: batch p50 {p50:6.2f} ms "
                            f"p90 {p90:6.2f} ms, {rate:7,.0f} beats/s "
                            f"(load {os.getloadavg()[0]:.1f})",
                            flush=True,
                        )
            finally:
                sys.setswitchinterval(default)
        finally:
            store.close()
    print()
    for interval, rows in results.items():
        print(
            f"{interval * 1000:.1f} ms: median batch p50 "
            f"{statistics.median(r[0] for r in rows):.2f} ms, "
            f"median {statistics.median(r[2] for r in rows):,.0f} beats/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
