"""``reconcile --dry-run --detailed-exitcode`` says 2 while provisioning work is due: a drift
check that is due, and a node waiting on a pipeline step with nothing to do in this run (a step
out of attempts); 0 once the fleet is provisioned and checked. Through the real CLI process
against the simulator and its stand-ins."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.core.fleet import NodeStatus, StepState, StepStatus
from state.store import open_store
from tests.provisioning.harness import spec_yaml

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def _reconcile(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "HOSTWINDS_"))}
    env["RECONCILER_STATE_DIR"] = str(folder / "state")
    env["RECONCILER_DATABASE_URL"] = f"sqlite:///{folder / 'state.db'}"
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "reconciler.cli.main", "-f", str(folder / "fleet.yaml"), *args],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


def _age_steps(folder: Path, fleet: str, by: timedelta) -> None:
    """The node's steps as if they finished ``by`` ago (a drift check comes due)."""
    store = open_store(f"sqlite:///{folder / 'state.db'}")
    try:
        (node,) = store.load_fleet(fleet).nodes
        steps = tuple(replace(s, at=s.at - by) if s.at else s for s in node.steps)
        store.upsert_node(replace(node, steps=steps))
    finally:
        store.close()


def _out_of_attempts(folder: Path, fleet: str) -> None:
    """The node back in provisioning with its verify step failed as often as allowed."""
    store = open_store(f"sqlite:///{folder / 'state.db'}")
    try:
        (node,) = store.load_fleet(fleet).nodes
        failed = StepState("verify", StepStatus.FAILED, 2, node.created_at, "no test mail")
        steps = tuple(
            s
            for s in node.steps
            if s.name not in ("verify", "heartbeat", "rotation", "drift", "rebootstrap")
        )
        store.upsert_node(replace(node, status=NodeStatus.PROVISIONING, steps=(*steps, failed)))
    finally:
        store.close()


def test_due_drift_checks_and_waiting_nodes_exit_2(reachable_dir: Path) -> None:
    (reachable_dir / "fleet.yaml").write_text(spec_yaml("exits", {"seattle": 1}, drift_check="1h"))
    applied = _reconcile(reachable_dir, "--yes")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    settled = _reconcile(reachable_dir, "--dry-run", "--detailed-exitcode")
    assert settled.returncode == 0, settled.stdout + settled.stderr
    # an hour later the drift check is due: a change to make
    _age_steps(reachable_dir, "exits", timedelta(hours=2))
    due = _reconcile(reachable_dir, "--dry-run", "--detailed-exitcode")
    assert due.returncode == 2, due.stdout + due.stderr
    assert "drift" in due.stdout
    checked = _reconcile(reachable_dir, "--yes", "--detailed-exitcode")
    assert checked.returncode == 2, checked.stdout + checked.stderr
    again = _reconcile(reachable_dir, "--dry-run", "--detailed-exitcode")
    assert again.returncode == 0, again.stdout + again.stderr
    # a node waiting on a step out of attempts: nothing to do now, but not in service
    _out_of_attempts(reachable_dir, "exits")
    waiting = _reconcile(reachable_dir, "--dry-run", "--detailed-exitcode")
    assert waiting.returncode == 2, waiting.stdout + waiting.stderr
    assert "does not match the spec yet" in waiting.stdout
    assert "provisioning" in waiting.stdout
    assert "step verify failed 2 times" in waiting.stdout
    # without --detailed-exitcode the same plan is a success
    plain = _reconcile(reachable_dir, "--dry-run")
    assert plain.returncode == 0, plain.stdout + plain.stderr
