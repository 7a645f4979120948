"""A leader frozen in the middle of an apply (SIGSTOP, a VM pause) and resumed after another
daemon took over (issue 10): it makes no cloud call and no store write once it resumes.

In-process with fakes (tests/daemon/test_running.py): the leadership port has a lease on the
test's monotonic clock like ``state.leadership`` (renewed by ``check``, valid until the
renewal + lease - margin); the freeze is the clock jumping past the lease between two steps
of the apply while another daemon takes a newer epoch. The process-level version, with real
processes and PostgreSQL, is in test_pg_faults.py (a freeze at rest).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from reconciler.core.fleet import NodeStatus
from reconciler.core.plans import Action
from reconciler.daemon.heartbeats import MasterSecret
from reconciler.daemon.running import Daemon, DaemonSettings
from specs.loading import load_spec
from tests.daemon.test_running import SPEC
from tests.fakes.clocks import FakeClock
from tests.fakes.cloud import FakeCloud
from tests.fakes.store import InMemoryStore

LEASE = 10.0
MARGIN = 1.0


class LeasedLeadership:
    """A lease like ``PostgresLeadership``'s: ``check`` renews it unless another daemon took
    over; the holder may mutate until ``valid_until`` on its own monotonic clock."""

    lease_seconds = LEASE

    def __init__(self, clock: FakeClock, store: InMemoryStore) -> None:
        self._clock = clock
        self._store = store
        self.epoch: int | None = None
        self._valid_until = 0.0
        self.taken_over = False
        self.checks = 0

    @property
    def valid_until(self) -> float:
        return self._valid_until if self.epoch is not None else 0.0

    def try_acquire(self) -> int | None:
        if self.taken_over:
            return None
        epoch = self._store.epochs.get("acme", 0) + 1
        self._store.epochs["acme"] = epoch
        self.epoch = epoch
        self._valid_until = self._clock.monotonic() + LEASE - MARGIN
        return epoch

    def check(self) -> bool:
        self.checks += 1
        started = self._clock.monotonic()
        if self.epoch is None or self.taken_over or started >= self._valid_until:
            self.epoch = None
            return False
        self._valid_until = started + LEASE - MARGIN
        return True

    def release(self) -> None:
        self.epoch = None

    def take_over(self) -> None:
        """Another daemon: the lease expired in the database, a newer epoch is granted."""
        self.taken_over = True
        self._store.epochs["acme"] = self._store.epochs.get("acme", 0) + 1


def journal(store: InMemoryStore) -> list[tuple[Any, ...]]:
    return [(i.id, i.status, i.epoch, i.updated_at) for i in store.journal("acme", 1000)]


def test_a_leader_frozen_mid_apply_resumes_without_a_cloud_call_or_a_store_write(
    tmp_path: Path,
) -> None:
    spec_path = tmp_path / "fleet.yaml"
    spec_path.write_text(SPEC.format(nodes="3"))
    clock = FakeClock()
    cloud = FakeCloud(clock=clock, build_seconds=5)
    store = InMemoryStore(now=clock.now)
    leadership = LeasedLeadership(clock, store)
    daemon = Daemon(
        DaemonSettings(paths=(str(spec_path),), listen=None, poll_interval=1.0),
        load_spec([spec_path]),
        store,
        cloud,
        leadership,
        MasterSecret("a-master-secret-for-tests"),
        clock=clock,
        monotonic=clock.monotonic,
    )
    at_freeze: dict[str, Any] = {}
    create = cloud.create_server

    async def create_then_freeze(request: Any) -> None:
        await create(request)
        if not at_freeze:
            # the process stops right after its first create and resumes 30 s later, after
            # another daemon took over (the lease expired in the database)
            clock.advance(3 * LEASE)
            leadership.take_over()
            at_freeze.update(
                mutations=cloud.mutations,
                checks=leadership.checks,
                intents=journal(store),
                nodes={n.name: n.status for n in store.load_fleet("acme").nodes},
            )

    cloud.create_server = create_then_freeze  # type: ignore[method-assign]

    async def scenario() -> Any:
        assert await daemon.guard.tick()
        return await daemon.reconcile_now()

    plan = asyncio.run(scenario())
    assert plan is not None
    assert [c.action for c in plan.changes] == [Action.CREATE] * 3
    assert at_freeze["mutations"] == 1
    # resumed: no cloud mutation, not even a renewal attempt (its own clock said the lease
    # was over), and nothing written to the store with its epoch
    assert cloud.mutations == at_freeze["mutations"]
    assert leadership.checks == at_freeze["checks"]
    assert journal(store) == at_freeze["intents"]  # no entry added, none updated
    assert {n.name: n.status for n in store.load_fleet("acme").nodes} == at_freeze["nodes"]
    assert not daemon.guard.is_leader
    assert daemon.last_reconcile is not None
    assert daemon.last_reconcile[1] == "leadership_lost"
    assert NodeStatus.ACTIVE not in at_freeze["nodes"].values()
