"""Hostile specs (issue 11): how long and how much memory the loader takes to refuse each.

Run: ``.venv/bin/python benchmarks/hostile_specs.py``. Each case is loaded in-process with
``load_spec_text``; the figures are the wall time (median of 3) and the peak of Python
allocations (tracemalloc) while loading, and the size of the report printed. Before the fix the
first case ran for minutes (and froze the daemon), the fourth grew to ~3 GB and 1 GB of
errors, the third crashed (exit 70).
"""

from __future__ import annotations

import statistics
import sys
import time
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from specs.errors import SpecError
from specs.loading import load_spec_text

BASE = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata: {name: demo}
plans:
  baseline: {rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}
regions:
  seattle: {location_id: 12, plan: baseline, nodes: 2}
"""

CASES: dict[str, str] = {
    "nodes: 1.0e+99999999 (226 bytes)": BASE.replace("nodes: 2", "nodes: 1.0e+99999999"),
    "hex int of 5,000 digits": BASE.replace("rid: 52", "rid: 0x" + "f" * 5000),
    "!!bool 2 / !!timestamp x": BASE.replace("nodes: 2", "nodes: !!bool 2"),
    "alias of a 100 kB string x 9 (<1 MiB)": 'x: &a "'
    + "A" * 100_000
    + '"\ny: ['
    + ", ".join(["*a"] * 9)
    + "]\n"
    + BASE,
    "billion laughs (10^9 values)": "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
    + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [" + ", ".join([f"*{chr(97 + i)}"] * 10) + "]\n"
        for i in range(9)
    ),
    "2,000 broken regions (4,000 problems)": BASE
    + "".join(f"  r{i}: {{location_id: 12, plan: nope, nodes: x}}\n" for i in range(2000)),
    "99999999999999999999w": BASE + "reconcile: {interval: 99999999999999999999w}\n",
}


def main() -> int:
    print(f"{'case':42s} {'input':>9s} {'time':>9s} {'peak mem':>9s} {'report':>9s}  outcome")
    for name, text in CASES.items():
        times = []
        report = ""
        outcome = ""
        peak = 0
        for _ in range(3):
            tracemalloc.start()
            started = time.perf_counter()
            try:
                load_spec_text(text, source="hostile.yaml")
                outcome = "valid"
            except SpecError as exc:
                report = "\n".join(exc.render_lines())
                outcome = f"SpecError, {len(exc.problems)} problem(s)"
            times.append(time.perf_counter() - started)
            peak = max(peak, tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
        print(
            f"{name:42s} {len(text):>9,d} {statistics.median(times) * 1000:>7.1f}ms "
            f"{peak / 1e6:>7.1f}MB {len(report):>9,d}  {outcome}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
