"""A small world for engine tests: FakeCloud + a store + FakeClock, and spec builders."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from reconciler.core.addresses import owned_by_fleet
from reconciler.core.planning import PlanOptions
from reconciler.core.plans import Plan
from reconciler.core.ports import StorePort
from reconciler.engine.applying import ApplyReport
from reconciler.engine.reconciling import Reconciler
from specs.loading import spec_hash
from specs.model import FleetSpec
from tests.fakes.clocks import FakeClock
from tests.fakes.cloud import FakeCloud
from tests.fakes.store import InMemoryStore

LOCATIONS = {"seattle": 12, "dallas": 13, "amsterdam": 14}
PLANS: dict[str, dict[str, Any]] = {
    "small": {
        "rid": 51,
        "vcpu": 1,
        "ram_gb": "1",
        "disk_gb": 30,
        "monthly_price": "4.99",
        "production_ready": False,
    },
    "baseline": {"rid": 52, "vcpu": 1, "ram_gb": "2", "disk_gb": 50, "monthly_price": "9.99"},
    "large": {"rid": 53, "vcpu": 2, "ram_gb": "4", "disk_gb": 75, "monthly_price": "19.99"},
}


def make_spec(
    counts: dict[str, int],
    *,
    plan: str | dict[str, str] = "baseline",
    fleet: str = "acme",
    **sections: Any,
) -> FleetSpec:
    plans = plan if isinstance(plan, dict) else dict.fromkeys(counts, plan)
    document: dict[str, Any] = {
        "metadata": {"name": fleet},
        "plans": PLANS,
        "regions": {
            region: {"location_id": LOCATIONS[region], "plan": plans[region], "nodes": n}
            for region, n in counts.items()
        },
        "reconcile": {"adoption_grace": "5m", "create_timeout": "10m", "resize_timeout": "10m"},
    }
    document.update(sections)
    return FleetSpec.model_validate(document)


@dataclass(frozen=True)
class Loaded:
    spec: FleetSpec
    spec_hash: str


class Crash(BaseException):
    """Raised by a fault hook: the process 'dies' here."""


def crash_at(step: int) -> Callable[[], None]:
    """A ``before_mutation`` hook that 'kills the process' before mutating step ``step``."""
    count = 0

    def hook() -> None:
        nonlocal count
        count += 1
        if count == step:
            raise Crash(f"crash before mutating step {step}")

    return hook


class World:
    def __init__(self, store: StorePort | None = None, *, build_seconds: float = 30.0) -> None:
        self.clock = FakeClock()
        self.cloud = FakeCloud(clock=self.clock, build_seconds=build_seconds, resize_seconds=20)
        self.store: StorePort = store if store is not None else InMemoryStore(now=self.clock.now)

    def reconciler(self, spec: FleetSpec) -> Reconciler:
        return Reconciler(
            Loaded(spec, spec_hash(spec)), self.cloud, self.store, self.clock, poll_interval=5.0
        )

    def run(
        self,
        spec: FleetSpec,
        *,
        dry_run: bool = False,
        options: PlanOptions | None = None,
        **kwargs: Any,
    ) -> tuple[Plan, ApplyReport | None]:
        return asyncio.run(
            self.reconciler(spec).reconcile_once(dry_run=dry_run, options=options, **kwargs)
        )

    def plan(self, spec: FleetSpec, options: PlanOptions | None = None) -> Plan:
        rec = self.reconciler(spec)

        async def go() -> Plan:
            return rec.plan(await rec.observe(), options)

        return asyncio.run(go())

    def converge(self, spec: FleetSpec, *, runs: int = 4, **kwargs: Any) -> int:
        """Apply until the plan is empty; returns the number of applying runs."""
        for attempt in range(runs + 1):
            plan = self.plan(spec, kwargs.get("options"))
            if plan.is_empty:
                return attempt
            self.run(spec, **kwargs)
            self.clock.advance(60)
        raise AssertionError(f"not converged after {runs} runs: {self.plan(spec).changes}")

    def names(self) -> Counter[str]:
        return Counter(s.name for s in self.cloud.snapshot())

    def assert_sound(self, spec: FleetSpec) -> None:
        """No duplicate name, every server of ours recorded, every record has its server."""
        servers = self.cloud.snapshot()
        names = Counter(s.name for s in servers if owned_by_fleet(spec.name, s.name))
        assert all(n == 1 for n in names.values()), names
        recorded = {n.name: n for n in self.store.load_fleet(spec.name).nodes}
        ours = {s.name: s for s in servers if owned_by_fleet(spec.name, s.name)}
        assert set(ours) == set(recorded), (sorted(ours), sorted(recorded))
        for name, node in recorded.items():
            assert node.service_id == ours[name].service_id
        # nothing pending: an interrupted intent of any kind is closed by a converging run
        pending = self.store.load_fleet(spec.name).pending_intents
        assert not pending, pending
        for node in recorded.values():
            if node.status.in_rotation:
                assert node.rdns_done, node


def new_world(kind: str, directory: Path) -> World:
    """A world over the in-memory store (``fake``) or the real SQLite store (``sqlite``)."""
    world = World()
    if kind == "sqlite":
        from state.store import open_store

        directory.mkdir(parents=True, exist_ok=True)
        world.store = open_store(
            f"sqlite:///{directory}/state.db", upgrade=True, environ={}, clock=world.clock.now
        )
    return world


@pytest.fixture
def fake_world() -> Iterator[World]:
    world = World()
    yield world
    world.store.close()


@pytest.fixture(params=["fake", "sqlite"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    """Each engine test runs over the in-memory store and over the real SQLite store."""
    world = new_world(request.param, tmp_path)
    yield world
    world.store.close()


__all__ = ["Crash", "Loaded", "World", "crash_at", "make_spec", "new_world", "timedelta"]
