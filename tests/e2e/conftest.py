"""End-to-end: the real ``reconcile`` console script as a subprocess, against the simulator
served over a loopback socket, with a SQLite (or PostgreSQL) state store in a temp dir."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from providers.simulator.serving import SimulatorServer

RECONCILE = str(Path(sys.executable).parent / "reconcile")
REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "examples" / "quickstart.yaml"

SPEC = """\
apiVersion: fleet-reconciler/v1
kind: Fleet
metadata:
  name: {fleet}
provider:
  type: simulator
  rate_limit: 50
  build_time: 200ms
plans:
  baseline: {{rid: 52, vcpu: 1, ram_gb: 2, disk_gb: 50, monthly_price: 9.99}}
  large: {{rid: 53, vcpu: 2, ram_gb: 4, disk_gb: 75, monthly_price: 19.99}}
regions:
{regions}
reconcile:
  adoption_grace: 2s
  create_timeout: 1m
  resize_timeout: 1m
"""
LOCATIONS = {"seattle": 12, "dallas": 13, "amsterdam": 14}


def spec_text(fleet: str, counts: dict[str, int], plan: str = "baseline") -> str:
    regions = "\n".join(
        f"  {region}: {{location_id: {LOCATIONS[region]}, plan: {plan}, nodes: {count}}}"
        for region, count in counts.items()
    )
    return SPEC.format(fleet=fleet, regions=regions)


class Sim:
    """The simulator over a socket, and its admin API."""

    def __init__(self, server: SimulatorServer) -> None:
        self.server = server
        self.url = server.url

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            response = client.request(method, path, json=body)
        response.raise_for_status()
        return response.json() if response.content else None

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/sim/stats")
        return result

    def reset_stats(self) -> None:
        self._call("POST", "/sim/stats/reset")

    def instances(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/sim/instances")
        return result

    def seed(self, name: str, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/sim/instances", {"srvrname": name, **fields})
        return result

    def delete(self, service_id: int) -> None:
        self._call("DELETE", f"/sim/instances/{service_id}")

    def names(self, prefix: str = "") -> Counter[str]:
        return Counter(
            str(i["srvrname"]) for i in self.instances() if str(i["srvrname"]).startswith(prefix)
        )


@pytest.fixture
def sim() -> Iterator[Sim]:
    with SimulatorServer(build_seconds=0.2, resize_seconds=0.2) as server:
        yield Sim(server)


class Cli:
    """Runs ``reconcile`` in ``cwd`` with an environment pointing at the simulator."""

    def __init__(self, cwd: Path, env: dict[str, str]) -> None:
        self.cwd = cwd
        self.env = env

    def write_spec(self, text: str, name: str = "fleet.yaml") -> Path:
        path = self.cwd / name
        path.write_text(text, encoding="utf-8")
        return path

    def run(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [RECONCILE, *args],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [RECONCILE, *args],
            cwd=self.cwd,
            env={**self.env, **(env or {})},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
        )

    def converge(self, *args: str, attempts: int = 8) -> subprocess.CompletedProcess[str]:
        """Apply (waiting out a killed run's lock and the adoption grace) until a dry run
        finds nothing to do."""
        last: subprocess.CompletedProcess[str] | None = None
        for _ in range(attempts):
            last = self.run("--yes", *args)
            check = self.run("--dry-run", "--detailed-exitcode", *args)
            if check.returncode == 0:
                return check
            time.sleep(1.0)
        detail = f"{last.stdout}\n{last.stderr}" if last is not None else ""
        raise AssertionError(f"not converged: {detail}")


def finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out + err


def base_env(tmp_path: Path, sim: Sim | None, database_url: str | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("RECONCILER_", "HOSTWINDS_")) and k != "NO_COLOR"
    }
    env["RECONCILER_LOCK_TTL"] = "3"
    if sim is not None:
        env["HOSTWINDS_API_URL"] = sim.server.api_url
        env["HOSTWINDS_API_KEY"] = "simulator"
    env["RECONCILER_DATABASE_URL"] = database_url or f"sqlite:///{tmp_path}/state.db"
    return env


@pytest.fixture
def cli(tmp_path: Path, sim: Sim) -> Cli:
    work = tmp_path / "work"
    work.mkdir()
    return Cli(work, base_env(tmp_path, sim))


def plan_document(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(result.stdout)
    return document
