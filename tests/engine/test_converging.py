"""``reconcile --wait`` (issue 9): after an apply, observe (and apply follow-up runs) until the
fleet converges or the timeout; say what remains and what the next run does."""

from __future__ import annotations

import asyncio

from reconciler.core.errors import TransientError
from reconciler.core.planning import PlanOptions
from reconciler.engine.converging import Convergence, WaitEnd, wait_for_convergence
from reconciler.engine.reconciling import RunRequest
from specs.model import FleetSpec
from tests.engine.conftest import World, make_spec

LOST = TransientError("add_instance failed: timed out; the outcome is unknown")


def _wait(world: World, spec: FleetSpec, timeout: float, **request: object) -> Convergence:
    reconciler = world.reconciler(spec)
    return asyncio.run(
        wait_for_convergence(
            reconciler,
            RunRequest(mode="apply", options=PlanOptions(spec_hash=reconciler.spec_hash)),
            timeout=timeout,
            **request,  # type: ignore[arg-type]
        )
    )


def test_a_converged_fleet_ends_the_wait_at_once(world: World) -> None:
    spec = make_spec({"dallas": 2})
    world.converge(spec)
    world.cloud.reset_calls()
    result = _wait(world, spec, timeout=600)
    assert result.end is WaitEnd.CONVERGED
    assert result.runs == ()
    assert result.remaining == ()
    assert result.waited == 0
    assert world.cloud.calls["get_instances"] == 1
    assert world.cloud.mutations == 0


def test_a_create_that_never_appeared_is_re_created_after_the_grace_within_the_wait(
    world: World,
) -> None:
    """The create's outcome is unknown: the apply leaves it waiting; the wait sleeps through
    the adoption grace (5 min), a follow-up run re-creates it, and the fleet converges."""
    spec = make_spec({"dallas": 2})
    world.cloud.fail_next("add_instance", LOST)
    _, report = world.run(spec)
    assert report is not None
    assert len(report.waiting) == 1
    seen: list[tuple[str, ...]] = []
    result = _wait(world, spec, timeout=600, on_wait=seen.append)
    assert result.end is WaitEnd.CONVERGED, result
    assert len(result.runs) == 1
    assert result.runs[0].outcome == "ok"
    assert 300 <= result.waited <= 310
    assert seen
    assert "acme-dallas-" in seen[0][0]
    assert world.cloud.calls["add_instance"] == 3
    world.assert_sound(spec)


def test_the_timeout_ends_the_wait_saying_what_remains_and_what_the_next_run_does(
    world: World,
) -> None:
    spec = make_spec({"dallas": 1})
    world.cloud.fail_next("add_instance", LOST)
    world.run(spec)
    result = _wait(world, spec, timeout=60)
    assert result.end is WaitEnd.TIMEOUT
    assert 60 <= result.waited < 61
    assert result.runs == ()
    assert any("acme-dallas-001" in line for line in result.remaining)
    assert any(
        "looks acme-dallas-001 up again; re-creates it if it has not appeared by" in line
        for line in result.next_run
    ), result.next_run
    assert world.cloud.calls["add_instance"] == 1  # nothing bought while waiting


def test_a_failed_slot_ends_the_wait_at_once(world: World) -> None:
    """No waiting clears a slot whose create attempts are used up: an operator decides."""
    spec = make_spec({"dallas": 1})
    world.cloud.fail_next("add_instance", LOST, times=2)
    world.run(spec)
    world.clock.advance(6 * 60)
    world.run(spec)  # the one re-create, lost too
    world.clock.advance(6 * 60)
    result = _wait(world, spec, timeout=600)
    assert result.end is WaitEnd.OPERATOR
    assert result.waited == 0
    assert result.runs == ()
    assert any("reconcile node retry acme-dallas-001" in line for line in result.next_run)
    assert world.cloud.calls["add_instance"] == 2


def test_a_stopped_server_is_waited_for_until_its_replacement(world: World) -> None:
    """A server that stays SHUTOFF (its boot refused) is out of rotation at once and replaced
    after health.replace_after: the wait sleeps until then and the follow-up run replaces it
    (destroys confirmed by the hooks: the default hooks confirm)."""
    from reconciler.core.errors import TerminalError
    from reconciler.core.fleet import ServerStatus

    spec = make_spec({"dallas": 3}, health={"replace_after": "5m"})
    world.converge(spec)
    victim = world.cloud.snapshot()[0]
    world.cloud.set_status(victim.service_id, ServerStatus.SHUTOFF)
    refused = TerminalError("boot failed: refused", refused=True)
    world.cloud.fail_next("boot", refused, times=100)
    world.run(spec)  # out of rotation; the boot is refused
    result = _wait(world, spec, timeout=900)
    assert result.end is WaitEnd.FAILED  # a follow-up run's boot failed again
    assert result.error is None
    world.clock.advance(6 * 60)
    result = _wait(world, spec, timeout=900)
    assert result.end is WaitEnd.CONVERGED, result
    assert victim.service_id not in {s.service_id for s in world.cloud.snapshot()}
    world.assert_sound(spec)


def test_a_stopped_server_is_booted_and_the_wait_converges(world: World) -> None:
    from reconciler.core.fleet import ServerStatus

    spec = make_spec({"dallas": 3}, health={"replace_after": "5m"})
    world.converge(spec)
    victim = world.cloud.snapshot()[0]
    world.cloud.set_status(victim.service_id, ServerStatus.SHUTOFF)
    result = _wait(world, spec, timeout=900)
    assert result.end is WaitEnd.CONVERGED, result
    assert [r.outcome for r in result.runs] == ["ok"]
    assert world.cloud.calls["boot"] == 1
    assert world.cloud.calls.get("terminate", 0) == 0
    world.assert_sound(spec)
