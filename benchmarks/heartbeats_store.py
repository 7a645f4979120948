"""Benchmark: recording heartbeats of 10,000 nodes into PostgreSQL through SqlStore.

Creates its own database on the server given by RECONCILER_BENCH_POSTGRES_URL (else
RECONCILER_TEST_POSTGRES_URL, else postgresql+psycopg://postgres@127.0.0.1:5432/test), migrates
it, records the nodes, then sends rounds of one heartbeat per node in batches (as the daemon's
ingestion does) and prints beats per second. The database is dropped at the end.

Target: at least 2,000 beats/s on a 2-core machine (10,000 nodes every 30 s is 333 beats/s).

    .venv/bin/python benchmarks/heartbeats_store.py [--nodes 10000] [--rounds 5] [--batch 1000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta

import psycopg

from reconciler.core.fleet import NodeMetrics, NodeStatus, RecordedNode
from state import open_store, sessions

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=1_000)
    args = parser.parse_args()

    admin = (
        os.environ.get("RECONCILER_BENCH_POSTGRES_URL")
        or os.environ.get("RECONCILER_TEST_POSTGRES_URL")
        or DEFAULT_URL
    )
    admin_dsn = admin.replace("postgresql+psycopg://", "postgresql://")
    name = f"fr_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{admin.rsplit('/', 1)[0]}/{name}"
    print(f"database: {sessions.render_url(url)} (created for this run)")
    try:
        run(url, args.nodes, args.rounds, args.batch)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        print(f"database {name} dropped")


def run(url: str, count: int, rounds: int, batch: int) -> None:
    sessions.upgrade(url)
    store = open_store(url)
    try:
        start = datetime(2026, 1, 1, tzinfo=UTC)
        names = [f"bench-r{i % 8}-{i:05d}" for i in range(count)]
        nodes = [
            RecordedNode(
                id=str(uuid.uuid4()),
                fleet="bench",
                name=name,
                region=f"r{i % 8}",
                plan="small",
                status=NodeStatus.ACTIVE,
                service_id=100_000 + i,
                ip_address=f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
            )
            for i, name in enumerate(names)
        ]
        t = time.perf_counter()
        store.upsert_nodes(nodes)
        print(f"recorded {count} nodes in {time.perf_counter() - t:.2f} s")
        t = time.perf_counter()
        fleet = store.load_fleet("bench")
        print(f"load_fleet of {len(fleet.nodes)} nodes: {time.perf_counter() - t:.3f} s")

        rates: list[float] = []
        total_beats = 0
        total_time = 0.0
        for r in range(rounds):
            at = start + timedelta(seconds=30 * r)
            beats = [
                NodeMetrics(
                    node=name,
                    at=at,
                    cpu=0.3,
                    memory=0.5,
                    disk=0.2,
                    queue_length=i % 150,
                    sent=400 + i % 50,
                    bounces=i % 3,
                    complaints=0,
                )
                for i, name in enumerate(names)
            ]
            t = time.perf_counter()
            written = 0
            for offset in range(0, len(beats), batch):
                written += store.record_heartbeats("bench", beats[offset : offset + batch])
            elapsed = time.perf_counter() - t
            assert written == count, written
            rates.append(count / elapsed)
            total_beats += written
            total_time += elapsed
            print(
                f"round {r + 1}: {count} beats in {elapsed:.2f} s = {count / elapsed:,.0f} beats/s"
            )
        print(
            f"heartbeats: {total_beats} beats in {total_time:.2f} s; "
            f"overall {total_beats / total_time:,.0f} beats/s, median round "
            f"{statistics.median(rates):,.0f} beats/s (batch {batch}, target >= 2,000)"
        )
        print(
            f"metrics rows: {store.metrics_rows()} (bounded by nodes x window = "
            f"{count} x {store.metrics_window})"
        )
    finally:
        store.close()


if __name__ == "__main__":
    main()
