"""Shared set-up of the daemon benchmarks: a fresh PostgreSQL database, a simulator account and
a store holding the same N nodes (so the daemon's reconcile finds nothing to do), and the
daemon and simulator as processes on 127.0.0.1.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from providers.simulator.persisting import StateFile  # noqa: E402
from providers.simulator.world import World  # noqa: E402
from reconciler.core.fleet import NodeStatus, RecordedNode  # noqa: E402
from state.store import open_store  # noqa: E402

MASTER = "benchmark-master-secret-0123456789abcdef"
FLEET = "bench"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: {fleet}}}
provider: {{type: simulator, build_time: 1s}}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
regions:
  dallas: {{location_id: 13, plan: baseline, nodes: {nodes}}}
scaling: {{enabled: false}}
reconcile: {{interval: 60s}}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def fresh_database() -> Iterator[str]:
    admin = os.environ.get("RECONCILER_TEST_POSTGRES_URL", DEFAULT_PG)
    dsn = admin.replace("postgresql+psycopg://", "postgresql://")
    name = f"fr_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{admin.rsplit('/', 1)[0]}/{name}"
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def node_names(count: int) -> list[str]:
    return [f"{FLEET}-dallas-{i:05d}" for i in range(1, count + 1)]


def seed(count: int, database_url: str, state_file: Path, *, warmed: bool = False) -> list[str]:
    """N ACTIVE servers in a simulator state file and the same N nodes in the store
    (``warmed``: their IP warmup started 90 days ago, so it is over)."""
    world = World()
    now = datetime.now(UTC)
    warmup_start = now - timedelta(days=90) if warmed else now
    nodes: list[RecordedNode] = []
    for name in node_names(count):
        inst = world.seed_instance(srvrname=name, rid=52, location_id=13, status="ACTIVE")
        ip = inst.ips[0] if inst.ips else None
        nodes.append(
            RecordedNode(
                id=str(uuid.uuid4()),
                fleet=FLEET,
                name=name,
                region="dallas",
                plan="baseline",
                status=NodeStatus.ACTIVE,
                service_id=inst.serviceid,
                ip_address=ip,
                hostname=f"{name}.{FLEET}.example",
                created_at=now,
                rdns_done=True,
                warmup_started_at=warmup_start,
                approximate_cost=Decimal("14.98"),
                status_changed_at=now,
            )
        )
    StateFile(state_file).save(world)
    store = open_store(database_url, upgrade=True)
    try:
        for start in range(0, len(nodes), 1000):
            store.upsert_nodes(nodes[start : start + 1000])
    finally:
        store.close()
    return [n.name for n in nodes]


@dataclass
class Proc:
    popen: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            return self.popen.wait(10)


def spawn(args: list[str], env: dict[str, str], log: Path) -> Proc:
    with log.open("wb") as handle:
        popen = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli.main", *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(log.parent),
        )
    return Proc(popen, log)


def wait_http(url: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"{url} did not answer within {timeout:.0f}s")


@contextmanager
def running_daemon(
    work: Path,
    count: int,
    database_url: str,
    *,
    log_level: str = "info",
    spec_text: str | None = None,
    warmed: bool = False,
    daemon_env: dict[str, str] | None = None,
) -> Iterator[tuple[Proc, str, list[str]]]:
    """Seeded simulator + daemon; yields (daemon process, daemon URL, node names).
    ``spec_text``: another spec (``{fleet}`` and ``{nodes}`` filled in) than ``SPEC``;
    ``warmed``: the nodes' IP warmup is over (see ``seed``); ``daemon_env``: more environment
    for the daemon only (e.g. a profiler's ``PYTHONPATH``)."""
    state = work / "simulator.json"
    names = seed(count, database_url, state, warmed=warmed)
    spec = work / "fleet.yaml"
    spec.write_text((spec_text or SPEC).format(fleet=FLEET, nodes=count))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    sim_port = free_port()
    sim = spawn(
        ["simulator", "--port", str(sim_port), "--state", str(state), "--build-time", "1s"],
        env,
        work / "simulator.log",
    )
    daemon = None
    try:
        wait_http(f"http://127.0.0.1:{sim_port}/sim/health")
        port = free_port()
        denv = {
            **env,
            "HOSTWINDS_API_URL": f"http://127.0.0.1:{sim_port}/cloud/api.php",
            "RECONCILER_DATABASE_URL": database_url,
            "RECONCILER_STATE_DIR": str(work / "state"),
            "RECONCILER_NODE_MASTER_SECRET": MASTER,
            **(daemon_env or {}),
        }
        daemon = spawn(
            ["daemon", "-f", str(spec), "--listen", f"127.0.0.1:{port}", "--log-level", log_level],
            denv,
            work / "daemon.log",
        )
        url = f"http://127.0.0.1:{port}"
        wait_http(f"{url}/healthz")
        yield daemon, url, names
    finally:
        if daemon is not None:
            daemon.stop()
        sim.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_rss_mb(pid: int) -> float:
    """The process's RSS high-water mark (VmHWM): the peak since it started."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime + stime


def metric(url: str, name: str) -> float:
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_settled(
    url: str, nodes: int, timeout: float, poll: Callable[[], None] | None = None
) -> bool:
    """Wait until the daemon at ``url`` has reconciled once and sees ``nodes`` nodes (True), or
    ``timeout`` seconds passed (False); ``poll`` runs at each look (e.g. to sample its RSS)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if poll is not None:
            poll()
        if (
            metric(url, "reconciler_reconciles_total") >= 1
            and metric(url, "reconciler_fleet_nodes") >= nodes
        ):
            return True
        time.sleep(0.5)
    return False
