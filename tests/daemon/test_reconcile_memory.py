"""A reconcile plans from the daemon's fleet in memory (issue 14): brought up to date with the
store after the run's listing (the poll of what changed, from any writer) instead of a reload
of the whole fleet; the pending intents read afresh; a full load first when the fleet in
memory was not loaded under the reconcile's leadership epoch."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from pathlib import Path

from reconciler.core.fleet import NodeStatus, RecordedFleet
from tests.daemon.test_running import World, make_world


def counting_loads(world: World) -> list[str]:
    """Counts the whole-fleet reads of the store (``load_fleet``, also a full load's)."""
    calls: list[str] = []
    inner: Callable[[str], RecordedFleet] = world.store.load_fleet

    def load_fleet(fleet: str) -> RecordedFleet:
        calls.append(fleet)
        return inner(fleet)

    world.store.load_fleet = load_fleet  # type: ignore[method-assign]
    return calls


def same(mine: RecordedFleet, truth: RecordedFleet) -> None:
    assert mine.nodes == truth.nodes
    assert mine.pending_intents == truth.pending_intents
    assert mine.cost_overrides == truth.cost_overrides
    assert mine.protected_names == truth.protected_names


def converged(world: World) -> int:
    """Leads, reconciles the two nodes of the spec into being; returns the epoch."""

    async def scenario() -> int:
        assert await world.daemon.guard.tick()
        await world.daemon.reconcile_now()
        world.clock.advance(30)
        await world.daemon.reconcile_now()
        epoch = world.daemon.guard.epoch
        assert epoch is not None
        return epoch

    epoch = asyncio.run(scenario())
    assert len(world.store.load_fleet("acme").nodes) == 2
    return epoch


def test_a_noop_reconcile_reads_no_whole_fleet_and_sees_another_writers_changes(
    tmp_path: Path,
) -> None:
    world = make_world(tmp_path)
    epoch = converged(world)
    loads = counting_loads(world)
    daemon = world.daemon

    async def scenario() -> None:
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert plan.is_empty
        assert loads == []  # the fleet in memory, polled: no whole-fleet read
        # another writer (a CLI run, another replica) changes a record, leaves a pending
        # intent and adds a node record; the next reconcile's fleet is the store's
        store = world.store
        first = store.load_fleet("acme").nodes[0]
        store.upsert_node(dataclasses.replace(first, status=NodeStatus.PAUSED))
        store.set_protected("acme", first.name, True)
        store.begin_intent("acme", "create", "acme-dallas-009", {"plan": "baseline"})
        loads.clear()
        mine = await daemon._recorded_for_run(epoch)
        assert loads == []
        same(mine, store.load_fleet("acme"))
        assert mine.pending_intents
        assert mine.nodes[0].status is NodeStatus.PAUSED

    asyncio.run(scenario())


def test_a_lost_and_regained_lease_plans_from_a_full_load(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    converged(world)
    loads = counting_loads(world)
    daemon = world.daemon

    async def scenario() -> None:
        world.leadership.alive = False
        world.clock.advance(60)
        await daemon.guard.tick()
        assert daemon.guard.epoch is None
        await asyncio.sleep(0)  # the loss reaches the daemon's loop
        world.leadership.free = True
        world.clock.advance(60)
        assert await daemon.guard.tick()
        await asyncio.sleep(0)
        before = daemon.state.loaded_at
        assert before is not None
        assert before < world.clock.now()
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert plan.is_empty
        assert daemon.state.loaded_at == world.clock.now()  # a full load, under the new epoch
        # (a new leader also refreshes the recorded costs once: a whole-fleet read of its own)
        world.clock.advance(30)
        loads.clear()
        assert (await daemon.reconcile_now()) is not None
        assert loads == []
        assert daemon.state.loaded_at < world.clock.now()

    asyncio.run(scenario())


def test_a_fleet_loaded_under_another_epoch_is_loaded_again(tmp_path: Path) -> None:
    """Even before the news of a new leadership reached the daemon's loop (the guard's
    notification hops threads), a reconcile under an epoch the fleet in memory was not loaded
    under reads the store's whole fleet."""
    world = make_world(tmp_path)
    epoch = converged(world)
    loads = counting_loads(world)
    daemon = world.daemon
    store = world.store

    async def scenario() -> None:
        await daemon._refresh()
        assert loads == []
        # what a poll cannot see (here: the memory itself made stale), only a full load mends
        first = store.load_fleet("acme").nodes[0]
        loads.clear()
        daemon.state._set_node(dataclasses.replace(first, status=NodeStatus.PAUSED))
        mine = await daemon._recorded_for_run(epoch)
        assert loads == []
        assert mine.nodes[0].status is NodeStatus.PAUSED
        mine = await daemon._recorded_for_run(epoch + 1)
        assert loads == ["acme"]
        assert mine.nodes[0] == first

    asyncio.run(scenario())
