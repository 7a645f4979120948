"""CLI start-up against its limit: a Python process that only imports click, PyYAML and
pydantic (target: ``reconcile --help``, ``validate`` and ``schema`` within 3x of it).

Run: ``.venv/bin/python benchmarks/cli_startup.py [ROUNDS]``. The commands and the limit run
interleaved, round after round, so that a noisy machine slows them alike; each figure is the
median wall time of a whole process (interpreter start included). It also lists the heavy
modules each command imported (none should be: the store, the HTTP client, the servers).

Bytecode is cached (in a temporary ``PYTHONPYCACHEPREFIX``, even when the environment sets
``PYTHONDONTWRITEBYTECODE``), as it is for an installed package: compiling our modules on
every start would measure the compiler, not the start-up.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 3.0
HEAVY = ("sqlalchemy", "httpx", "uvicorn", "starlette", "rich", "alembic", "asyncssh", "psycopg")
PROBE = (
    "import json, sys; from reconciler.cli.main import main; rc = main(sys.argv[1:]); "
    "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)"
)


ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def wall(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(
        argv, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True
    )
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return elapsed, cpu


def heavy_imports(args: list[str]) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args], cwd=ROOT, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(done.stderr.strip().splitlines()[-1]))
    return sorted(loaded.intersection(HEAVY))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pycache-") as cache:
        ENV["PYTHONPYCACHEPREFIX"] = cache
        run()


def run() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 15
    reconcile = str(Path(sys.executable).with_name("reconcile"))
    cases = {
        "limit: import click, yaml, pydantic": [
            sys.executable,
            "-c",
            "import click, yaml, pydantic",
        ],
        "reconcile --help": [reconcile, "--help"],
        "reconcile validate quickstart": [reconcile, "validate", "examples/quickstart.yaml"],
        "reconcile schema": [reconcile, "schema"],
    }
    walls: dict[str, list[float]] = {name: [] for name in cases}
    cpus: dict[str, list[float]] = {name: [] for name in cases}
    for argv in cases.values():  # warm the file cache and the bytecode cache once
        wall(argv)
    for _ in range(rounds):
        for name, argv in cases.items():
            elapsed, cpu = wall(argv)
            walls[name].append(elapsed)
            cpus[name].append(cpu)
    limit_name = "limit: import click, yaml, pydantic"
    limit_wall = statistics.median(walls[limit_name])
    limit_cpu = statistics.median(cpus[limit_name])
    print(
        f"{'case':<34} {'wall ms':>8} {'ratio':>6} {'CPU ms':>8} {'ratio':>6}  "
        "heavy modules imported"
    )
    worst_wall = worst_cpu = 0.0
    for name, argv in cases.items():
        median_wall = statistics.median(walls[name])
        median_cpu = statistics.median(cpus[name])
        ratio_wall, ratio_cpu = median_wall / limit_wall, median_cpu / limit_cpu
        heavy = "" if name == limit_name else ", ".join(heavy_imports(argv[1:])) or "none"
        if name != limit_name:
            worst_wall, worst_cpu = max(worst_wall, ratio_wall), max(worst_cpu, ratio_cpu)
        print(
            f"{name:<34} {median_wall * 1000:>8.1f} {ratio_wall:>5.2f}x "
            f"{median_cpu * 1000:>8.1f} {ratio_cpu:>5.2f}x  {heavy}"
        )
    for label, worst in (("wall", worst_wall), ("CPU", worst_cpu)):
        verdict = "MET" if worst <= TARGET else "MISSED"
        print(
            f"worst {label} ratio {worst:.2f}x (target <= {TARGET:g}x of the bare imports): "
            f"{verdict}"
        )


if __name__ == "__main__":
    main()
