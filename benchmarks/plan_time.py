"""Plan time for 100, 1,000 and 10,000 nodes (target: 10,000 nodes in under 1 s).

Run: ``.venv/bin/python benchmarks/plan_time.py``. Prints, per size, the median of several
runs for a steady fleet (nothing to do) and for a fleet with changes (10 % drifted or
missing, a region resized, a removed region, unrecorded servers), plus the time to render the
plan as text, JSON and Markdown.
"""

from __future__ import annotations

import itertools
import json
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.core.addresses import node_name
from reconciler.core.fleet import (
    NodeStatus,
    Observed,
    ObservedServer,
    RecordedFleet,
    RecordedNode,
    ServerStatus,
)
from reconciler.core.planning import PlanOptions, plan
from reconciler.views.documents import plan_to_document
from reconciler.views.human import render_plan
from reconciler.views.markdown import render_markdown
from specs.model import FleetSpec

NOW = datetime(2026, 11, 23, 18, 0, tzinfo=UTC)
REGIONS = ["dallas", "seattle", "amsterdam", "frankfurt"]


def build(total: int, *, changes: bool) -> tuple[FleetSpec, Observed, RecordedFleet]:
    per_region = total // len(REGIONS)
    spec = FleetSpec.model_validate(
        {
            "metadata": {"name": "bench"},
            "plans": {
                "baseline": {
                    "rid": 52,
                    "vcpu": 1,
                    "ram_gb": 2,
                    "disk_gb": 50,
                    "monthly_price": "9.99",
                },
                "large": {
                    "rid": 53,
                    "vcpu": 2,
                    "ram_gb": 4,
                    "disk_gb": 80,
                    "monthly_price": "19.99",
                },
            },
            "regions": {
                region: {
                    "location_id": 10 + index,
                    "plan": "large" if changes and region == "seattle" else "baseline",
                    "nodes": per_region + (per_region // 10 if changes else 0),
                }
                for index, region in enumerate(REGIONS[:-1] if changes else REGIONS)
            },
            "ip_pools": {"shared": {"size": min(total * 2, 100_000), "regions": REGIONS}},
            "disruption": {"max_unavailable": 50, "max_destroys_per_run": 100},
        }
    )
    servers: list[ObservedServer] = []
    nodes: list[RecordedNode] = []
    sid = 100_000
    for region in REGIONS:
        for seq in range(1, per_region + 1):
            sid += 1
            name = node_name("bench", region, seq)
            ip = f"10.{sid // 65536 % 256}.{sid // 256 % 256}.{sid % 256}"
            drifted = changes and seq % 10 == 0
            if not (changes and seq % 10 == 5):  # 10 % deleted behind our back
                servers.append(
                    ObservedServer(
                        service_id=sid,
                        name=name,
                        location_id=10 + REGIONS.index(region),
                        status=ServerStatus.ACTIVE,
                        main_ip="192.0.2.1" if drifted else ip,
                        plan_rid=52,
                    )
                )
            if not (changes and seq % 50 == 7):  # 2 % unrecorded: adopt
                nodes.append(
                    RecordedNode(
                        id=f"n{sid}",
                        fleet="bench",
                        name=name,
                        region=region,
                        plan="baseline",
                        status=NodeStatus.ACTIVE,
                        service_id=sid,
                        ip_address=ip,
                        pool="shared",
                        rdns_done=True,
                        warmup_started_at=NOW - timedelta(days=seq % 90),
                        approximate_cost=Decimal("14.98"),
                    )
                )
    for index in range(total // 100):
        servers.append(
            ObservedServer(
                service_id=index + 1,
                name=f"other-{index}",
                location_id=10,
                status=ServerStatus.ACTIVE,
            )
        )
    return spec, Observed(tuple(servers), NOW), RecordedFleet("bench", tuple(nodes))


def median_seconds(func: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        func()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure(total: int, changes: bool) -> tuple[float, int, float, float, float]:
    """(plan seconds, change count, text, json, markdown seconds) for one fleet."""
    spec, observed, recorded = build(total, changes=changes)
    options = PlanOptions(spec_hash="bench", allow_mass_destroy=True)
    result = plan(spec, observed, recorded, NOW, options)
    repeat = 7 if total <= 1000 else 5
    seconds = median_seconds(lambda: plan(spec, observed, recorded, NOW, options), repeat)
    text = median_seconds(lambda: render_plan(result), 3)
    doc = median_seconds(lambda: json.dumps(plan_to_document(result)), 3)
    md = median_seconds(lambda: render_markdown(result), 3)
    return seconds, len(result.changes), text, doc, md


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:]] or [100, 1_000, 10_000]
    print(f"{'nodes':>7} {'case':<8} {'plan ms':>9} {'changes':>8} ", end="")
    print(f"{'text ms':>8} {'json ms':>8} {'md ms':>7}")
    results: dict[tuple[int, bool], float] = {}
    for total in sizes:
        for changes in (False, True):
            seconds, count, text, doc, md = measure(total, changes)
            results[(total, changes)] = seconds
            label = "changes" if changes else "steady"
            print(
                f"{total:>7} {label:<8} {seconds * 1000:>9.1f} {count:>8} "
                f"{text * 1000:>8.1f} {doc * 1000:>8.1f} {md * 1000:>7.1f}"
            )
    for small, large in itertools.pairwise(sizes):
        for changes in (False, True):
            ratio = results[(large, changes)] / results[(small, changes)]
            label = "changes" if changes else "steady"
            print(
                f"growth {small:,} -> {large:,} nodes ({label}): x{ratio:.1f} "
                f"(linear: x{large / small:g})"
            )
    worst = max(seconds for (total, _), seconds in results.items() if total == max(sizes))
    verdict = "OK" if worst < 1 else "MISSED"
    print(f"{max(sizes):,} nodes: {worst:.3f} s (target < 1 s for 10,000): {verdict}")


if __name__ == "__main__":
    main()
