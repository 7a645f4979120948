"""The heartbeat path in PostgreSQL: HOT share, table sizes, WAL per beat, and the sweep's read
on a fresh database, for the schema before issue 14 (revision 0009) and the current head, in
the same run on the same server.

Run: ``.venv/bin/python benchmarks/heartbeats_pg.py [--nodes 10000] [--steady 6]``. For each
schema it creates a database, records N nodes, fills every node's metrics ring (``window``
rounds of one signed beat per node, batches of 1,000 as the daemon's ingestion sends them),
then measures ``--steady`` more rounds: updates that were in place (``n_tup_hot_upd`` /
``n_tup_upd`` of the tables a beat updates), WAL written per beat (``pg_current_wal_lsn``), and
the size of each table before and after. Last, on a fresh database (no ANALYZE, no
autovacuum yet), the time of ``recent_metrics`` for N/10 and N nodes: linear means about x10.

Targets (issue 14): HOT share > 90 %, WAL per beat <= 1/3 of the schema before (measured
here; the issue measured 707 bytes), no growth of the tables across steady rounds, and a
linear sweep read.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.core.fleet import NodeMetrics, NodeStatus, RecordedNode
from state import open_store, sessions

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
BEFORE = "0009_cost_history"
TABLES = ("sending_nodes", "node_metrics", "node_send_counts")
ISSUE_WAL_PER_BEAT = 707.0
START = datetime(2026, 1, 1, tzinfo=UTC)


def admin_url() -> str:
    return (
        os.environ.get("RECONCILER_BENCH_POSTGRES_URL")
        or os.environ.get("RECONCILER_TEST_POSTGRES_URL")
        or DEFAULT_URL
    )


def dsn(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


@contextmanager
def database() -> Iterator[str]:
    admin = admin_url()
    name = f"fr_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn(admin), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(dsn(admin), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def nodes(count: int) -> list[RecordedNode]:
    return [
        RecordedNode(
            id=str(uuid.uuid4()),
            fleet="bench",
            name=f"bench-r{i % 8}-{i:05d}",
            region=f"r{i % 8}",
            plan="small",
            status=NodeStatus.ACTIVE,
            service_id=100_000 + i,
            ip_address=f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}",
            hostname=f"bench-r{i % 8}-{i:05d}.mail.example.com",
            pool="shared",
            created_at=START,
            warmup_started_at=START,
            status_changed_at=START,
        )
        for i in range(count)
    ]


def beats(names: list[str], round_number: int) -> list[NodeMetrics]:
    at = START + timedelta(seconds=30 * round_number)
    return [
        NodeMetrics(
            node=name,
            at=at,
            cpu=0.3,
            memory=0.5,
            disk=0.2,
            queue_length=(i + round_number) % 150,
            sent=400 + i % 50,
            bounces=i % 3,
            complaints=0,
            soft_bounces=i % 2,
            sent_at=int(at.timestamp()),
        )
        for i, name in enumerate(names)
    ]


def stats(url: str) -> dict[str, tuple[int, int, int]]:
    """Per table: (updates, HOT updates, total size in bytes)."""
    with psycopg.connect(dsn(url), autocommit=True) as conn:
        time.sleep(1.2)  # statistics are flushed at most once a second
        conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = conn.execute(
            "SELECT relname, n_tup_upd, n_tup_hot_upd, pg_total_relation_size(relid) "
            "FROM pg_stat_user_tables WHERE relname = ANY(%s)",
            (list(TABLES),),
        ).fetchall()
    return {str(r[0]): (int(r[1]), int(r[2]), int(r[3])) for r in rows}


def wal_lsn(url: str) -> int:
    with psycopg.connect(dsn(url), autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone()
    assert row is not None
    return int(row[0])


def steady(url: str, revision: str, count: int, rounds: int) -> dict[str, float]:
    sessions.upgrade(url, revision=revision)
    store = open_store(url, upgrade=False) if revision == "head" else None
    if store is None:  # the old schema: bypass the head check, same store code
        from state.store import SqlStore

        store = SqlStore(
            sessions.make_engine(sessions.resolve_url(url)), url=sessions.resolve_url(url)
        )
    try:
        seeded = nodes(count)
        store.upsert_nodes(seeded)
        names = [n.name for n in seeded]
        window = store.metrics_window
        for r in range(window):  # fill every ring: from here on a beat is an update
            send(store, beats(names, r))
        before = stats(url)
        lsn = wal_lsn(url)
        started = time.perf_counter()
        for r in range(window, window + rounds):
            send(store, beats(names, r))
        elapsed = time.perf_counter() - started
        wal = wal_lsn(url) - lsn
        after = stats(url)
    finally:
        store.close()
    total = count * rounds
    result = {"wal_per_beat": wal / total, "beats_per_s": total / elapsed}
    updates = hot = 0
    for table in TABLES:
        upd = after[table][0] - before[table][0]
        hot_upd = after[table][1] - before[table][1]
        updates += upd
        hot += hot_upd
        result[f"{table}.hot"] = hot_upd / upd if upd else float("nan")
        result[f"{table}.size_before"] = before[table][2]
        result[f"{table}.size_after"] = after[table][2]
    result["hot"] = hot / updates if updates else float("nan")
    return result


def send(store: object, batch: list[NodeMetrics]) -> None:
    for offset in range(0, len(batch), 1000):
        recorded = store.record_heartbeats("bench", batch[offset : offset + 1000])  # type: ignore[attr-defined]
        assert recorded == len(batch[offset : offset + 1000]), recorded


def sweep_read(count: int) -> float:
    """Seconds of one ``recent_metrics`` on a fresh database holding ``count`` nodes with a
    full ring each (no ANALYZE)."""
    with database() as url:
        sessions.upgrade(url)
        store = open_store(url)
        try:
            seeded = nodes(count)
            store.upsert_nodes(seeded)
            names = [n.name for n in seeded]
            for r in range(store.metrics_window):
                send(store, beats(names, r))
            started = time.perf_counter()
            found = store.recent_metrics("bench", START)
            elapsed = time.perf_counter() - started
            assert len(found) == count
        finally:
            store.close()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--steady", type=int, default=6)
    args = parser.parse_args()
    results = {}
    for label, revision in (("before (0009)", BEFORE), ("head", "head")):
        with database() as url:
            results[label] = steady(url, revision, args.nodes, args.steady)
    print(f"{args.nodes:,} nodes, {args.steady} steady rounds after the rings are full")
    print(f"{'':<30} {'before (0009)':>16} {'head':>16}")
    rows = [("HOT share, all updates", "hot", "{:.1%}")]
    rows += [(f"HOT share, {t}", f"{t}.hot", "{:.1%}") for t in TABLES]
    rows += [("WAL bytes per beat", "wal_per_beat", "{:,.0f}")]
    for t in TABLES:
        rows += [(f"{t} size before (kB)", f"{t}.size_before", "{:,.0f}")]
        rows += [(f"{t} size after (kB)", f"{t}.size_after", "{:,.0f}")]
    rows += [("beats/s (store only)", "beats_per_s", "{:,.0f}")]
    for title, key, fmt in rows:
        scale = 1024 if "(kB)" in title else 1
        cells = [fmt.format(results[label][key] / scale) for label in results]
        print(f"{title:<30} {cells[0]:>16} {cells[1]:>16}")
    head = results["head"]
    before = results["before (0009)"]
    share = head["wal_per_beat"] / before["wal_per_beat"]
    print(
        f"HOT share {head['hot']:.1%} (target > 90 %): {'MET' if head['hot'] > 0.9 else 'MISSED'}"
    )
    print(
        f"WAL per beat {head['wal_per_beat']:,.0f} B = {share:.2f} of this run's 'before' "
        f"({before['wal_per_beat']:,.0f} B; target <= 1/3): {'MET' if share <= 1 / 3 else 'MISSED'}"
        f"; {head['wal_per_beat'] / ISSUE_WAL_PER_BEAT:.2f} of the 707 B the issue measured"
    )
    grew = [t for t in TABLES if head[f"{t}.size_after"] > head[f"{t}.size_before"] * 1.05]
    print(f"tables grown by > 5 % over the steady rounds (head): {', '.join(grew) or 'none'}")
    small, large = max(1, args.nodes // 10), args.nodes
    t_small, t_large = sweep_read(small), sweep_read(large)
    growth = t_large / t_small
    print(
        f"recent_metrics on a fresh database: {small:,} nodes {t_small * 1000:.0f} ms, "
        f"{large:,} nodes {t_large * 1000:.0f} ms: x{growth:.1f} for x{large / small:g} "
        f"({'linear' if growth < 2 * large / small else 'NOT linear'})"
    )


if __name__ == "__main__":
    main()
