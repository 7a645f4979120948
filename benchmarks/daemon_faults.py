"""The daemon under faults (issue 10): failover time and /healthz latency with a frozen database.

Run: ``.venv/bin/python benchmarks/daemon_faults.py [--requests 200]``. Needs the PostgreSQL
binaries (``initdb``, ``pg_ctl``): the benchmark runs its own private server as an unprivileged
user on loopback (tests/daemon/privatepg.py), the simulator and three ``reconcile daemon``
processes with default leadership settings (lease 10 s, renewed every second, standbys try
every 2 s).

Measured:
- ``/healthz`` latency (p50, p99) of one daemon while the database is healthy, then while it is
  frozen (SIGSTOP of every PostgreSQL process). Target p99 under 50 ms.
- failover after the leader is frozen (SIGSTOP): until another daemon reports leading
  (``/readyz``). Target under 15 s.
- failover after the leader is killed (SIGKILL). Target under 5 s.
- SIGTERM to a daemon whose reconcile waits on the frozen database (its event loop stuck):
  seconds until the process is gone, and its exit code (bound: ``--shutdown-grace`` 5 s + 10 s).

``--store sqlite``: the failovers with three daemons on one SQLite file instead (the lease and
the lock file of ``state.leadership.FileLeadership``); the database cannot be frozen there.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from state.store import open_store
from tests.daemon.privatepg import PrivatePostgres, private_postgres
from tests.daemon.processes import Proc, daemon_env, leaders, simulator, start_daemon, wait_for

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {name: bench}
provider: {type: simulator, build_time: 300ms}
plans:
  baseline: {rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}
regions:
  dallas: {location_id: 13, plan: baseline, nodes: 2}
"""


def healthz(url: str, count: int) -> list[float]:
    result = []
    with httpx.Client(timeout=10) as client:
        for _ in range(count):
            started = time.perf_counter()
            client.get(f"{url}/healthz")
            result.append(time.perf_counter() - started)
            time.sleep(0.01)
    return sorted(result)


def pct(values: list[float], share: float) -> float:
    return values[min(len(values) - 1, int(len(values) * share))] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--store", choices=("postgresql", "sqlite"), default="postgresql")
    args = parser.parse_args()
    sqlite = args.store == "sqlite"
    healthy: list[float] = []
    frozen: list[float] = []
    stop: tuple[float, int | None] | None = None
    with contextlib.ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        pg: PrivatePostgres | None = None
        if sqlite:
            url = f"sqlite:///{tmp}/state.db"
        else:
            pg = stack.enter_context(private_postgres())
            url = pg.url
        open_store(url, upgrade=True).close()
        spec = tmp / "fleet.yaml"
        spec.write_text(SPEC)
        procs: dict[str, Proc] = {}
        urls: dict[str, str] = {}
        with simulator(tmp) as sim:
            env = daemon_env(sim, url, tmp / "state")
            try:
                for name in ("a", "b", "c"):
                    procs[name], urls[name] = start_daemon(f"daemon-{name}", spec, env, tmp)
                wait_for(lambda: len(leaders(urls, set())) == 1, 30, "one leader")
                (leader,) = leaders(urls, set())
                standby = next(n for n in urls if n != leader)
                if pg is not None:
                    healthy = healthz(urls[standby], args.requests)
                    pg.freeze()
                    frozen = healthz(urls[standby], args.requests)
                    pg.thaw()
                wait_for(lambda: len(leaders(urls, set())) == 1, 30, "one leader again")
                (leader,) = leaders(urls, set())
                procs[leader].popen.send_signal(signal.SIGSTOP)
                started = time.monotonic()
                wait_for(lambda: len(leaders(urls, {leader})) == 1, 60, "a takeover", step=0.1)
                after_freeze = time.monotonic() - started
                procs[leader].popen.send_signal(signal.SIGCONT)
                # the resumed one stands down by itself (its own clock ended its lease)
                wait_for(lambda: len(leaders(urls, set())) == 1, 30, "one leader after the resume")
                (leader,) = leaders(urls, set())
                procs[leader].stop(signal.SIGKILL)
                started = time.monotonic()
                wait_for(lambda: len(leaders(urls, {leader})) == 1, 60, "a takeover", step=0.1)
                after_kill = time.monotonic() - started
                if pg is not None:
                    (leader,) = leaders(urls, {leader})
                    pg.freeze()
                    time.sleep(5)  # the next reconcile (every 30 s by default) or sweep waits
                    procs[leader].popen.send_signal(signal.SIGTERM)
                    started = time.monotonic()
                    code: int | None = None
                    with contextlib.suppress(Exception):
                        code = procs[leader].popen.wait(60)
                    stop = (time.monotonic() - started, code)
                    pg.thaw()
            finally:
                for proc in procs.values():
                    proc.popen.send_signal(signal.SIGCONT)
                    if proc.popen.poll() is None:
                        proc.stop(signal.SIGTERM)
    print(f"store: {args.store}")
    if healthy and frozen:
        print(
            f"/healthz, database healthy: p50 {pct(healthy, 0.5):.1f} ms, "
            f"p99 {pct(healthy, 0.99):.1f} ms"
        )
        print(
            f"/healthz, database frozen:  p50 {pct(frozen, 0.5):.1f} ms, "
            f"p99 {pct(frozen, 0.99):.1f} ms  (target p99 < 50 ms)"
        )
    print(f"failover after the leader froze (SIGSTOP): {after_freeze:.1f} s  (target < 15 s)")
    print(f"failover after the leader was killed:      {after_kill:.1f} s  (target < 5 s)")
    if stop is not None:
        print(
            f"SIGTERM with the database frozen: gone after {stop[0]:.1f} s, exit code {stop[1]} "
            "(bound 15 s)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
