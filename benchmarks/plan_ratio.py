"""Planning against its limit: ``plan()`` of a fleet against a bare diff of the same data
(target: 100,000 nodes within 10x).

Run: ``.venv/bin/python benchmarks/plan_ratio.py [NODES...]`` (default 1,000, 10,000 and
100,000). The data is ``benchmarks/plan_time.py``'s (a steady fleet, and one with 10 %
drifted or missing servers, a resized region, a removed region and unrecorded servers). The
limit is a bare diff of the same objects in the same process: index the servers by name,
walk the recorded nodes and the wanted names per region, and list what to create, destroy,
adopt and check, with no rules, no costs and no plan objects. Each figure is the median of
several runs, and the share of it spent in garbage collection is printed.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from plan_time import NOW, build

from reconciler.core.addresses import node_name
from reconciler.core.fleet import Observed, RecordedFleet
from reconciler.core.planning import PlanOptions, plan
from specs.model import FleetSpec

TARGET = 10.0


def bare_diff(spec: FleetSpec, observed: Observed, recorded: RecordedFleet) -> int:
    servers = {server.name: server for server in observed.servers}
    nodes = {node.name: node for node in recorded.nodes}
    work = 0
    for region_name, region in spec.regions.items():
        wanted = region.nodes if isinstance(region.nodes, int) else region.nodes.min
        for seq in range(1, wanted + 1):
            name = node_name(spec.name, region_name, seq)
            server, node = servers.get(name), nodes.get(name)
            if server is None or node is None or server.main_ip != node.ip_address:
                work += 1
    work += len(nodes.keys() - servers.keys())  # recorded, gone from the cloud
    work += len(servers.keys() - nodes.keys())  # in the cloud, not recorded (adopt or ignore)
    return work


def timed(func: Callable[[], object], repeat: int) -> tuple[float, float]:
    """(median seconds, median share of it in garbage collection)."""
    collecting = 0.0
    started_gc = 0.0

    def callback(phase: str, info: dict[str, int]) -> None:
        nonlocal collecting, started_gc
        if phase == "start":
            started_gc = time.perf_counter()
        else:
            collecting += time.perf_counter() - started_gc

    times, shares = [], []
    gc.callbacks.append(callback)
    try:
        for _ in range(repeat):
            collecting = 0.0
            start = time.perf_counter()
            func()
            elapsed = time.perf_counter() - start
            times.append(elapsed)
            shares.append(collecting / elapsed)
    finally:
        gc.callbacks.remove(callback)
    return statistics.median(times), statistics.median(shares)


def measure(total: int, changes: bool) -> tuple[float, float, float]:
    """(plan seconds, its share in garbage collection, bare diff seconds)."""
    spec, observed, recorded = build(total, changes=changes)
    options = PlanOptions(spec_hash="bench", allow_mass_destroy=True)
    repeat = 7 if total <= 10_000 else 3
    plan_s, gc_share = timed(lambda: plan(spec, observed, recorded, NOW, options), repeat)
    bare_s, _ = timed(lambda: bare_diff(spec, observed, recorded), repeat * 2)
    return plan_s, gc_share, bare_s


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [1_000, 10_000, 100_000]
    print(f"{'nodes':>8} {'case':<8} {'plan ms':>9} {'gc':>5} {'bare ms':>9} {'ratio':>7}")
    verdicts = []
    for total in sizes:
        for changes in (False, True):
            plan_s, gc_share, bare_s = measure(total, changes)
            ratio = plan_s / bare_s
            label = "changes" if changes else "steady"
            print(
                f"{total:>8,} {label:<8} {plan_s * 1000:>9.1f} {gc_share:>5.0%} "
                f"{bare_s * 1000:>9.1f} {ratio:>6.1f}x"
            )
            verdicts.append((total, label, ratio))
    for total, label, ratio in verdicts:
        if total == max(sizes):
            verdict = "MET" if ratio <= TARGET else "MISSED"
            print(
                f"{total:,} nodes ({label}): {ratio:.1f}x the bare diff (target <= 10x): {verdict}"
            )


if __name__ == "__main__":
    main()
