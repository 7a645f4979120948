"""Heartbeat ingestion through the daemon's HTTP endpoint into PostgreSQL, signed requests,
against its ceiling, with one and two daemon replicas on one PostgreSQL (issues 10 and 14).

Targets: the daemon with durability (202 only once the beat is committed) and the store-side
replay check at least 0.8 of the ceiling's throughput (issue 14), and not below 3,760 beats/s
(issue 10; an absolute figure from a quiet machine, printed for reference only: on a shared
machine the ratio is what holds).

Run: ``.venv/bin/python benchmarks/heartbeat_ingest.py [--nodes 10000] [--beats 20000]
[--connections 64] [--repeat 3]``. Needs PostgreSQL (``RECONCILER_TEST_POSTGRES_URL``, default
postgres@127.0.0.1:5432); creates and drops its own database.

Set-up: a simulator account and a store seeded with the same N nodes (a steady fleet), two
``reconcile daemon`` processes on that store (both run throughout, as two replicas would: the
second idles while the first is measured alone) and the ceiling app
(``benchmarks/ceiling_app.py``: the same uvicorn server set-up, a bare Starlette route that
checks the HMAC and parses the JSON, nothing else).

Each repetition measures, one after the other: the ceiling, the daemon alone, the two daemons
(the connections split between them, as a load balancer would). The load generator is the
same for all: ``--connections`` HTTP/1.1 keep-alive connections over loopback, each sending one
signed beat after another (a minimal hand-written client: a Python HTTP library would cost
more CPU than the server it measures). Every beat has its own signature and a node's beats are
one second apart, so none is a replay (HTTP answers are printed: any 409 would show). A beat
counts when answered 202; for the daemon that means committed, and the daemon's
``reconciler_heartbeats_written_total`` is checked to have grown by as much. Figures are
medians over the repetitions; ratios are taken within each repetition, then the median.

CPU per beat: the servers' during the run ("server CPU"), the same less their idle rate
("intake"), and "settled": counted on until ``--settle`` seconds after the last answer (past
the next sweep), less idle, so the work the replicas do afterwards because of the beats (each
one's poll reading what the other recorded) counts. "PostgreSQL": the CPU of the server
processes of the sessions on the benchmark's database during the run (the WAL writer and
checkpointer, shared, are not counted).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.daemonsetup import (
    FLEET,
    MASTER,
    SPEC,
    Proc,
    cpu_seconds,
    free_port,
    fresh_database,
    metric,
    seed,
    spawn,
    wait_http,
)
from reconciler.daemon.heartbeats import derive_node_secret, signed_headers

PATH = "/v1/heartbeats"
ROOT = Path(__file__).resolve().parents[1]


def build_request(host: str, node: str, secret: str, sent: int, now: int) -> bytes:
    body = json.dumps(
        {
            "node": node,
            "cpu": 0.42,
            "memory": 0.51,
            "disk": 0.33,
            "queue_length": sent % 50,
            "sent": sent % 500,  # plausible: 1,000/min per vCPU, 30 s beats
            "bounces": sent % 3,
            "complaints": 0,
            "interval_seconds": 30,
        },
        separators=(",", ":"),
    ).encode()
    headers = signed_headers(node, secret, "POST", PATH, body, now)
    head = [f"POST {PATH} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    head += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:].strip())
    if length:
        await reader.readexactly(length)
    return status


async def worker(
    port: int, requests: list[bytes], latencies: list[float], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for request in requests:
            started = time.perf_counter()
            writer.write(request)
            status = await read_response(reader)
            latencies.append(time.perf_counter() - started)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()
        await writer.wait_closed()


async def blast(
    ports: list[int], requests: list[bytes], connections: int
) -> tuple[float, list[float], dict[int, int]]:
    """``connections`` connections spread over ``ports`` (round robin)."""
    shares = [requests[i::connections] for i in range(connections)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    await asyncio.gather(
        *(
            worker(ports[i % len(ports)], share, latencies, statuses)
            for i, share in enumerate(shares)
        )
    )
    return time.perf_counter() - started, latencies, statuses


@dataclass
class Result:
    name: str
    rate: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    cpu_us_per_beat: float  # server processes' CPU (all replicas) per accepted beat
    #: the same less what the processes use when idle (the daemon's periodic jobs)
    intake_us_per_beat: float
    written: float  # daemon: heartbeats_written_total growth
    #: the servers' CPU per accepted beat less idle, counted until ``settle`` seconds after the
    #: last answer: what the replicas spend afterwards on the beats (their polls read the beats
    #: the other replica recorded) counts too
    settled_us_per_beat: float = 0.0
    #: CPU of the PostgreSQL backends serving the benchmark's database, per accepted beat
    pg_us_per_beat: float = 0.0


def pg_backends(url: str) -> list[int]:
    """The server processes of the sessions connected to the database of ``url``."""
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()"
        ).fetchall()
    return [int(pid) for (pid,) in rows]


def cpu_of(pids: list[int]) -> dict[int, float]:
    seen: dict[int, float] = {}
    for pid in pids:
        try:
            seen[pid] = cpu_seconds(pid)
        except OSError:  # ended meanwhile
            continue
    return seen


def cpu_since(before: dict[int, float], now: list[int]) -> float:
    """CPU of the processes since ``before``; one not there before (a session the pool
    opened during the run) counts whole."""
    after = cpu_of(sorted({*before, *now}))
    return sum(after[pid] - before.get(pid, 0.0) for pid in after)


class Bench:
    def __init__(self, names: list[str], beats: int, connections: int) -> None:
        self.names = names
        self.beats = beats
        self.connections = connections
        self.secrets = {n: derive_node_secret(MASTER.encode(), n) for n in names}
        self.next_second = int(time.time()) - 5

    def requests(self) -> list[bytes]:
        """A fresh set: each round over the nodes one second later than any before, so every
        beat is newer than its node's newest recorded one."""
        # the daemon refuses a timestamp more than 300 s old: a slow run must still be inside
        first = max(self.next_second, int(time.time()) - 5)
        rounds = -(-self.beats // len(self.names))
        self.next_second = first + rounds
        count = len(self.names)
        return [
            build_request(
                "127.0.0.1",
                self.names[i % count],
                self.secrets[self.names[i % count]],
                i,
                first + i // count,
            )
            for i in range(self.beats)
        ]

    def run(
        self,
        name: str,
        ports: list[int],
        pids: list[int],
        urls: list[str],
        idle: float = 0.0,
        *,
        database: str | None = None,
        settle: float = 0.0,
    ) -> Result:
        """``idle``: the processes' CPU seconds per second when idle (subtracted);
        ``database``: whose PostgreSQL backends' CPU to count; ``settle``: seconds to go on
        counting the servers' CPU after the last answer."""
        requests = self.requests()
        written_before = sum(metric(u, "reconciler_heartbeats_written_total") for u in urls)
        backends = cpu_of(pg_backends(database)) if database is not None else {}
        cpu_before = sum(cpu_seconds(p) for p in pids)
        elapsed, latencies, statuses = asyncio.run(blast(ports, requests, self.connections))
        cpu = sum(cpu_seconds(p) for p in pids) - cpu_before
        pg = cpu_since(backends, pg_backends(database)) if database is not None else 0.0
        written = sum(metric(u, "reconciler_heartbeats_written_total") for u in urls)
        accepted = max(statuses.get(202, 0), 1)
        if settle:
            time.sleep(settle)
        settled = sum(cpu_seconds(p) for p in pids) - cpu_before - idle * (elapsed + settle)
        latencies.sort()
        return Result(
            name,
            accepted / elapsed,
            statistics.median(latencies) * 1000,
            latencies[int(len(latencies) * 0.99)] * 1000,
            dict(sorted(statuses.items())),
            cpu / accepted * 1e6,
            (cpu - idle * elapsed) / accepted * 1e6,
            written - written_before,
            settled / accepted * 1e6,
            pg / accepted * 1e6,
        )


def idle_rate(pid: int, seconds: float = 15.0) -> float:
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def wait_fleet(url: str, nodes: int) -> None:
    deadline = time.monotonic() + 180
    while metric(url, "reconciler_fleet_nodes") < nodes:
        if time.monotonic() > deadline:
            raise SystemExit(f"{url}: the daemon did not load the fleet in time")
        time.sleep(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--beats", type=int, default=20_000, help="per measurement")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--settle",
        type=float,
        default=12.0,
        help="seconds the daemons' CPU is still counted after a run (past their next sweep, "
        "whose poll reads the beats the other replica recorded)",
    )
    args = parser.parse_args()
    procs: list[Proc] = []
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as url:
        work = Path(tmp)
        try:
            state = work / "simulator.json"
            # warmed: the IPs are past their warmup, so 8,000 beats of up to 500 emails do not
            # raise an over-warmup alert per node at every sweep (measured with the intake)
            names = seed(args.nodes, url, state, warmed=True)
            spec = work / "fleet.yaml"
            spec.write_text(SPEC.format(fleet=FLEET, nodes=args.nodes))
            env = {**os.environ, "PYTHONPATH": str(ROOT), "RECONCILER_NODE_MASTER_SECRET": MASTER}
            sim_port = free_port()
            procs.append(
                spawn(
                    ["simulator", "--port", str(sim_port), "--state", str(state)],
                    env,
                    work / "simulator.log",
                )
            )
            wait_http(f"http://127.0.0.1:{sim_port}/sim/health")
            ceiling_port = free_port()
            with (work / "ceiling.log").open("wb") as log:
                ceiling = Proc(
                    subprocess.Popen(
                        [
                            sys.executable,
                            str(ROOT / "benchmarks" / "ceiling_app.py"),
                            "--port",
                            str(ceiling_port),
                        ],
                        stdout=log,
                        stderr=log,
                        env=env,
                    ),
                    work / "ceiling.log",
                )
            procs.append(ceiling)
            daemons: list[tuple[Proc, int, str]] = []
            for replica in ("a", "b"):
                port = free_port()
                denv = {
                    **env,
                    "HOSTWINDS_API_URL": f"http://127.0.0.1:{sim_port}/cloud/api.php",
                    "RECONCILER_DATABASE_URL": url,
                    "RECONCILER_STATE_DIR": str(work / f"state-{replica}"),
                }
                proc = spawn(
                    [
                        "daemon",
                        "-f",
                        str(spec),
                        "--listen",
                        f"127.0.0.1:{port}",
                        "--log-level",
                        "warning",
                    ],
                    denv,
                    work / f"daemon-{replica}.log",
                )
                procs.append(proc)
                daemons.append((proc, port, f"http://127.0.0.1:{port}"))
            wait_http(f"http://127.0.0.1:{ceiling_port}/healthz")
            for _, _, durl in daemons:
                wait_http(f"{durl}/healthz")
                wait_fleet(durl, args.nodes)
            (a, a_port, a_url), (b, b_port, b_url) = daemons
            time.sleep(20)  # past the start-up reconcile and first assessments
            idle_a = idle_rate(a.popen.pid)
            idle_b = idle_rate(b.popen.pid)
            print(
                f"daemons idle (no beats): {100 * idle_a:.0f} % and {100 * idle_b:.0f} % of "
                "a core (their periodic jobs; subtracted from the intake CPU)"
            )
            bench = Bench(names, args.beats, args.connections)
            rows: list[list[Result]] = []
            loads: list[float] = []
            for r in range(args.repeat):
                ceiling_result = bench.run("ceiling", [ceiling_port], [ceiling.popen.pid], [])
                one = bench.run(
                    "daemon x1",
                    [a_port],
                    [a.popen.pid],
                    [a_url],
                    idle_a,
                    database=url,
                    settle=args.settle,
                )
                two = bench.run(
                    "daemon x2",
                    [a_port, b_port],
                    [a.popen.pid, b.popen.pid],
                    [a_url, b_url],
                    idle_a + idle_b,
                    database=url,
                    settle=args.settle,
                )
                load = os.getloadavg()[0]
                rows.append([ceiling_result, one, two])
                loads.append(load)
                print(f"-- repetition {r + 1} (load average {load:.1f})")
                for res in (ceiling_result, one, two):
                    print(
                        f"   {res.name:10s} {res.rate:8,.0f} beats/s  p50 {res.p50_ms:6.1f} ms "
                        f"p99 {res.p99_ms:7.1f} ms  server CPU {res.cpu_us_per_beat:5.0f} us/beat"
                        f" (intake {res.intake_us_per_beat:5.0f}"
                        + (
                            f", settled {res.settled_us_per_beat:5.0f}, PostgreSQL "
                            f"{res.pg_us_per_beat:4.0f}"
                            if res.name != "ceiling"
                            else ""
                        )
                        + ")"
                        f"  answers {res.statuses}"
                        + (f"  written {res.written:,.0f}" if res.name != "ceiling" else "")
                    )
                print(
                    f"   ratio x1 {one.rate / ceiling_result.rate:.2f}  "
                    f"x2 {two.rate / ceiling_result.rate:.2f}"
                )
        finally:
            for proc in reversed(procs):
                proc.stop()
    med = statistics.median
    ceiling_rate = med(row[0].rate for row in rows)
    print()
    print(
        f"nodes {args.nodes:,}; {args.beats:,} beats per measurement over "
        f"{args.connections} connections; {args.repeat} repetitions; load average "
        f"{med(loads):.1f} (2 cores shared with other work)"
    )
    print(
        f"ceiling (bare Starlette, HMAC + JSON):  {ceiling_rate:8,.0f} beats/s  "
        f"CPU {med(row[0].cpu_us_per_beat for row in rows):.0f} us/beat"
    )
    ok = True
    for index, label in ((1, "daemon, 1 replica"), (2, "daemon, 2 replicas")):
        rate = med(row[index].rate for row in rows)
        ratio = med(row[index].rate / row[0].rate for row in rows)
        cpu = med(row[index].cpu_us_per_beat for row in rows)
        intake = med(row[index].intake_us_per_beat for row in rows)
        settled = med(row[index].settled_us_per_beat for row in rows)
        pg = med(row[index].pg_us_per_beat for row in rows)
        p50 = med(row[index].p50_ms for row in rows)
        lost = sum(row[index].statuses.get(202, 0) - row[index].written for row in rows)
        print(
            f"{label + ':':38s} {rate:8,.0f} beats/s  ratio {ratio:.2f} (target >= 0.80)  "
            f"p50 {p50:.1f} ms  CPU {cpu:.0f} us/beat (intake {intake:.0f}, settled "
            f"{settled:.0f}, PostgreSQL {pg:.0f})  "
            f"202 not written: {lost:.0f}"
        )
        ok = ok and ratio >= 0.8 and lost == 0
    print("verdict:", "PASS" if ok else "FAIL")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
