"""A whole ``reconcile --dry-run`` of a converged fleet against a minimal script doing the same
I/O (target: within 2x of it at 10,000 nodes).

Run: ``.venv/bin/python benchmarks/dry_run.py [NODES...] [--rounds N]`` (default 1,000 and
10,000 nodes, 5 rounds). For each size it seeds an embedded simulator account
(``simulator.json``) and a SQLite store with the same N ACTIVE nodes, then runs, interleaved:

- ``reconcile --dry-run -f fleet.yaml --detailed-exitcode`` (embedded simulator, SQLite; the
  plan must be "No changes", exit 0), and the same with ``--out plan.json`` (the fingerprint);
- the limit: a stdlib-only Python process doing the same I/O: it reads and parses the account
  file, serves the instance list over HTTP on loopback from a thread and fetches and parses
  it, reads the open node rows from the same SQLite database, matches servers to nodes by
  name (it fails if one is missing, as the dry-run would plan a change) and prints one line.
  Its server polls for shutdown every 10 ms (``http.server``'s default 0.5 s poll made the
  limit's wall time wait ~0.25 s on average for nothing, until 2026-12-01 17:00).

Each figure is the median wall time of a whole process (interpreter start included) with
bytecode cached (a temporary ``PYTHONPYCACHEPREFIX``), and its CPU time (user + system). It
also checks that a dry-run leaves the account file untouched (no rewrite).
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from daemonsetup import SPEC, seed  # noqa: E402

TARGET = 2.0

MINIMAL = r"""
import json, sqlite3, sys, threading, http.client
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
state, database, fleet = sys.argv[1:4]
with open(state, encoding="utf-8") as handle:
    world = json.load(handle)
payload = json.dumps(world["instances"]).encode()
class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
# a short poll, so that shutdown() does not wait out the default 0.5 s poll (the limit's wall
# time held ~0.25 s of it on average before)
threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
conn.request("POST", "/cloud/api.php", body=b"action=get_instances&API=key",
             headers={"content-type": "application/x-www-form-urlencoded"})
servers = json.loads(conn.getresponse().read())
server.shutdown()
db = sqlite3.connect(database)
rows = db.execute("SELECT * FROM sending_nodes WHERE fleet = ? AND closed_at IS NULL", (fleet,))
at = [column[0] for column in rows.description].index("name")
nodes = {row[at]: row for row in rows}
names = {item["srvrname"] for item in servers}
missing = [name for name in nodes if name not in names]
print(f"{len(servers)} servers, {len(nodes)} nodes, {len(missing)} missing")
if missing:
    raise SystemExit("the limit matched no server to a node: it would not do the same work")
"""


def run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, exit code) of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode not in (0,):
        raise SystemExit(f"{argv[1:4]} exited {done.returncode}:\n{done.stderr.decode()[-2000:]}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return elapsed, cpu, done.returncode


def measure(count: int, rounds: int, cache: str) -> dict[str, tuple[float, float]]:
    with tempfile.TemporaryDirectory(prefix="fr-dryrun-") as tmp:
        work = Path(tmp)
        state = work / "simulator.json"
        database = work / "state.db"
        seed(count, f"sqlite:///{database}", state)
        spec = work / "fleet.yaml"
        spec.write_text(SPEC.format(fleet="bench", nodes=count))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env.update(
            PYTHONPATH=str(ROOT),
            PYTHONPYCACHEPREFIX=cache,
            RECONCILER_STATE_DIR=str(work),
            RECONCILER_DATABASE_URL=f"sqlite:///{database}",
        )
        env.pop("HOSTWINDS_API_URL", None)
        reconcile = [sys.executable, "-m", "reconciler.cli.main", "-f", str(spec)]
        cases = {
            "limit: minimal script, same I/O": [
                sys.executable,
                "-c",
                MINIMAL,
                str(state),
                str(database),
                "bench",
            ],
            "reconcile --dry-run": [*reconcile, "--dry-run", "--detailed-exitcode"],
            "reconcile --dry-run --out": [
                *reconcile,
                "--dry-run",
                "--detailed-exitcode",
                "--out",
                str(work / "plan.json"),
            ],
        }
        first = subprocess.run(
            cases["reconcile --dry-run"], cwd=work, env=env, capture_output=True, check=False
        )
        if first.returncode != 0:
            raise SystemExit(
                f"the seeded fleet is not converged (exit {first.returncode}):\n"
                f"{first.stdout.decode()[-1500:]}{first.stderr.decode()[-1500:]}"
            )
        mtime = state.stat().st_mtime_ns
        walls: dict[str, list[float]] = {name: [] for name in cases}
        cpus: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, argv in cases.items():
                elapsed, cpu, _code = run(argv, env, work)
                walls[name].append(elapsed)
                cpus[name].append(cpu)
        rewritten = state.stat().st_mtime_ns != mtime
        print(f"{count:,} nodes: account file rewritten by the dry-runs: {rewritten}")
        return {n: (statistics.median(walls[n]), statistics.median(cpus[n])) for n in cases}


def main() -> None:
    args = sys.argv[1:]
    rounds = 5
    if "--rounds" in args:
        at = args.index("--rounds")
        rounds = int(args[at + 1])
        del args[at : at + 2]
    sizes = [int(arg) for arg in args] or [1_000, 10_000]
    verdicts = []
    with tempfile.TemporaryDirectory(prefix="pycache-") as cache:
        for count in sizes:
            results = measure(count, rounds, cache)
            limit_wall, limit_cpu = results["limit: minimal script, same I/O"]
            print(f"{'case':<34} {'wall ms':>9} {'ratio':>6} {'CPU ms':>9} {'ratio':>6}")
            for name, (wall, cpu) in results.items():
                print(
                    f"{name:<34} {wall * 1000:>9.0f} {wall / limit_wall:>5.2f}x "
                    f"{cpu * 1000:>9.0f} {cpu / limit_cpu:>5.2f}x"
                )
            wall, cpu = results["reconcile --dry-run"]
            verdicts.append((count, wall / limit_wall, cpu / limit_cpu))
    for count, ratio_wall, ratio_cpu in verdicts:
        verdict = "MET" if max(ratio_wall, ratio_cpu) <= TARGET else "MISSED"
        print(
            f"{count:,} nodes: dry-run {ratio_wall:.2f}x wall, {ratio_cpu:.2f}x CPU of the "
            f"minimal script (target <= {TARGET:g}x at 10,000): {verdict}"
        )


if __name__ == "__main__":
    main()
