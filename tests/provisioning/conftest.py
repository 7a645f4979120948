"""Fixtures for the provisioning tests: stand-ins in a folder an unprivileged user can reach
(node stand-ins run commands as uid 65534 when the tests run as root)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from providers.simulator.standins import StandIns
from reconciler.engine.clocks import SystemClock
from reconciler.engine.provisioning import Provisioner
from specs.provisioning import ProvisioningSpec

ZONE = "mail.test"


@pytest.fixture
def reachable_dir() -> Iterator[Path]:
    """A folder under /tmp that uid 65534 can reach (pytest's tmp_path is 0700 for root)."""
    path = Path(tempfile.mkdtemp(prefix="fr-provision-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def spec_settings(**overrides: object) -> ProvisioningSpec:
    data: dict[str, object] = {"domain": ZONE, "sink": "probe@sink.test"}
    data.update(overrides)
    return ProvisioningSpec.model_validate(data)


@pytest.fixture
async def stand_ins(reachable_dir: Path) -> AsyncIterator[StandIns]:
    ptrs: dict[str, str] = {}
    world = StandIns(reachable_dir, zone=ZONE, sink_address="probe@sink.test", ptr_source=ptrs.get)
    world.ptrs = ptrs  # type: ignore[attr-defined]
    await world.start()
    try:
        yield world
    finally:
        await world.stop()


def provisioner_for(world: StandIns, **overrides: object) -> Provisioner:
    return Provisioner(
        spec_settings(**overrides),
        dns=world.dns(),
        resolver=world.resolver(),
        remote=world.remote(),
        sink=world.sink,
        dkim=world.dkim(),
        clock=SystemClock(),
        poll_interval=0.05,
    )


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
