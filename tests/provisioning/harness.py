"""An in-process world for pipeline tests: the Hostwinds simulator (over a socket), a SQLite
store, the stand-ins (DNS, nodes, sink) and the real Reconciler wired as the CLI wires it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from providers.hostwinds.client import HostwindsClient
from providers.simulator.serving import DEFAULT_API_KEY, AsyncSimulatorServer
from providers.simulator.standins import StandIns
from reconciler.core.planning import PlanOptions
from reconciler.core.plans import Plan
from reconciler.core.ports import Clock
from reconciler.engine.applying import ApplyReport
from reconciler.engine.clocks import SystemClock
from reconciler.engine.provisioning import ProvisioningPorts
from reconciler.engine.reconciling import Reconciler
from reconciler.wiring import node_token
from specs.loading import LoadedSpec, load_spec
from state.store import SqlStore, open_store


def spec_yaml(fleet: str, nodes: dict[str, int], **provisioning: object) -> str:
    regions = {
        region: {"location_id": 12 + i, "plan": "baseline", "nodes": count}
        for i, (region, count) in enumerate(nodes.items())
    }
    document = {
        "apiVersion": "fleet-reconciler/v1",
        "kind": "Fleet",
        "metadata": {"name": fleet},
        "provider": {"type": "simulator", "build_time": "0s", "rate_limit": 50},
        "plans": {
            "baseline": {
                "rid": 52,
                "vcpu": 1,
                "ram_gb": 2,
                "disk_gb": 50,
                "transfer_tb": 2,
                "monthly_price": 9.99,
            }
        },
        "regions": regions,
        "disruption": {"max_unavailable": 2},
        "provisioning": {
            "domain": "mail.test",
            "sink": "probe@sink.test",
            "step_attempts": 2,
            **provisioning,
        },
    }
    return yaml.safe_dump(document, sort_keys=False)


@dataclass
class World:
    folder: Path
    server: AsyncSimulatorServer
    stand_ins: StandIns
    store: SqlStore
    spec_path: Path
    ports: ProvisioningPorts

    def loaded(self) -> LoadedSpec:
        return load_spec([self.spec_path])

    def reconciler(
        self, ports: ProvisioningPorts | None = None, clock: Clock | None = None
    ) -> Reconciler:
        client = HostwindsClient(self.server.api_url, DEFAULT_API_KEY, rate_limit=50.0)
        return Reconciler(
            self.loaded(),
            client,
            self.store,
            clock or SystemClock(),
            poll_interval=0.05,
            provisioning=ports or self.ports,
        )

    async def run(
        self,
        *,
        dry_run: bool = False,
        options: PlanOptions | None = None,
        clock: Clock | None = None,
    ) -> tuple[Plan, ApplyReport | None]:
        reconciler = self.reconciler(clock=clock)
        try:
            return await reconciler.reconcile_once(dry_run=dry_run, options=options)
        finally:
            await reconciler.cloud.aclose()

    def nodes(self, fleet: str) -> dict[str, object]:
        return {n.name: n for n in self.store.load_fleet(fleet).nodes}


@asynccontextmanager
async def world(folder: Path, spec_text: str) -> AsyncIterator[World]:
    server = AsyncSimulatorServer(build_seconds=0.0, persist_interval=0.0)
    await server.start()
    simulated = server.world

    def ptr(ip: str) -> str | None:
        for inst in list(simulated.instances.values()):
            if ip in inst.rdns:
                return inst.rdns[ip]
        return None

    def name_of(ip: str) -> str | None:
        for inst in list(simulated.instances.values()):
            if inst.main_ip == ip:
                return inst.srvrname
        return None

    stand_ins = StandIns(
        folder / "state",
        zone="mail.test",
        sink_address="probe@sink.test",
        ptr_source=ptr,
        name_of=name_of,
    )
    await stand_ins.start()
    store = open_store(f"sqlite:///{folder / 'state.db'}")
    assert isinstance(store, SqlStore)
    spec_path = folder / "fleet.yaml"
    spec_path.write_text(spec_text)
    master = b"m" * 32
    ports = ProvisioningPorts(
        dns=stand_ins.dns(),
        resolver=stand_ins.resolver(),
        remote=stand_ins.remote(),
        sink=stand_ins.sink,
        dkim=stand_ins.dkim(),
        token_for=lambda node: node_token(master, node),
        poll_interval=0.05,
        probe_wait=10.0,
        fcrdns_wait=1.0,
    )
    try:
        yield World(folder, server, stand_ins, store, spec_path, ports)
    finally:
        store.close()
        await stand_ins.stop()
        await server.stop()


class LaterClock:
    """The system clock moved ``offset`` into the future (deadlines, windows)."""

    def __init__(self, offset: timedelta) -> None:
        self.offset = offset

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def with_ports(ports: ProvisioningPorts, **changes: object) -> ProvisioningPorts:
    return replace(ports, **changes)  # type: ignore[arg-type]
