"""The run lifecycle (``Reconciler.reconcile``): every run recorded, results not exceptions;
the per-node pipeline recorded step by step."""

from __future__ import annotations

import asyncio

from reconciler.core.errors import AuthError, GuardRefusedError, TransientError
from reconciler.core.fleet import NodeStatus, StepStatus
from reconciler.core.pipeline import PIPELINE, pipeline_for
from reconciler.engine.reconciling import RunHooks, RunRequest, RunResult
from reconciler.engine.steps import ADDRESS, EXECUTORS
from tests.engine.conftest import World, make_spec
from tests.fakes.store import InMemoryStore


def _reconcile(world: World, spec_counts: dict[str, int], request: RunRequest) -> RunResult:
    return asyncio.run(world.reconciler(make_spec(spec_counts)).reconcile(request))


def _runs(world: World) -> list[tuple[str, str, str | None]]:
    store = world.store
    assert isinstance(store, InMemoryStore)
    return [(r.mode, r.outcome, r.error) for r in store.runs.values()]


def test_a_run_whose_observation_fails_is_recorded_with_its_error(fake_world: World) -> None:
    world = fake_world
    world.cloud.fail_next("get_instances", AuthError("get_instances failed: Not Authorized!"))
    result = _reconcile(world, {"dallas": 1}, RunRequest(mode="apply"))
    assert result.outcome == "failed"
    assert isinstance(result.error, AuthError)
    assert result.plan is None
    ((mode, outcome, error),) = _runs(world)
    assert (mode, outcome) == ("apply", "failed")
    assert error is not None
    assert "Not Authorized" in error


def test_a_guard_refusal_is_a_recorded_result_not_an_exception(fake_world: World) -> None:
    world = fake_world
    world.converge(make_spec({"dallas": 2, "seattle": 1}))
    result = _reconcile(world, {"dallas": 2}, RunRequest(mode="daemon"))
    assert result.outcome == "refused"
    assert isinstance(result.error, GuardRefusedError)
    assert [w.guard for w in result.refused_by] == ["mass_delete"]
    assert result.report is None
    assert _runs(world)[-1][:2] == ("daemon", "refused")
    # overriding the guard by name applies it
    allowed = _reconcile(
        world, {"dallas": 2}, RunRequest(mode="apply", overridable=frozenset({"mass_delete"}))
    )
    assert allowed.error is None
    assert allowed.report is not None
    assert allowed.report.ok


def test_a_refused_confirmation_applies_nothing_and_is_recorded(fake_world: World) -> None:
    world = fake_world

    class Refuse(RunHooks):
        def confirm(self, plan: object) -> None:
            raise GuardRefusedError("not confirmed: nothing was changed")

    result = asyncio.run(
        world.reconciler(make_spec({"dallas": 1})).reconcile(RunRequest(), Refuse())
    )
    assert result.outcome == "refused"
    assert world.cloud.mutations == 0
    assert _runs(world)[-1][:2] == ("apply", "refused")


def test_an_error_while_applying_is_recorded_and_returned(fake_world: World) -> None:
    world = fake_world
    world.cloud.fail_next("get_instances", TransientError("HTTP 502"), times=1)
    result = _reconcile(world, {"dallas": 1}, RunRequest(dry_run=True, mode="dry-run"))
    assert result.outcome == "failed"
    assert isinstance(result.error, TransientError)
    result = _reconcile(world, {"dallas": 1}, RunRequest(dry_run=True, mode="dry-run"))
    assert result.outcome == "ok"
    assert [r[:2] for r in _runs(world)] == [("dry-run", "failed"), ("dry-run", "ok")]


def test_every_pipeline_step_is_recorded_on_the_node(world: World) -> None:
    spec = make_spec({"dallas": 2})
    world.converge(spec)
    for node in world.store.load_fleet("acme").nodes:
        assert node.status is NodeStatus.WARMING
        for step in pipeline_for(spec):
            if step.name == ADDRESS:
                continue
            state = node.step(step.name)
            assert state is not None, (node.name, step.name)
            assert state.status is StepStatus.DONE
            assert state.attempts == 1
            assert state.at is not None


def test_every_pipeline_step_has_an_executor() -> None:
    names = [step.name for step in PIPELINE]
    assert names[0] == ADDRESS
    assert len(set(names)) == len(names)
    # plus the upkeep of nodes in service (core.upkeep), planned by their own rule
    assert set(names) - {ADDRESS} == set(EXECUTORS) - {"rebootstrap", "drift"}


def test_protection_given_in_the_spec_is_recorded_and_survives_the_nodes_removal(
    world: World,
) -> None:
    protected = make_spec(
        {"seattle": 2},
        regions={
            "seattle": {
                "location_id": 12,
                "plan": "baseline",
                "nodes": 2,
                "protected": ["acme-seattle-001"],
            }
        },
    )
    world.converge(protected)
    # a dry run changes nothing; an applying run records the spec's protection
    world.run(protected, dry_run=True)
    assert world.store.load_fleet("acme").protected_names == frozenset()
    world.run(protected)
    recorded = world.store.load_fleet("acme")
    assert recorded.protected_names == frozenset({"acme-seattle-001"})
    assert [
        (i.kind, i.target, dict(i.params))
        for i in world.store.journal("acme", 50)
        if i.kind == "protect"
    ] == [("protect", "acme-seattle-001", {"by": "spec", "why": "protected in the spec"})]
    # the region leaves the spec (and its protection list with it): the node is kept
    world.clock.advance(3600)
    plan, _ = world.run(make_spec({"dallas": 1}), allow_blocked=True)
    destroyed = {c.address for c in plan.changes if c.action.value == "destroy"}
    assert destroyed == {"acme-seattle-002"}
    assert any(w.guard == "protected" for w in plan.warnings)
