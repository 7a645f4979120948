"""Heartbeat ingestion through the daemon's HTTP endpoint into PostgreSQL, signed requests.

Target: at least 2,000 beats/s on this 2-core machine (10,000 nodes beating every 30 s is
333 beats/s; the target is six times that), and not below the 3,760/s measured before a 202
meant "committed" (issue 10: group commit, cross-replica replay check in the same UPDATE).

Run: ``.venv/bin/python benchmarks/heartbeat_ingest.py [--nodes 10000] [--beats 40000]
[--connections 64]``. Needs PostgreSQL (``RECONCILER_TEST_POSTGRES_URL``, default
postgres@127.0.0.1:5432).

The real ``reconcile daemon`` runs as a process over a store and a simulator account seeded
with the same N nodes (a steady fleet). The load generator shares the machine's two cores:
it keeps ``--connections`` HTTP/1.1 keep-alive connections over loopback, each sending one
signed beat after another (a minimal hand-written HTTP client: a Python HTTP library would
cost more CPU than the server it measures). Every beat has its own signature (node, sent
count and timestamp vary; a node's beats are one second apart), so none is refused as a
replay (HTTP answers are printed: any 409 would show). The figure reported is beats
accepted AND written to PostgreSQL per second: the clock stops when the daemon's
``reconciler_heartbeats_written_total`` reaches the number sent.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.daemonsetup import (
    MASTER,
    cpu_seconds,
    fresh_database,
    metric,
    rss_mb,
    running_daemon,
)
from reconciler.daemon.heartbeats import derive_node_secret, signed_headers

PATH = "/v1/heartbeats"


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
    host: str, port: int, requests: list[bytes], latencies: list[float], statuses: dict[int, int]
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
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
    host: str, port: int, requests: list[bytes], connections: int
) -> tuple[float, list[float], dict[int, int]]:
    shares = [requests[i::connections] for i in range(connections)]
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    started = time.perf_counter()
    await asyncio.gather(*(worker(host, port, share, latencies, statuses) for share in shares))
    return time.perf_counter() - started, latencies, statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--beats", type=int, default=40_000)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as url:
        with running_daemon(Path(tmp), args.nodes, url, log_level="warning") as (
            daemon,
            base,
            names,
        ):
            host, port_text = base.removeprefix("http://").split(":")
            port = int(port_text)
            deadline = time.monotonic() + 120
            while metric(base, "reconciler_fleet_nodes") < args.nodes:
                if time.monotonic() > deadline:
                    print("the daemon did not load the fleet in time")
                    return 1
                time.sleep(0.5)
            secrets = {n: derive_node_secret(MASTER.encode(), n) for n in names}
            now = int(time.time())
            prepared = time.perf_counter()
            # each round over the nodes one second later: a node's beats are strictly newer
            # than the previous ones (the store refuses a beat not newer than the node's newest)
            rounds = -(-args.beats // len(names))
            first = now - min(rounds, 250)
            requests = [
                build_request(
                    base,
                    names[i % len(names)],
                    secrets[names[i % len(names)]],
                    i,
                    first + i // len(names),
                )
                for i in range(args.beats)
            ]
            signing = time.perf_counter() - prepared
            written_before = metric(base, "reconciler_heartbeats_written_total")
            cpu_before = cpu_seconds(daemon.popen.pid)
            started = time.perf_counter()
            client_cpu = time.process_time()
            elapsed, latencies, statuses = asyncio.run(
                blast(host, port, requests, args.connections)
            )
            client_cpu = time.process_time() - client_cpu
            accepted = statuses.get(202, 0)
            while metric(base, "reconciler_heartbeats_written_total") - written_before < accepted:
                if time.perf_counter() - started > elapsed + 60:
                    break
                time.sleep(0.05)
            through_db = time.perf_counter() - started
            written = metric(base, "reconciler_heartbeats_written_total") - written_before
            daemon_cpu = cpu_seconds(daemon.popen.pid) - cpu_before
            rss = rss_mb(daemon.popen.pid)
        latencies.sort()
        print(f"nodes recorded:          {args.nodes:,}")
        print(f"beats sent:              {args.beats:,} over {args.connections} connections")
        print(f"HTTP answers:            {dict(sorted(statuses.items()))}")
        rate = accepted / elapsed
        print(f"accepted (HTTP 202):     {accepted:,} in {elapsed:.2f} s = {rate:,.0f}/s")
        print(
            f"written to PostgreSQL:   {written:,.0f} in {through_db:.2f} s = "
            f"{written / through_db:,.0f} beats/s  (target >= 2,000)"
        )
        print(
            f"latency p50 / p99:       {statistics.median(latencies) * 1000:.1f} ms / "
            f"{latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms"
        )
        share = 100 * daemon_cpu / through_db
        print(f"daemon CPU during run:   {daemon_cpu:.1f} s ({share:.0f} % of one core)")
        print(f"load generator CPU:      {client_cpu:.1f} s")
        print(f"machine load average:    {os.getloadavg()[0]:.2f} (2 cores; other work skews it)")
        print(f"daemon RSS after run:    {rss:.1f} MB")
        print(f"(requests signed beforehand in {signing:.2f} s, not counted)")
        print("verdict:", "PASS" if written / through_db >= 2000 else "FAIL")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
