"""Fixtures: a world on a frozen clock, and a simulator served on a loopback port."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from providers.simulator.clocks import SimClock
from providers.simulator.serving import SimulatorServer
from providers.simulator.world import Settings, World
from tests.simulator.calling import KEY, Call, make_call

START = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


@pytest.fixture
def clock() -> SimClock:
    return SimClock(start=START)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorServer]:
    """One server per test module (starting and stopping costs ~0.2 s): see ``sim``."""
    server = SimulatorServer(
        state_path=tmp_path_factory.mktemp("sim") / "sim.json",
        api_key=KEY,
        build_seconds=10,
        resize_seconds=20,
        seed=7,
        clock=SimClock(start=START),
    )
    with server:
        yield server


@pytest.fixture
def world(clock: SimClock) -> World:
    return World(clock=clock, settings=Settings(build_seconds=10, resize_seconds=20, seed=7))


@pytest.fixture
def sim(served: SimulatorServer) -> SimulatorServer:
    """The module's server, reset to an empty account on a frozen clock at START."""
    served.app.reset()
    return served


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=10) as client:
        yield client


@pytest.fixture
def call(http: httpx.Client, sim: SimulatorServer) -> Call:
    """POST one action (form-encoded, with the right key) and return the parsed JSON body."""
    return make_call(http, sim)
