"""SIGKILL at random points of provisioning, then reruns: no step lost, none finished repeated.

The real CLI as a process, with the embedded simulator and the stand-ins under one state
folder (everything persists there: the simulated account, the SQLite store, the node folders,
the zone file and the sink)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from state.store import open_store
from tests.provisioning.harness import spec_yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "HOSTWINDS_"))}
    env["RECONCILER_STATE_DIR"] = str(folder / "state")
    env["RECONCILER_DATABASE_URL"] = f"sqlite:///{folder / 'state.db'}"
    env["PYTHONPATH"] = str(ROOT)
    return env


def _start(folder: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "reconciler.cli.main", "-f", str(folder / "fleet.yaml"), *args],
        cwd=folder,
        env=_env(folder),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.mark.parametrize("seed", [1])
def test_sigkill_during_provisioning_then_rerun(reachable_dir: Path, seed: int) -> None:
    (reachable_dir / "fleet.yaml").write_text(spec_yaml("crash", {"seattle": 2}))
    rng = random.Random(seed)
    for _ in range(2):
        process = _start(reachable_dir, "--yes")
        time.sleep(rng.uniform(1.0, 6.0))
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=30)
    for _ in range(4):
        process = _start(reachable_dir, "--yes")
        output, _ = process.communicate(timeout=240)
        assert "Traceback" not in output, output
        check = _start(reachable_dir, "--dry-run", "--detailed-exitcode")
        check.communicate(timeout=120)
        if check.returncode == 0:
            break
    else:
        pytest.fail(f"did not converge: {output}")
    store = open_store(f"sqlite:///{reachable_dir / 'state.db'}")
    try:
        nodes = store.load_fleet("crash").nodes
        journal = store.journal("crash", limit=500)
    finally:
        store.close()
    assert sorted(n.name for n in nodes) == ["crash-seattle-001", "crash-seattle-002"]
    for node in nodes:
        for step in ("rdns", "hostkey", "dns", "bootstrap", "verify", "heartbeat", "rotation"):
            state = node.step(step)
            assert state is not None, (node.name, step)
            assert state.attempts == 1, (node.name, step, state)
        done_bootstraps = [
            i
            for i in journal
            if i.target == node.name and i.kind == "bootstrap" and i.status.value == "done"
        ]
        assert len(done_bootstraps) == 1
        folder = reachable_dir / "state" / "nodes" / node.name
        log = (folder / "root" / "var" / "log" / "stub-commands.log").read_text().splitlines()
        installs = [line for line in log if line.startswith("apt-get") and " install " in line]
        assert len(installs) == 1, log  # the bundle ran once, whatever was killed when
        assert sum(line.startswith("opendkim-genkey") for line in log) == 1
        probes = list((reachable_dir / "state" / "sink").glob(f"{node.name}.*.eml"))
        assert len(probes) == 1
