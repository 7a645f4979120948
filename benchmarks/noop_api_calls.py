"""API calls of a no-op reconcile of a 1,000-node fleet, read from the simulator's /sim/stats.

Run: ``.venv/bin/python benchmarks/noop_api_calls.py [--nodes 1000]``.

1. Serves the simulator on a loopback port (build time 0) and converges a fleet of ``--nodes``
   nodes over three regions with the real engine, client and a temporary SQLite store (this
   setup is timed and printed but is not the figure).
2. Resets the simulator's counters, runs ONE full reconcile (observe, plan, apply an empty
   plan) through the same code path as ``reconcile --yes``, and prints what the simulator saw.

Targets: 0 mutations; list calls at most 1 + pages (``get_instances`` answers the whole account
in one call, so the target is 1), and no per-node reads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from providers.simulator.serving import SimulatorServer
from reconciler.core.planning import PlanOptions
from reconciler.wiring import build_cloud, build_reconciler, build_store
from specs.loading import load_spec

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: bench}}
provider: {{type: simulator, rate_limit: 100, build_time: 0s}}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
regions:
  seattle: {{location_id: 12, plan: baseline, nodes: {a}}}
  dallas: {{location_id: 13, plan: baseline, nodes: {b}}}
  amsterdam: {{location_id: 14, plan: baseline, nodes: {c}}}
reconcile: {{concurrency: 64}}
"""


def stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(base_url + "/sim/stats", timeout=10) as response:
        result: dict[str, Any] = json.load(response)
    return result


def reset(base_url: str) -> None:
    request = urllib.request.Request(base_url + "/sim/stats/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10):
        pass


async def reconcile(spec_path: Path, env: dict[str, str]) -> tuple[int, float]:
    loaded = load_spec([spec_path])
    store = build_store(env)
    try:
        async with build_cloud(loaded, environ=env) as cloud:
            reconciler = build_reconciler(loaded, cloud, store)
            started = time.perf_counter()
            plan, report = await reconciler.reconcile_once(
                dry_run=False, options=PlanOptions(spec_hash=loaded.spec_hash)
            )
            elapsed = time.perf_counter() - started
            if report is not None and report.failed:
                raise SystemExit(f"apply failed: {report.failed[:3]}")
            return len(plan.changes), elapsed
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    args = parser.parse_args()
    n = args.nodes
    a, b = n // 3, n // 3
    c = n - a - b
    with tempfile.TemporaryDirectory() as tmp, SimulatorServer(build_seconds=0.0) as sim:
        spec_path = Path(tmp) / "fleet.yaml"
        spec_path.write_text(SPEC.format(a=a, b=b, c=c), encoding="utf-8")
        env = {
            "HOSTWINDS_API_URL": sim.api_url,
            "HOSTWINDS_API_KEY": "simulator",
            "RECONCILER_DATABASE_URL": f"sqlite:///{tmp}/state.db",
        }
        changes, setup = asyncio.run(reconcile(spec_path, env))
        print(f"setup: converged {n} nodes ({changes} changes) in {setup:.1f}s")
        check, _ = asyncio.run(reconcile(spec_path, env))
        if check:
            print(f"warning: the fleet needed {check} more changes before the no-op run")
        reset(sim.url)
        changes, elapsed = asyncio.run(reconcile(spec_path, env))
        seen = stats(sim.url)
    requests = seen["requests"]
    lists = requests.get("get_instances", 0)
    per_node_reads = sum(v for k, v in requests.items() if k != "get_instances")
    print(f"no-op reconcile of {n} nodes: {changes} changes, {elapsed:.2f}s")
    print(f"  requests by action: {json.dumps(requests, sort_keys=True)}")
    print(f"  mutations: {seen['mutations']} (target 0)")
    print(f"  list calls (get_instances): {lists} (target at most 1 + pages = 1)")
    print(f"  other reads: {per_node_reads} (target 0)")
    ok = seen["mutations"] == 0 and lists <= 1 and per_node_reads == 0
    print("  result:", "PASS" if ok else "FAIL")


if __name__ == "__main__":
    main()
