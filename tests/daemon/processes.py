"""Processes for the daemon's end-to-end tests: the simulator, daemons, simulated agents.

Everything listens on 127.0.0.1. Each process is stopped (and reaped) by the context managers,
so no socket or child outlives a test.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from reconciler.daemon.agent import Agent, Figures
from reconciler.daemon.heartbeats import derive_node_secret
from tests.daemon.serving import free_port

MASTER = "e2e-master-secret-0123456789abcdef"
ROOT = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} ({last_error!r})")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(10)
            raise AssertionError(f"{self.name} did not stop within {timeout}s") from None


def _spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            [sys.executable, "-m", "reconciler.cli.main", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=str(log_dir),
        )
    return Proc(name, popen, log_path)


@contextmanager
def simulator(log_dir: Path, build_time: str = "300ms") -> Iterator[str]:
    # --port 0: the simulator binds a free port itself and announces it (no race with another
    # test process for a port picked in advance); unbuffered so the announcement reaches the log.
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = _spawn(
        "simulator", ["simulator", "--port", "0", "--build-time", build_time], env, log_dir
    )

    def announced() -> str | None:
        if proc.popen.poll() is not None:
            raise AssertionError(f"simulator exited: {proc.log()[-3000:]}")
        found = re.search(r"listening on (http://127\.0\.0\.1:\d+)", proc.log())
        return found.group(1) if found else None

    try:
        # Generous deadlines: liveness only (a loaded 2-core machine starts Python slowly).
        url: str = wait_for(announced, 60, "the simulator to announce its address")
        wait_for(
            lambda: httpx.get(f"{url}/sim/health", timeout=2).status_code == 200, 30, "simulator"
        )
        yield url
    finally:
        proc.stop()


def daemon_env(sim_url: str, database_url: str, state_dir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "HOSTWINDS_API_URL": f"{sim_url}/cloud/api.php",
        "RECONCILER_DATABASE_URL": database_url,
        "RECONCILER_STATE_DIR": str(state_dir),
        "RECONCILER_NODE_MASTER_SECRET": MASTER,
    }


def start_daemon(name: str, spec: Path, env: dict[str, str], log_dir: Path) -> tuple[Proc, str]:
    port = free_port()
    proc = _spawn(
        name,
        [
            "daemon",
            "-f",
            str(spec),
            "--listen",
            f"127.0.0.1:{port}",
            "--log-format",
            "json",
            "--shutdown-grace",
            "5s",
        ],
        env,
        log_dir,
    )
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.popen.poll() is not None:
            raise AssertionError(f"{name} exited: {proc.log()[-3000:]}")
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200

    try:
        # liveness only: a loaded 2-core machine starts Python slowly
        wait_for(up, 60, f"{name} to serve")
    except BaseException:
        proc.popen.kill()  # never left running past its test (it is nobody's to stop yet)
        proc.popen.wait(10)
        raise
    return proc, url


def fleet(url: str) -> dict[str, Any]:
    document: dict[str, Any] = httpx.get(f"{url}/v1/fleet", timeout=5).json()
    return document


def instances(sim_url: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = httpx.get(f"{sim_url}/sim/instances", timeout=5).json()
    return data


def live_servers(sim_url: str) -> list[str]:
    """The names of the simulated account's servers that are not deleted."""
    return [
        i["srvrname"] for i in instances(sim_url) if str(i.get("status", "")).lower() != "deleted"
    ]


def leaders(urls: dict[str, str], skip: set[str]) -> list[str]:
    """The daemons (by name) whose ``/readyz`` says they lead; ``skip``: frozen or dead ones."""
    found = []
    for name, url in urls.items():
        if name in skip:
            continue
        try:
            if httpx.get(f"{url}/readyz", timeout=3).json().get("leader"):
                found.append(name)
        except (httpx.HTTPError, ValueError):
            continue
    return found


# --- simulated agents --------------------------------------------------------------------


@dataclass
class SyntheticFigures:
    """Figures a test controls: mail sent at ``rate`` per second, a queue length."""

    rate: float = 0.0
    queue_length: int = 0
    #: share of the mail that hard-bounces (Postfix status=bounced)
    bounce_share: float = 0.0
    _last: float = field(default_factory=time.monotonic)
    _carry: float = 0.0
    #: everything ever read (delivered + bounced): what the store must end up with
    total: int = 0

    def read(self) -> Figures:
        now = time.monotonic()
        self._carry += self.rate * (now - self._last)
        self._last = now
        attempts = int(self._carry)
        self._carry -= attempts
        bounces = round(attempts * self.bounce_share)
        self.total += attempts
        return Figures(0.3, 0.4, 0.5, self.queue_length, attempts - bounces, bounces, 0)


@dataclass
class Swarm:
    """One agent per node the daemon reports (in a background thread with its own loop).
    ``silence(name)`` stops that node's agent for good."""

    daemon_url: str
    interval: float
    rate: float
    #: the node statuses whose agents beat (a paused node's agent keeps beating)
    statuses: tuple[str, ...] = ("warming", "active", "unhealthy")
    silenced: set[str] = field(default_factory=set)
    started: set[str] = field(default_factory=set)
    timeout: float = 5.0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._main, name="agents", daemon=True)
        self.figures: dict[str, SyntheticFigures] = {}
        self.agents: dict[str, Agent] = {}

    def __enter__(self) -> Swarm:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(20)

    def silence(self, name: str) -> None:
        self.silenced.add(name)

    def _main(self) -> None:
        asyncio.run(self._loop())

    async def _loop(self) -> None:
        agents = self.agents
        async with httpx.AsyncClient(timeout=self.timeout) as client:
            while not self._stop.is_set():
                try:
                    document = (await client.get(f"{self.daemon_url}/v1/fleet")).json()
                    names = [n["name"] for n in document["nodes"] if n["status"] in self.statuses]
                except (httpx.HTTPError, ValueError, KeyError):
                    names = []
                for name in names:
                    if name not in agents and name not in self.silenced:
                        figures = SyntheticFigures(rate=self.rate)
                        self.figures[name] = figures
                        agents[name] = Agent(
                            name,
                            self.daemon_url,
                            derive_node_secret(MASTER.encode(), name),
                            figures,
                            interval=self.interval,
                            client=client,
                        )
                        self.started.add(name)
                live = [a for n, a in agents.items() if n not in self.silenced]
                await asyncio.gather(*(a.beat_once() for a in live))
                await asyncio.sleep(self.interval)
