"""Convergence time from 0 to N nodes against the simulator, as a ratio to the floor that the
build time and the rate limit impose (target: ratio at most 1.25).

Run: ``.venv/bin/python benchmarks/convergence.py [--nodes 100] [--build 5] [--rate 20]``.

The simulator is served on a loopback port with ``--build`` seconds of BUILD per server; the
client's token bucket allows ``--rate`` requests per second (burst ``ceil(rate)``). One
``reconcile`` (observe, plan, apply, through the same code path as ``reconcile --yes``) takes
an empty account to N ACTIVE nodes with reverse DNS set and recorded. The figure is the wall
time of that run.

The floor. Every request goes through one token bucket: after the first ``burst`` requests,
at most ``rate`` per second. Per node, two requests cannot be avoided: ``add_instance`` and
``set_rdns`` (learning the new server's id and state can be shared: the engine matches names
and statuses in shared ``get_instances`` rounds), plus one list to observe. So a run takes at
least ``(1 + 2N - burst) / rate`` seconds. Independently, the last ``add_instance`` cannot go
out before ``(1 + N - burst) / rate`` (if positive), and that server then builds for ``build``
seconds before its ``set_rdns``. Hence::

    floor = max((1 + 2N - burst) / rate, max(0, 1 + N - burst) / rate + build)

and ``ratio = wall time / floor``. Status polling and the engine's own time are what the
ratio measures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
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

K = 2  # unavoidable requests per created node (see the module docstring)

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {{name: conv}}
provider: {{type: simulator, rate_limit: {rate}, build_time: {build}s}}
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
regions:
  seattle: {{location_id: 12, plan: baseline, nodes: {a}}}
  dallas: {{location_id: 13, plan: baseline, nodes: {b}}}
"""


def stats(base_url: str) -> dict[str, Any]:
    with urllib.request.urlopen(base_url + "/sim/stats", timeout=10) as response:
        result: dict[str, Any] = json.load(response)
    return result


async def converge(spec_path: Path, env: dict[str, str]) -> tuple[float, int, int]:
    loaded = load_spec([spec_path])
    store = build_store(env)
    try:
        async with build_cloud(loaded, environ=env) as cloud:
            reconciler = build_reconciler(loaded, cloud, store)
            started = time.perf_counter()
            _plan, report = await reconciler.reconcile_once(
                dry_run=False, options=PlanOptions(spec_hash=loaded.spec_hash)
            )
            elapsed = time.perf_counter() - started
            assert report is not None
            return elapsed, len(report.done), len(report.failed) + len(report.waiting)
    finally:
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--build", type=float, default=5.0, help="seconds of BUILD per server")
    parser.add_argument("--rate", type=float, default=20.0, help="client requests per second")
    args = parser.parse_args()
    n, build, rate = args.nodes, args.build, args.rate
    burst = max(1, math.ceil(rate))
    with tempfile.TemporaryDirectory() as tmp, SimulatorServer(build_seconds=build) as sim:
        spec_path = Path(tmp) / "fleet.yaml"
        spec_path.write_text(
            SPEC.format(rate=rate, build=build, a=n // 2, b=n - n // 2), encoding="utf-8"
        )
        env = {
            "HOSTWINDS_API_URL": sim.api_url,
            "HOSTWINDS_API_KEY": "simulator",
            "RECONCILER_DATABASE_URL": f"sqlite:///{tmp}/state.db",
        }
        elapsed, done, not_done = asyncio.run(converge(spec_path, env))
        seen = stats(sim.url)
        active = seen["instances_by_status"].get("ACTIVE", 0)
    requests = seen["total"]
    floor = max((1 + K * n - burst) / rate, max(0, 1 + n - burst) / rate + build)
    ratio = elapsed / floor
    print(f"0 -> {n} nodes, build {build:g}s, rate limit {rate:g} req/s (burst {burst})")
    print(f"  wall time: {elapsed:.2f}s ({done} changes done, {not_done} failed or waiting)")
    print(f"  servers ACTIVE: {active}")
    print(f"  requests: {requests} ({json.dumps(seen['requests'], sort_keys=True)})")
    print(
        f"  floor: max((1 + {K}*{n} - {burst}) / {rate:g}, "
        f"max(0, 1 + {n} - {burst}) / {rate:g} + {build:g}) = {floor:.2f}s"
    )
    print(f"  ratio: {ratio:.3f} (target <= 1.25): {'PASS' if ratio <= 1.25 else 'FAIL'}")


if __name__ == "__main__":
    main()
