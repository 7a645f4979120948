"""The daemon honours an operator's hold with its heartbeats: a drain waits for the queue to
empty, a cordoned silent node is neither paused nor replaced, uncordon puts it back; the
history names the daemon and its epoch for what the plans did; a no-op reconcile logs one line.
The Daemon in-process with fakes at the boundaries (tests/daemon/test_running.py's world)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.cli.auditing import collect
from reconciler.core.fleet import HoldKind, Maintenance, NodeStatus
from reconciler.core.plans import Action
from tests.daemon.test_running import World, beat, make_world


def _status(world: World, name: str) -> NodeStatus:
    return next(n for n in world.store.load_fleet("acme").nodes if n.name == name).status


def _hold(world: World, name: str, kind: HoldKind) -> None:
    world.store.set_maintenance(
        "acme", name, Maintenance("kernel", "cli alice@ops", world.clock.now(), kind=kind)
    )


def _lift(world: World, name: str) -> None:
    node = next(n for n in world.store.load_fleet("acme").nodes if n.name == name)
    assert node.maintenance is not None
    world.store.set_maintenance("acme", name, replace(node.maintenance, ended_at=world.clock.now()))


def test_drain_waits_for_the_queue_then_holds_and_uncordon_resumes(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    daemon = world.daemon

    async def scenario() -> None:
        await daemon.guard.tick()
        await daemon.reconcile_now()
        names = sorted(n.name for n in world.store.load_fleet("acme").nodes)
        target = names[0]
        world.store.record_heartbeats("acme", [beat(n, world, 10, queue=40) for n in names])
        await daemon._job_sweep()
        _hold(world, target, HoldKind.DRAIN)
        await daemon._refresh()
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert [(c.action, c.address, c.status) for c in plan.changes] == [
            (Action.DRAIN, target, NodeStatus.DRAINING)
        ]
        assert _status(world, target) is NodeStatus.DRAINING
        # the queue is not empty yet: it waits, with a note
        world.clock.advance(30)
        world.store.record_heartbeats("acme", [beat(n, world, 10, queue=12) for n in names])
        await daemon._job_sweep()
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert plan.changes == ()
        assert f"{target}: draining, waiting for its queue to empty" in plan.notes
        # empty: drained, held out of the rotation
        world.clock.advance(30)
        world.store.record_heartbeats("acme", [beat(n, world, 0, queue=0) for n in names])
        await daemon._job_sweep()
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert [(c.action, c.status) for c in plan.changes] == [
            (Action.DRAIN, NodeStatus.MAINTENANCE)
        ]
        assert "drained (queue empty)" in plan.changes[0].reason
        assert _status(world, target) is NodeStatus.MAINTENANCE
        await daemon._refresh()
        fleet = daemon.fleet_document()
        node = next(n for n in fleet["nodes"] if n["name"] == target)
        assert node["hold"]["state"] == "drained"
        assert node["hold"]["by"] == "cli alice@ops"
        # uncordon: back into the rotation
        _lift(world, target)
        await daemon._refresh()
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert [(c.action, c.address) for c in plan.changes] == [(Action.RESUME, target)]
        assert _status(world, target).in_rotation
        # the history: every move, by the daemon and its epoch
        entries = collect([], world.store.journal("acme", 500), node=target)
        moves = [(e.what, e.actor, e.epoch) for e in entries if e.what != "create"][:3]
        assert [m[0] for m in moves] == ["resume", "drain", "drain"]
        assert all(m[1] is not None and m[1].startswith("daemon ") for m in moves)
        assert all(m[2] == daemon.guard.epoch for m in moves)

    asyncio.run(scenario())


def test_a_cordoned_silent_node_is_neither_paused_nor_replaced(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    daemon = world.daemon

    async def scenario() -> None:
        await daemon.guard.tick()
        await daemon.reconcile_now()
        names = sorted(n.name for n in world.store.load_fleet("acme").nodes)
        world.store.record_heartbeats("acme", [beat(n, world, 10) for n in names])
        await daemon._job_sweep()
        _hold(world, names[0], HoldKind.CORDON)
        await daemon._refresh()
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert [(c.action, c.status) for c in plan.changes] == [
            (Action.PAUSE, NodeStatus.MAINTENANCE)
        ]
        # names[0] goes silent for long past replace_after: left alone
        for _ in range(30):
            world.clock.advance(10)
            world.store.record_heartbeats("acme", [beat(names[1], world, 10)])
            await daemon._job_sweep()
        assert names[0] not in daemon.assessment.replace
        plan = await daemon.reconcile_now()
        assert plan is not None
        assert plan.changes == ()
        assert _status(world, names[0]) is NodeStatus.MAINTENANCE
        assert any(n.startswith(f"{names[0]}: cordoned by cli alice@ops") for n in plan.notes)

    asyncio.run(scenario())


def test_a_no_op_reconcile_logs_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    world = make_world(tmp_path)
    daemon = world.daemon

    async def scenario() -> None:
        await daemon.guard.tick()
        await daemon.reconcile_now()  # creates the nodes
        world.clock.advance(timedelta(minutes=1).total_seconds())
        caplog.clear()
        with caplog.at_level(logging.INFO):
            plan = await daemon.reconcile_now()
        assert plan is not None
        assert plan.is_empty

    asyncio.run(scenario())
    lines = [r for r in caplog.records if r.levelno >= logging.INFO]
    assert len(lines) == 1, [r.getMessage() for r in lines]
    assert lines[0].getMessage().startswith("no changes: fleet acme matches the spec (revision ")


def test_a_cordon_leaves_the_rotation_list_at_the_next_sweep(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The sending platform's list (GET /v1/rotation) drops a cordoned node as soon as the
    daemon's sweep reads the store, and the sweep asks for a reconcile to act on it."""
    world = make_world(tmp_path)
    daemon = world.daemon

    async def scenario() -> None:
        await daemon.guard.tick()
        await daemon.reconcile_now()
        names = sorted(n.name for n in world.store.load_fleet("acme").nodes)
        world.store.record_heartbeats("acme", [beat(n, world, 10) for n in names])
        await daemon._job_sweep()
        listed = {e["node"] for e in daemon.rotation_document()["nodes"]}
        assert names[0] in listed
        _hold(world, names[0], HoldKind.CORDON)
        with caplog.at_level(logging.INFO):
            await daemon._job_sweep()
        listed = {e["node"] for e in daemon.rotation_document()["nodes"]}
        assert names[0] not in listed
        assert names[1] in listed
        assert "reconcile requested: an operator's hold changed" in caplog.messages
        _lift(world, names[0])
        await daemon._job_sweep()
        assert names[0] in {e["node"] for e in daemon.rotation_document()["nodes"]}

    asyncio.run(scenario())
