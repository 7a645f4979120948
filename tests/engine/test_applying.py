"""The engine against FakeCloud and a store: the create protocol, the pipeline, every action."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

import pytest

from reconciler.core.errors import (
    GuardRefusedError,
    LeadershipLostError,
    TerminalError,
    TransientError,
)
from reconciler.core.fleet import IntentStatus, NodeStatus, PausedBy, ServerStatus
from reconciler.core.planning import PlanOptions
from reconciler.core.plans import Action
from reconciler.engine.applying import OutcomeStatus
from reconciler.engine.reconciling import lock_name
from tests.engine.conftest import Crash, World, crash_at, make_spec, new_world
from tests.fakes.store import InMemoryStore


def test_create_brings_nodes_up_and_a_second_run_is_quiet(world: World) -> None:
    spec = make_spec({"dallas": 2, "seattle": 1})
    plan, report = world.run(spec)
    assert [c.action for c in plan.changes] == [Action.CREATE] * 3
    assert report is not None
    assert report.ok, report
    servers = world.cloud.snapshot()
    assert sorted(s.name for s in servers) == [
        "acme-dallas-001",
        "acme-dallas-002",
        "acme-seattle-001",
    ]
    assert all(s.status is ServerStatus.ACTIVE for s in servers)
    nodes = {n.name: n for n in world.store.load_fleet("acme").nodes}
    for server in servers:
        node = nodes[server.name]
        assert node.service_id == server.service_id
        assert node.ip_address == server.main_ip
        assert node.status is NodeStatus.WARMING
        assert node.rdns_done
        assert node.hostname == f"{server.name}.acme.example"
        assert world.cloud.rdns_of(server.main_ip or "") == node.hostname
        assert node.approximate_cost == Decimal("14.98")  # 9.99 plan + 4.99 IP
        assert node.warmup_started_at is not None
    assert world.cloud.calls["add_instance"] == 3
    assert not world.store.load_fleet("acme").pending_intents
    world.assert_sound(spec)

    world.cloud.reset_calls()
    again, report = world.run(spec)
    assert again.is_empty
    assert world.cloud.mutations == 0
    assert dict(world.cloud.calls) == {"get_instances": 1}


def test_dry_run_changes_nothing(world: World) -> None:
    spec = make_spec({"dallas": 2})
    plan, report = world.run(spec, dry_run=True)
    assert report is None
    assert len(plan.changes) == 2
    assert world.cloud.mutations == 0
    assert not world.cloud.snapshot()
    assert not world.store.load_fleet("acme").nodes


def _mutating_steps(spec_counts: dict[str, int]) -> int:
    world = World()
    count = 0

    def counter() -> None:
        nonlocal count
        count += 1

    world.run(make_spec(spec_counts), before_mutation=counter)
    return count


@pytest.mark.parametrize(
    ("counts", "kind"),
    [({"dallas": 1}, "fake"), ({"dallas": 2, "seattle": 1}, "fake"), ({"dallas": 1}, "sqlite")],
)
def test_crash_before_every_mutating_step_then_rerun_converges(
    counts: dict[str, int], kind: str, tmp_path: Path
) -> None:
    spec = make_spec(counts)
    steps = _mutating_steps(counts)
    assert steps >= 5 * sum(counts.values())  # intent, create, record, rdns intent, rdns, done
    for step in range(1, steps + 1):
        world = new_world(kind, tmp_path / str(step))
        with pytest.raises(Crash):
            world.run(spec, before_mutation=crash_at(step))
        # after a crash, runs converge: a pending create waits out the adoption grace
        for _ in range(4):
            if world.plan(spec).is_empty:
                break
            world.run(spec)
            world.clock.advance(6 * 60)
        assert world.plan(spec).is_empty, (step, world.plan(spec).changes)
        world.assert_sound(spec)
        assert len(world.cloud.snapshot()) == sum(counts.values()), step
        world.store.close()


def test_transient_error_on_add_instance_is_not_retried(world: World) -> None:
    spec = make_spec({"dallas": 1})
    world.cloud.fail_next("add_instance", TransientError("read timeout"))
    plan, report = world.run(spec)
    assert report is not None
    assert [o.status for o in report.outcomes] == [OutcomeStatus.WAITING]
    assert world.cloud.calls["add_instance"] == 1
    pending = world.store.load_fleet("acme").pending_intents
    assert [(i.kind, i.target) for i in pending] == [("create", "acme-dallas-001")]

    # within the adoption grace: look the name up, wait, never create
    world.clock.advance(60)
    plan, report = world.run(spec)
    assert [c.action for c in plan.changes] == [Action.RESOLVE]
    assert report is not None
    assert report.waiting
    assert world.cloud.calls["add_instance"] == 1

    # after the grace: the intent fails ("never appeared") and the same name is created anew
    world.clock.advance(5 * 60)
    plan, report = world.run(spec)
    assert report is not None
    assert report.ok, report
    assert world.cloud.calls["add_instance"] == 2
    assert [s.name for s in world.cloud.snapshot()] == ["acme-dallas-001"]
    journal = world.store.journal("acme")
    creates = [i for i in journal if i.kind == "create"]
    assert sorted(i.status for i in creates) == [IntentStatus.DONE, IntentStatus.FAILED]
    world.assert_sound(spec)


def test_create_that_timed_out_but_happened_is_found_not_repeated(world: World) -> None:
    spec = make_spec({"dallas": 2})
    world.cloud.fail_next("add_instance", TransientError("read timeout"), applied=True)
    _, report = world.run(spec)
    assert report is not None
    assert report.ok, report
    assert world.cloud.calls["add_instance"] == 2
    world.assert_sound(spec)
    assert world.plan(spec).is_empty


def test_create_refused_closes_the_intent_and_the_record(world: World) -> None:
    spec = make_spec({"dallas": 1})
    world.cloud.fail_next("add_instance", TerminalError("Location Id is invalid."))
    _, report = world.run(spec)
    assert report is not None
    assert len(report.failed) == 1
    assert "Location Id is invalid" in report.failed[0].message
    recorded = world.store.load_fleet("acme")
    assert not recorded.nodes
    assert not recorded.pending_intents
    assert world.converge(spec) == 1
    world.assert_sound(spec)


def test_failed_build_is_replaced(world: World) -> None:
    spec = make_spec({"dallas": 1})
    world.cloud.fail_builds(1)
    _, report = world.run(spec)
    assert report is not None
    assert len(report.failed) == 1
    assert "ERROR" in report.failed[0].message
    plan = world.plan(spec)
    assert {c.action for c in plan.changes} >= {Action.DESTROY, Action.CREATE}
    world.converge(spec, options=PlanOptions(allow_mass_destroy=True))
    world.assert_sound(spec)
    assert [s.status for s in world.cloud.snapshot()] == [ServerStatus.ACTIVE]


def test_adopts_a_server_of_ours_the_store_does_not_know(world: World) -> None:
    spec = make_spec({"dallas": 2})
    sid = world.cloud.add_unmanaged("acme-dallas-001", location_id=13, rid=52)
    plan, report = world.run(spec)
    actions = {(c.action, c.address) for c in plan.changes}
    assert (Action.ADOPT, "acme-dallas-001") in actions
    assert (Action.CREATE, "acme-dallas-002") in actions
    assert report is not None
    assert report.ok, report
    node = next(n for n in world.store.load_fleet("acme").nodes if n.name == "acme-dallas-001")
    assert node.service_id == sid
    assert node.rdns_done
    assert node.status is NodeStatus.WARMING
    assert world.converge(spec) == 0
    world.assert_sound(spec)


def test_adopts_a_building_server_and_brings_it_up(world: World) -> None:
    spec = make_spec({"dallas": 1})
    world.cloud.add_unmanaged("acme-dallas-001", location_id=13, status=ServerStatus.BUILD)
    _, report = world.run(spec)
    assert report is not None
    assert report.ok, report
    assert world.converge(spec) == 0
    world.assert_sound(spec)


def test_server_deleted_behind_our_back_is_forgotten_and_replaced(world: World) -> None:
    spec = make_spec({"dallas": 2})
    world.converge(spec)
    victim = world.cloud.snapshot()[0]
    world.cloud.delete_behind_our_back(victim.service_id)
    plan = world.plan(spec)
    forget = [c for c in plan.changes if c.action is Action.FORGET]
    assert [c.address for c in forget] == [victim.name]
    assert forget[0].drift
    world.converge(spec)
    world.assert_sound(spec)
    assert len(world.cloud.snapshot()) == 2
    assert victim.name not in world.names()  # names are never reused


def test_unmanaged_servers_are_never_touched(world: World) -> None:
    spec = make_spec({"dallas": 1})
    other = world.cloud.add_unmanaged("mail-legacy-1", location_id=13)
    lookalike = world.cloud.add_unmanaged("acmex-dallas-001", location_id=13)
    world.converge(spec)
    plan = world.plan(spec)
    assert {u.service_id for u in plan.unmanaged} == {other, lookalike}
    assert {s.service_id for s in world.cloud.snapshot()} >= {other, lookalike}
    assert world.cloud.rdns_of(world.cloud.snapshot()[0].main_ip or "") is None


def test_resize_rolls_through_the_region(world: World) -> None:
    spec = make_spec({"dallas": 3})
    world.converge(spec)
    bigger = make_spec({"dallas": 3}, plan="large")
    plan = world.plan(bigger)
    resizes = [c for c in plan.changes if c.action is Action.RESIZE]
    assert len(resizes) == 1  # disruption.max_unavailable = 1
    runs = world.converge(bigger, runs=6)
    assert runs == 3
    assert {s.plan_rid for s in world.cloud.snapshot()} == {53}
    for node in world.store.load_fleet("acme").nodes:
        assert node.plan == "large"
        assert node.approximate_cost == Decimal("24.98")
    assert world.cloud.calls["confirm_upgrade"] == 3
    world.assert_sound(bigger)


def test_resize_failure_reverts_and_fails_the_change(world: World) -> None:
    spec = make_spec({"dallas": 1})
    world.converge(spec)
    world.cloud.fail_next("confirm_upgrade", TerminalError("The server is locked."))
    _, report = world.run(make_spec({"dallas": 1}, plan="large"))
    assert report is not None
    assert len(report.failed) == 1
    assert world.cloud.calls["revert_upgrade"] == 1
    resize = next(i for i in world.store.journal("acme") if i.kind == "resize")
    assert resize.status is IntentStatus.FAILED
    assert resize.error


def test_scale_down_drains_then_destroys(world: World) -> None:
    """A CLI run has no queue figures: the node drains and goes in the same apply."""
    spec = make_spec({"dallas": 4})
    world.converge(spec)
    smaller = make_spec({"dallas": 3})
    plan, report = world.run(smaller)
    assert [c.action for c in plan.changes] == [Action.DRAIN, Action.DESTROY]
    drained = plan.changes[0].address
    assert plan.changes[1].address == drained
    assert report is not None
    assert report.ok
    assert drained not in world.names()
    assert drained not in {n.name for n in world.store.load_fleet("acme").nodes}
    assert world.plan(smaller).is_empty
    world.assert_sound(smaller)


def test_scale_down_with_queue_figures_waits_for_the_queue(world: World) -> None:
    """The daemon knows the queues: drain now, destroy once the queue is empty."""
    spec = make_spec({"dallas": 4})
    world.converge(spec)
    smaller = make_spec({"dallas": 3})
    plan, _ = world.run(smaller, options=PlanOptions(metrics_known=True))
    assert [c.action for c in plan.changes] == [Action.DRAIN]
    drained = plan.changes[0].address
    node = next(n for n in world.store.load_fleet("acme").nodes if n.name == drained)
    assert node.status is NodeStatus.DRAINING
    assert world.plan(smaller, options=PlanOptions(metrics_known=True)).is_empty
    empty = PlanOptions(metrics_known=True, queue_empty=frozenset({drained}))
    plan, report = world.run(smaller, options=empty)
    assert [c.action for c in plan.changes] == [Action.DESTROY]
    assert report is not None
    assert report.ok
    assert drained not in world.names()
    world.assert_sound(smaller)


def test_mass_delete_is_refused_without_the_override(world: World) -> None:
    spec = make_spec({"dallas": 2, "seattle": 1})
    world.converge(spec)
    gone = make_spec({"dallas": 2})
    world.cloud.reset_calls()
    with pytest.raises(GuardRefusedError) as refused:
        world.run(gone)
    assert "seattle" in refused.value.message
    assert refused.value.hint
    assert "--allow-mass-destroy" in refused.value.hint
    assert world.cloud.mutations == 0
    world.converge(gone, options=PlanOptions(allow_mass_destroy=True))
    assert sorted(world.names()) == ["acme-dallas-001", "acme-dallas-002"]


def test_protected_nodes_are_never_destroyed(world: World) -> None:
    spec = make_spec({"dallas": 2})
    world.converge(spec)
    world.store.set_protected("acme", "acme-dallas-002", True)
    world.store.set_protected("acme", "acme-dallas-001", True)
    smaller = make_spec({"dallas": 1})
    for _ in range(3):
        world.run(smaller, options=PlanOptions(allow_mass_destroy=True))
    assert sorted(world.names()) == ["acme-dallas-001", "acme-dallas-002"]


def test_lost_leadership_stops_everything_at_once(world: World) -> None:
    spec = make_spec({"dallas": 3})
    calls = 0

    def check() -> None:
        nonlocal calls
        calls += 1
        if calls > 2:
            raise LeadershipLostError("lost the advisory lock")

    with pytest.raises(LeadershipLostError):
        world.run(spec, before_mutation=check)
    # each create's intent is written at the wire (one checked step) right before its
    # request: the two checks that passed let two requests go, the third check stopped all
    assert world.cloud.calls["add_instance"] <= 2
    world.converge(spec)
    world.assert_sound(spec)


def test_a_stale_epoch_is_fenced(world: World) -> None:
    spec = make_spec({"dallas": 1})
    name = lock_name("acme")
    old = world.store.acquire_lock(name, "a:1", 60, world.clock.now())
    world.store.release_lock(old)
    world.store.acquire_lock(name, "b:2", 60, world.clock.now())
    with pytest.raises(LeadershipLostError):
        world.run(spec, epoch=old.epoch)
    assert world.cloud.calls["add_instance"] == 0


def test_waiting_for_many_builds_shares_list_calls(world: World) -> None:
    spec = make_spec({"dallas": 10, "seattle": 10})
    _, report = world.run(spec)
    assert report is not None
    assert report.ok
    # 20 servers polled together: a handful of list rounds, not 20 reads per round
    assert world.cloud.calls["get_instances"] <= 12, dict(world.cloud.calls)
    assert world.cloud.calls["get_instance"] <= 2 * 20, dict(world.cloud.calls)


def test_progress_hooks_see_every_change(world: World) -> None:
    events: list[str] = []

    class Recorder:
        def on_start(self, total: int) -> None:
            events.append(f"start {total}")

        def on_change_started(self, change: object) -> None:
            events.append("started")

        def on_change_done(self, change: object, ok: bool, message: str) -> None:
            events.append(f"done {ok}")

        def on_finish(self, report: object) -> None:
            events.append("finish")

    world.run(make_spec({"dallas": 2}), progress=Recorder())
    assert events[0] == "start 2"
    assert events[-1] == "finish"
    assert events.count("started") == 2
    assert events.count("done True") == 2


def test_runs_are_recorded(fake_world: World) -> None:
    world = fake_world
    spec = make_spec({"dallas": 1})
    world.run(spec, dry_run=True)
    world.run(spec)
    store = world.store
    assert isinstance(store, InMemoryStore)
    runs = store.runs
    assert [(r.mode, r.outcome) for r in runs.values()] == [("dry-run", "ok"), ("apply", "ok")]


def test_reconcile_once_apply_after_apply_is_empty(world: World) -> None:
    spec = make_spec({"dallas": 2, "amsterdam": 2})
    world.run(spec)
    plan, report = world.run(spec)
    assert plan.is_empty
    assert report is not None
    assert report.ok
    assert asyncio.run(world.reconciler(spec).observe()).fingerprint.startswith("sha256:")


def test_a_pause_records_who_made_it_and_only_its_owner_resumes_it(world: World) -> None:
    """The reputation pause is recorded with its owner; a delisting resumes it (and clears the
    owner); a node the health rule paused is not resumed by a clear reputation verdict."""
    spec = make_spec({"dallas": 2})
    world.converge(spec)
    first, second = sorted(world.names())
    listed = {first: "listed on zen.spamhaus.org (SBL, 127.0.0.2)"}
    plan, report = world.run(spec, options=PlanOptions(reputation_paused=listed))
    assert [(c.action, c.address) for c in plan.changes] == [(Action.PAUSE, first)]
    assert report is not None
    assert report.ok
    nodes = {n.name: n for n in world.store.load_fleet("acme").nodes}
    assert (nodes[first].status, nodes[first].paused_by) == (NodeStatus.PAUSED, PausedBy.REPUTATION)
    assert nodes[second].paused_by is None
    # the health rule takes the other one out
    sick = PlanOptions(reputation_paused={}, unhealthy=frozenset({second}), metrics_known=True)
    plan, report = world.run(spec, options=sick)
    assert sorted((c.action, c.address) for c in plan.changes) == [
        (Action.PAUSE, second),
        (Action.RESUME, first),
    ]
    nodes = {n.name: n for n in world.store.load_fleet("acme").nodes}
    assert nodes[first].status.in_rotation
    assert nodes[first].paused_by is None
    assert (nodes[second].status, nodes[second].paused_by) == (
        NodeStatus.UNHEALTHY,
        PausedBy.HEALTH,
    )
