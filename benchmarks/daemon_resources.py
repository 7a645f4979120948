"""The daemon's CPU and memory with 10,000 nodes, at rest and at the production beat rate.

Targets (issue 14): at rest under 2 % of one core; at 333 signed beats/s (10,000 nodes every
30 s) under 10 % of one core, and RSS under 200 MB, the peak included (``VmHWM``: the high-water
mark since the process started, its first reconcile and first fleet view included).

Run: ``.venv/bin/python benchmarks/daemon_resources.py [--nodes 10000] [--rate 333]
[--idle 60] [--warmup 100] [--measure 90]``. Needs PostgreSQL (``RECONCILER_TEST_POSTGRES_URL``,
default postgres@127.0.0.1:5432).

The real ``reconcile daemon`` runs as a process over a store and a simulator account seeded
with the same N nodes (a steady fleet: its reconciles find nothing to do), with the autoscaler
on (the region is autoscaled between N and N: it evaluates every 15 s and never changes the
count) and health on ``alert`` (on a starved machine a late beat must not start pauses and
replacements: the benchmark measures a steady fleet, not health decisions). Once it has
reconciled and built its fleet view, the benchmark samples its CPU time
(utime + stime from ``/proc``, every thread) and RSS over an idle window, then sends signed
beats at ``--rate`` per second through a few keep-alive connections (each node once per
N / rate seconds, as its agent would), lets the figures fill the health horizon (``--warmup``),
and samples again over ``--measure`` seconds. ``/metrics`` is read only between the windows.
Prints every figure with its ratio to the target (a ratio under 1 passes).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from benchmarks.daemonsetup import (
    MASTER,
    ROOT,
    cpu_seconds,
    fresh_database,
    peak_rss_mb,
    rss_mb,
    running_daemon,
    wait_settled,
)
from benchmarks.heartbeat_ingest import build_request, read_response
from reconciler.daemon.heartbeats import derive_node_secret

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: {fleet}}}
provider: {{type: simulator, build_time: 1s}}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
regions:
  dallas: {{location_id: 13, plan: baseline, nodes: {{min: {nodes}, max: {nodes}}}}}
scaling: {{enabled: true, evaluation_interval: 15s}}
reconcile: {{interval: 60s}}
health: {{on_unhealthy: alert}}
"""

#: ``--profile DIR``: the daemon imports this (as ``sitecustomize``) and profiles every thread
#: with cProfile; each label the benchmark appends to ``DIR/marks`` closes the window the
#: previous label opened and writes its figures to ``DIR/<previous label>.prof`` (pstats).
PROFILER = """\
import cProfile, gc, marshal, os, threading, time

_DIR = os.path.dirname(os.path.abspath(__file__))
_PROFILES = []


def _snapshot():
    total = {}
    enabled = gc.isenabled()
    gc.disable()  # no finalizer may run another thread's code while its tree is read
    try:
        for prof in list(_PROFILES):
            prof.snapshot_stats()
            for key, (cc, nc, tt, ct, callers) in prof.stats.items():
                old = total.get(key)
                if old is None:
                    total[key] = (cc, nc, tt, ct, dict(callers))
                    continue
                merged = dict(old[4])
                for caller, figures in callers.items():
                    had = merged.get(caller)
                    merged[caller] = (
                        figures if had is None else tuple(a + b for a, b in zip(had, figures))
                    )
                total[key] = (old[0] + cc, old[1] + nc, old[2] + tt, old[3] + ct, merged)
    finally:
        if enabled:
            gc.enable()
    return total


def _diff(new, old):
    out = {}
    for key, (cc, nc, tt, ct, callers) in new.items():
        before = old.get(key)
        if before is not None:
            cc, nc, tt, ct = cc - before[0], nc - before[1], tt - before[2], ct - before[3]
            kept = {}
            for caller, figures in callers.items():
                had = before[4].get(caller)
                if had is not None:
                    figures = tuple(a - b for a, b in zip(figures, had))
                if figures[1] > 0:
                    kept[caller] = figures
            callers = kept
        if nc > 0:
            out[key] = (cc, nc, tt, ct, callers)
    return out


def _watch():
    marks = os.path.join(_DIR, "marks")
    seen, label, base = 0, None, None
    while True:
        time.sleep(0.2)
        try:
            with open(marks) as handle:
                lines = handle.read().split()
        except OSError:
            continue
        for new in lines[seen:]:
            now = _snapshot()
            if label is not None:
                with open(os.path.join(_DIR, label + ".prof"), "wb") as out:
                    marshal.dump(_diff(now, base), out)
            label, base = new, now
        seen = len(lines)


threading.Thread(target=_watch, daemon=True, name="bench-profiler").start()
_inner = threading.Thread._bootstrap_inner


def _bootstrap_inner(self):
    prof = cProfile.Profile()
    _PROFILES.append(prof)
    prof.enable()
    _inner(self)


threading.Thread._bootstrap_inner = _bootstrap_inner
_main = cProfile.Profile()
_PROFILES.append(_main)
_main.enable()
"""

IDLE_TARGET = 0.02
LOAD_TARGET = 0.10
RSS_TARGET = 200.0


def exact_metric(url: str, name: str) -> float:
    """The sum of the samples named exactly ``name`` (any labels)."""
    total = 0.0
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith("#"):
            continue
        sample = line.split("{", 1)[0].split(" ", 1)[0]
        if sample == name:
            total += float(line.rsplit(" ", 1)[1])
    return total


class Load:
    """Signed beats at a steady rate over ``connections`` keep-alive connections."""

    def __init__(self, host: str, port: int, names: list[str], rate: float, connections: int):
        self.host, self.port = host, port
        self.names = names
        self.secrets = {n: derive_node_secret(MASTER.encode(), n) for n in names}
        self.rate = rate
        self.connections = connections
        self.sent = 0
        self.statuses: dict[int, int] = {}
        self.latencies: list[float] = []
        self.stop = asyncio.Event()

    async def run(self) -> None:
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        workers = [asyncio.create_task(self._worker(queue)) for _ in range(self.connections)]
        started = time.monotonic()
        while not self.stop.is_set():
            due = int((time.monotonic() - started) * self.rate)
            while self.sent < due:
                queue.put_nowait(self.sent)
                self.sent += 1
            await asyncio.sleep(0.05)
        for _ in workers:
            queue.put_nowait(None)
        await asyncio.gather(*workers)

    async def _worker(self, queue: asyncio.Queue[int | None]) -> None:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            while (number := await queue.get()) is not None:
                # signed when it goes out: a beat that waited here is not refused as stale
                name = self.names[number % len(self.names)]
                request = build_request(
                    self.host, name, self.secrets[name], number, int(time.time())
                )
                began = time.perf_counter()
                writer.write(request)
                status = await read_response(reader)
                self.latencies.append(time.perf_counter() - began)
                self.statuses[status] = self.statuses.get(status, 0) + 1
        finally:
            writer.close()
            await writer.wait_closed()


def sample(pid: int, seconds: float) -> tuple[float, float, float, float]:
    """(CPU seconds, wall seconds, median RSS MB, max RSS MB) over ``seconds``."""
    cpu0, t0 = cpu_seconds(pid), time.monotonic()
    rss: list[float] = []
    while time.monotonic() - t0 < seconds:
        time.sleep(1.0)
        rss.append(rss_mb(pid))
    return cpu_seconds(pid) - cpu0, time.monotonic() - t0, statistics.median(rss), max(rss)


async def load_phase(
    load: Load, pid: int, warmup: float, measure: float, mark: Callable[[str], None]
) -> tuple[float, float, float, float, int]:
    task = asyncio.create_task(load.run())
    mark("warmup")
    await asyncio.sleep(warmup)
    sent0 = load.sent
    mark("load")
    result = await asyncio.to_thread(sample, pid, measure)
    mark("end")
    sent = load.sent - sent0
    load.stop.set()
    await task
    return (*result, sent)


def verdict(ratio: float) -> str:
    return "PASS" if ratio < 1.0 else "FAIL"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=333.0, help="beats per second")
    parser.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument("--warmup", type=float, default=100.0, help="beats before measuring")
    parser.add_argument("--measure", type=float, default=90.0, help="measured window under load")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--keep-log", help="copy the daemon's log there at the end")
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="profile the daemon (cProfile, every thread; it runs slower): DIR/idle.prof, "
        "DIR/warmup.prof and DIR/load.prof, one per window (read them with pstats)",
    )
    args = parser.parse_args()
    daemon_env: dict[str, str] = {}
    profile = Path(args.profile).resolve() if args.profile else None
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        (profile / "marks").write_text("")
        (profile / "sitecustomize.py").write_text(PROFILER)
        daemon_env["PYTHONPATH"] = f"{profile}{os.pathsep}{ROOT}"

    def mark(label: str) -> None:
        if profile is not None:
            with (profile / "marks").open("a") as handle:
                handle.write(label + "\n")

    # stopped (SIGTERM): the daemon and the simulator are stopped, the database dropped
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    with (
        tempfile.TemporaryDirectory() as tmp,
        fresh_database() as url,
        running_daemon(
            Path(tmp),
            args.nodes,
            url,
            log_level="warning",
            spec_text=SPEC,
            warmed=True,
            daemon_env=daemon_env,
        ) as (
            daemon,
            base,
            names,
        ),
    ):
        pid = daemon.popen.pid
        started = time.monotonic()
        sampled = [0.0]

        def watch_rss() -> None:
            sampled[0] = max(sampled[0], rss_mb(pid))

        if not wait_settled(base, args.nodes, 240, watch_rss):
            print("the daemon did not settle in 240 s; see", daemon.log)
            return 1
        settling_rss = sampled[0]
        settle = time.monotonic() - started
        time.sleep(5.0)  # let the first autoscale and sweep after the reconcile pass
        settled_peak = peak_rss_mb(pid)
        mark("idle")
        idle_cpu, idle_wall, idle_rss, idle_max = sample(pid, args.idle)
        mark("between")
        reconciles_before = exact_metric(base, "reconciler_reconcile_duration_seconds_count")
        seconds_before = exact_metric(base, "reconciler_reconcile_duration_seconds_sum")
        host, port_text = base.removeprefix("http://").split(":")
        load = Load(host, int(port_text), names, args.rate, args.connections)
        client0 = time.process_time()
        load_cpu, load_wall, load_rss, load_max, sent = asyncio.run(
            load_phase(load, pid, args.warmup, args.measure, mark)
        )
        client = time.process_time() - client0
        peak = peak_rss_mb(pid)
        written = exact_metric(base, "reconciler_heartbeats_written_total")
        reconciles = (
            exact_metric(base, "reconciler_reconcile_duration_seconds_count") - reconciles_before
        )
        reconcile_seconds = (
            exact_metric(base, "reconciler_reconcile_duration_seconds_sum") - seconds_before
        )
        overruns = exact_metric(base, "reconciler_job_overruns_total")
        refused = {
            line.split('reason="', 1)[1].split('"', 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in httpx.get(f"{base}/metrics", timeout=10).text.splitlines()
            if line.startswith("reconciler_heartbeats_rejected_total{")
        }
        if args.keep_log:
            shutil.copyfile(daemon.log, args.keep_log)
        changes = exact_metric(base, "reconciler_changes_total")
    idle_share = idle_cpu / idle_wall
    load_share = load_cpu / load_wall
    print(f"nodes recorded:               {args.nodes:,}")
    print(f"daemon settled after:         {settle:.1f} s (first reconcile + fleet view)")
    print(
        f"idle CPU:                     {idle_cpu:.2f} s over {idle_wall:.0f} s = "
        f"{100 * idle_share:.2f} % of a core (target < {100 * IDLE_TARGET:.0f} %: ratio "
        f"{idle_share / IDLE_TARGET:.2f} {verdict(idle_share / IDLE_TARGET)})"
    )
    print(
        f"RSS while settling:           max sampled {settling_rss:.1f} MB, VmHWM after it "
        f"{settled_peak:.1f} MB (first load, first reconcile of every node)"
    )
    print(f"idle RSS median / max:        {idle_rss:.1f} / {idle_max:.1f} MB")
    print(
        f"beats sent in the window:     {sent:,} in {load_wall:.0f} s = {sent / load_wall:.0f}/s "
        f"(answers over the whole run: {dict(sorted(load.statuses.items()))})"
    )
    if load.latencies:
        lat = sorted(load.latencies)
        print(
            f"beat latency p50 / p99:       {statistics.median(lat) * 1000:.1f} / "
            f"{lat[int(len(lat) * 0.99)] * 1000:.1f} ms"
        )
    print(
        f"CPU at {args.rate:.0f} beats/s:          {load_cpu:.2f} s over {load_wall:.0f} s = "
        f"{100 * load_share:.2f} % of a core (target < {100 * LOAD_TARGET:.0f} %: ratio "
        f"{load_share / LOAD_TARGET:.2f} {verdict(load_share / LOAD_TARGET)})"
    )
    if sent:
        print(f"daemon CPU per beat (all in): {1e6 * load_cpu / sent:.0f} us")
    print(f"RSS under load median / max:  {load_rss:.1f} / {load_max:.1f} MB")
    print(
        f"RSS peak since start (VmHWM): {peak:.1f} MB (target < {RSS_TARGET:.0f} MB: ratio "
        f"{peak / RSS_TARGET:.2f} {verdict(peak / RSS_TARGET)})"
    )
    if reconciles:
        print(
            f"no-op reconciles under load:  {reconciles:.0f}, "
            f"{1000 * reconcile_seconds / reconciles:.0f} ms each (changes applied: {changes:.0f})"
        )
    print(f"beats written (whole run):    {written:,.0f}; job overruns: {overruns:.0f}")
    print(f"beats refused, by reason:     {refused or 'none'}")
    print(f"load generator CPU:           {client:.1f} s")
    print(f"machine load average:         {os.getloadavg()[0]:.2f} (2 cores, shared)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
