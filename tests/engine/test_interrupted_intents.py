"""A run killed between any two of its writes leaves nothing pending for good (the fresh-clone
CI failure of the SIGKILL sweep: a ``decommission`` intent of a destroyed node still pending
after a run that found "nothing to do").

Each scenario (a shrink, i.e. a decommission; a grow; a resize; a boot) is killed before each
of its mutating steps in turn (store writes and cloud mutations, ``before_mutation``); the
following runs must converge, close every intent the killed run left pending, and never
report an empty plan while an intent is pending: a pending intent is work left (a plan with
one is not "no changes"), like a Kubernetes controller resuming or a Terraform run finishing
what an interrupted one began."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.core.fleet import IntentStatus, ServerStatus
from reconciler.core.plans import Action, Resolution
from specs.model import FleetSpec
from tests.engine.conftest import Crash, World, crash_at, make_spec, new_world

SMALL = make_spec({"dallas": 2})
GROWN = make_spec({"dallas": 3})
SHRUNK = make_spec({"dallas": 1})
RESIZED = make_spec({"dallas": 2}, plan="large")


def _stop_one(world: World) -> None:
    server = min(world.cloud.snapshot(), key=lambda s: s.service_id)
    world.cloud.set_status(server.service_id, ServerStatus.SHUTOFF)


def _nothing(world: World) -> None:
    return None


#: name -> (the spec the killed run applies, what happens to the world before it)
SCENARIOS: dict[str, tuple[FleetSpec, Callable[[World], None]]] = {
    "decommission": (SHRUNK, _nothing),
    "create": (GROWN, _nothing),
    "resize": (RESIZED, _nothing),
    "boot": (SMALL, _stop_one),
}


def _start(world: World, scenario: str) -> None:
    world.run(SMALL)
    assert world.converge(SMALL) <= 1
    SCENARIOS[scenario][1](world)


def _steps(world: World, scenario: str) -> int:
    """How many mutating steps the scenario's run takes, uninterrupted."""
    count = 0

    def counting() -> None:
        nonlocal count
        count += 1

    _start(world, scenario)
    spec = SCENARIOS[scenario][0]
    world.run(spec, before_mutation=counting, allow_blocked=True)
    return count


def _converge_without_pending(world: World, scenario: str) -> None:
    """Apply until the plan is empty; an empty plan never leaves an intent pending."""
    spec = SCENARIOS[scenario][0]
    for _ in range(12):
        plan = world.plan(spec)
        pending = world.store.load_fleet("acme").pending_intents
        if plan.is_empty:
            assert not pending, f"an empty plan with pending intents: {pending}"
            world.assert_sound(spec)
            return
        world.run(spec, allow_blocked=True)
        world.clock.advance(120)  # past the adoption grace (5 min) within a few runs
    raise AssertionError(f"not converged: {world.plan(spec).changes}")


def _killed_at_every_step(scenario: str, kind: str, directory: Path) -> None:
    counted = new_world(kind, directory / "count")
    steps = _steps(counted, scenario)
    counted.store.close()
    assert steps >= 3, steps
    for step in range(1, steps + 1):
        world = new_world(kind, directory / str(step))
        _start(world, scenario)
        spec = SCENARIOS[scenario][0]
        with pytest.raises(Crash):
            world.run(spec, before_mutation=crash_at(step), allow_blocked=True)
        try:
            _converge_without_pending(world, scenario)
        except AssertionError as exc:
            raise AssertionError(f"{scenario} killed before mutating step {step}: {exc}") from exc
        finally:
            world.store.close()


@pytest.mark.parametrize("kind", ["fake", "sqlite"])
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_a_run_killed_at_any_step_leaves_nothing_pending_once_converged(
    scenario: str, kind: str, tmp_path: Path
) -> None:
    """Over the in-memory store and the real SQLite store (one transaction per write)."""
    _killed_at_every_step(scenario, kind, tmp_path)


def test_an_intent_left_pending_on_a_closed_node_is_work_left_then_closed(world: World) -> None:
    """What the old decommission left after a kill before its last entry's finish: the record
    closed, the server gone, a ``decommission`` intent pending. Found with nothing else to do,
    it was "No changes." for ever; it is a RESOLVE now, and the run closes it."""
    world.run(SMALL)
    assert world.converge(SMALL) <= 1
    left = world.store.begin_intent("acme", "decommission", "acme-dallas-007", {"step": "record"})
    plan = world.plan(SMALL)
    assert [(c.action, c.resolution, c.address, c.region, c.intent_ids) for c in plan.changes] == [
        (Action.RESOLVE, Resolution.INTERRUPTED, "acme-dallas-007", "dallas", (left.id,))
    ]
    assert "no open record and no server left" in plan.changes[0].reason
    _, report = world.run(SMALL)
    assert report is not None
    assert report.ok, report
    assert "closed 1 interrupted intent(s) (decommission)" in report.outcomes[0].message
    closed = next(i for i in world.store.journal("acme") if i.id == left.id)
    assert closed.status is IntentStatus.FAILED
    assert (closed.error or "").startswith("interrupted: the run that began it ended")
    assert world.plan(SMALL).is_empty
    world.assert_sound(SMALL)


def test_an_interrupted_entry_on_a_node_being_destroyed_is_closed_by_the_destroy(
    world: World,
) -> None:
    """A pending ``decommission`` (or ``unpublish``) intent on a node the plan destroys again:
    closed when the destroy works on the node (its recorded steps say what is left)."""
    world.run(SMALL)
    assert world.converge(SMALL) <= 1
    victim = "acme-dallas-002"
    left = world.store.begin_intent("acme", "decommission", victim, {"step": "rotation"})
    plan = world.plan(SHRUNK)
    assert {c.address for c in plan.changes} == {victim}
    assert all(c.resolution is not Resolution.INTERRUPTED for c in plan.changes)
    world.run(SHRUNK, allow_blocked=True)
    closed = next(i for i in world.store.journal("acme") if i.id == left.id)
    assert closed.status is IntentStatus.FAILED
    assert closed.error == "interrupted; superseded by a new attempt"
    assert not world.store.load_fleet("acme").pending_intents
    assert world.converge(SHRUNK, allow_blocked=True) == 0
    world.assert_sound(SHRUNK)
