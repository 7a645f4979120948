"""Daemon memory and idle CPU with 10,000 nodes recorded (target: under 200 MB RSS).

Run: ``.venv/bin/python benchmarks/daemon_memory.py [--nodes 10000] [--idle 60]``.
Needs PostgreSQL (``RECONCILER_TEST_POSTGRES_URL``, default postgres@127.0.0.1:5432).

Seeds a simulator account and the store with N matching nodes (a steady fleet: the daemon's
reconciles find nothing to do), starts ``reconcile daemon`` as a process, waits until it has
reconciled once and built its fleet view, then samples its RSS and CPU time over an idle
window (no heartbeats arriving). Prints RSS at start, peak and end, and idle CPU as a share
of one core.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.daemonsetup import (
    cpu_seconds,
    fresh_database,
    metric,
    rss_mb,
    running_daemon,
    wait_settled,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, fresh_database() as url:
        work = Path(tmp)
        seeded = time.monotonic()
        with running_daemon(work, args.nodes, url) as (daemon, base, _names):
            pid = daemon.popen.pid
            started = time.monotonic()
            if not wait_settled(base, args.nodes, 180):
                print("the daemon did not settle in 180 s; see", daemon.log)
                return 1
            settle = time.monotonic() - started
            rss_start = rss_mb(pid)
            cpu_start = cpu_seconds(pid)
            t0 = time.monotonic()
            peak = rss_start
            while time.monotonic() - t0 < args.idle:
                time.sleep(1.0)
                peak = max(peak, rss_mb(pid))
            elapsed = time.monotonic() - t0
            cpu = cpu_seconds(pid) - cpu_start
            rss_end = rss_mb(pid)
            reconciles = metric(base, "reconciler_reconciles_total")
            changes = metric(base, "reconciler_changes_total")
        log_text = daemon.log.read_text(errors="replace")
        print(f"nodes recorded:            {args.nodes:,}")
        print(f"set-up (seed):             {started - seeded:.1f} s")
        print(f"daemon settled after:      {settle:.1f} s (first reconcile + fleet view)")
        print(f"RSS after settling:        {rss_start:.1f} MB")
        print(f"RSS peak over idle window: {peak:.1f} MB  (target < 200 MB)")
        print(f"RSS at the end:            {rss_end:.1f} MB")
        print(
            f"idle CPU:                  {cpu:.2f} s over {elapsed:.0f} s = "
            f"{100 * cpu / elapsed:.1f} % of one core"
        )
        print(f"reconciles run:            {reconciles:.0f} (changes applied: {changes:.0f})")
        plan_lines = sum(1 for line in log_text.splitlines() if " create " in line)
        print(f"create lines in the log:   {plan_lines} (0 expected: a steady fleet)")
        print(f"machine load average:      {os.getloadavg()[0]:.2f} (2 cores)")
        print("verdict:", "PASS" if peak < 200 else "FAIL", "(RSS target)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
