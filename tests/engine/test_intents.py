"""Spend money only once (issue 9, design §3c): the create intent is written at the wire (after
the rate-limit token and the fence, marked sent); known refusals close it at once and the next
run retries without waiting for the adoption grace; only unknown outcomes wait."""

from __future__ import annotations

import pytest

from reconciler.core.errors import TerminalError, TransientError
from reconciler.core.fleet import IntentStatus
from reconciler.core.plans import Action, Resolution
from tests.engine.conftest import Crash, World, crash_at, make_spec


@pytest.mark.parametrize(
    "refusal",
    [
        TransientError("add_instance failed: HTTP 429 (rate limited)", refused=True),
        TransientError("add_instance failed: could not connect (did not reach)", refused=True),
        TerminalError("add_instance failed: HTTP 400", refused=True),
        TransientError("add_instance failed: Internal error, try again", refused=True),
    ],
    ids=["429", "not-reached", "4xx", "error-in-200"],
)
def test_a_refused_create_closes_its_intent_and_the_next_run_retries_at_once(
    world: World, refusal: Exception
) -> None:
    spec = make_spec({"dallas": 2})
    world.cloud.fail_next("add_instance", refusal)
    _, report = world.run(spec)
    assert report is not None
    assert len(report.failed) == 1
    assert "refused" in report.failed[0].message
    assert not report.waiting
    recorded = world.store.load_fleet("acme")
    assert not recorded.pending_intents  # closed at once: nothing waits for the grace
    creates = [i for i in world.store.journal("acme") if i.kind == "create"]
    assert sorted(i.status for i in creates) == [IntentStatus.DONE, IntentStatus.FAILED]
    assert all(i.params.get("sent") == "yes" for i in creates)
    # no time passes: the next run creates it again (no RESOLVE, no wait)
    plan = world.plan(spec)
    assert [c.action for c in plan.changes] == [Action.CREATE]
    _, report = world.run(spec)
    assert report is not None
    assert report.ok, report
    assert world.plan(spec).is_empty
    assert world.cloud.calls["add_instance"] == 3
    world.assert_sound(spec)


def test_an_unknown_outcome_waits_for_the_adoption_grace(world: World) -> None:
    spec = make_spec({"dallas": 1})
    world.cloud.fail_next("add_instance", TransientError("read timed out; outcome unknown"))
    _, report = world.run(spec)
    assert report is not None
    assert report.waiting
    plan = world.plan(spec)
    assert [(c.action, c.resolution) for c in plan.changes] == [(Action.RESOLVE, Resolution.WAIT)]


def test_a_crash_before_the_wire_leaves_nothing_to_wait_for(world: World) -> None:
    """Killed before its first checked step (a create waiting for its slot or its token):
    no intent was written, so the next run creates at once instead of waiting for the
    adoption grace (measured before issue 9: over 3 minutes)."""
    spec = make_spec({"dallas": 1})
    with pytest.raises(Crash):
        world.run(spec, before_mutation=crash_at(1))
    assert world.cloud.calls["add_instance"] == 0
    assert not world.store.load_fleet("acme").pending_intents
    plan = world.plan(spec)
    assert [c.action for c in plan.changes] == [Action.CREATE]
    assert world.converge(spec) == 1
    world.assert_sound(spec)


def test_re_creates_are_bounded_per_slot_then_the_slot_fails(world: World) -> None:
    """A create sent whose server never appears: one retry after the grace (default), then
    the slot fails (warning create_failed, the change fails) and nothing more is bought, run
    after run, until an operator releases the slot (`reconcile node retry NAME`)."""
    from reconciler.cli.nodes import _retry_failed_slot

    spec = make_spec({"dallas": 1})
    lost = TransientError("add_instance failed: timed out; the outcome is unknown")
    world.cloud.fail_next("add_instance", lost, times=2)  # sent, never appears (twice)
    world.run(spec)
    world.clock.advance(6 * 60)
    plan, _ = world.run(spec)  # after the grace: the one retry
    assert [(c.action, c.resolution) for c in plan.changes] == [
        (Action.RESOLVE, Resolution.RECREATE)
    ]
    assert world.cloud.calls["add_instance"] == 2
    pending = world.store.load_fleet("acme").pending_intents
    assert [i.params.get("attempt") for i in pending] == ["2"]
    for _ in range(4):  # a daemon would run every few minutes: nothing more is bought
        world.clock.advance(6 * 60)
        plan, report = world.run(spec)
        assert [(c.action, c.resolution) for c in plan.changes] == [
            (Action.RESOLVE, Resolution.EXHAUSTED)
        ]
        assert {w.guard for w in plan.warnings} == {"create_failed"}
        assert "reconcile node retry acme-dallas-001" in (plan.warnings[0].hint or "")
        assert report is not None
        assert report.failed
        assert "slot failed" in report.failed[0].message
    assert world.cloud.calls["add_instance"] == 2
    # the operator checked the account and releases the slot: a new node is created
    (node,) = world.store.load_fleet("acme").nodes
    assert _retry_failed_slot(world.store, "acme", node, "ops@test", "checked the invoices")
    world.converge(spec)
    world.assert_sound(spec)
    assert world.cloud.calls["add_instance"] == 3


def test_retry_leaves_a_slot_in_its_first_attempt_alone(world: World) -> None:
    from reconciler.cli.nodes import _retry_failed_slot

    spec = make_spec({"dallas": 1})
    world.cloud.fail_next("add_instance", TransientError("timed out; outcome unknown"))
    world.run(spec)
    (node,) = world.store.load_fleet("acme").nodes
    assert not _retry_failed_slot(world.store, "acme", node, "ops@test", "")
    assert world.store.load_fleet("acme").pending_intents
