"""How the pipeline's steps are recorded: a step whose record goes with the node's next write
(``Journal.hold``: hostkey, verify, heartbeat) is never lost in a way that repeats something
that matters, and a process killed in between resumes at the first unrecorded step.

A "kill" is a ``before_mutation`` hook that raises at a chosen moment and at every mutation
after it (the process is gone: nothing it would still write reaches the store)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from reconciler.core.errors import AuthError
from reconciler.core.fleet import IntentStatus, NodeStatus
from reconciler.core.ports import DnsPort
from reconciler.engine.reconciling import RunHooks, RunRequest
from tests.provisioning.harness import World, spec_yaml, with_ports, world

pytestmark = pytest.mark.anyio

STEPS = ("rdns", "hostkey", "dns", "bootstrap", "verify", "heartbeat", "rotation")


class Killed(BaseException):
    """The process died here (not an error the engine handles)."""


def dies_when(condition: Callable[[], bool]) -> Callable[[], None]:
    """A ``before_mutation`` hook: from the first mutation at which ``condition`` holds, the
    process is dead (that mutation and every later one never happen)."""
    dead = False

    def hook() -> None:
        nonlocal dead
        if dead or condition():
            dead = True
            raise Killed("killed")

    return hook


async def killed_run(w: World, hook: Callable[[], None] | None = None) -> None:
    reconciler = w.reconciler()
    try:
        with pytest.raises(Killed):
            await reconciler.reconcile(RunRequest(), RunHooks(before_mutation=hook))
    finally:
        await reconciler.cloud.aclose()


def assert_every_step_once(w: World, fleet: str) -> None:
    for node in w.nodes(fleet).values():
        assert node.status is NodeStatus.WARMING
        for step in STEPS:
            state = node.step(step)
            assert state is not None, (step, node)
            assert state.status.value == "done", (step, state)
            assert state.attempts == 1, (step, state)


async def test_killed_once_the_test_mail_arrived_reruns_verify_without_a_second_mail(
    reachable_dir: Path,
) -> None:
    async with world(reachable_dir, spec_yaml("kv", {"seattle": 1})) as w:
        sink = w.stand_ins.sink.folder
        # the first store write after the test mail reached the sink never happens
        await killed_run(w, dies_when(lambda: any(sink.glob("*.eml"))))
        (node,) = w.nodes("kv").values()
        assert node.step_done("bootstrap")
        assert not node.step_done("verify")
        assert node.status is NodeStatus.PROVISIONING

        _, report = await w.run()
        assert report is not None
        assert all(o.status.value == "done" for o in report.outcomes), report.outcomes
        assert_every_step_once(w, "kv")
        # the rerun found the mail at the sink: none sent twice
        assert len(list(sink.glob("kv-seattle-001.*.eml"))) == 1
        plan, _ = await w.run(dry_run=True)
        assert plan.is_empty


class DyingDns:
    """The DNS port of a process that dies while its update is on the wire (``dead`` is set:
    the process writes nothing more)."""

    def __init__(self, inner: DnsPort) -> None:
        self.inner = inner
        self.dead = False

    async def update(self, **_: object) -> None:
        self.dead = True
        raise Killed("killed during the DNS update")

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


async def test_the_pinned_host_key_is_recorded_before_the_dns_update_goes_out(
    reachable_dir: Path,
) -> None:
    async with world(reachable_dir, spec_yaml("kh", {"seattle": 1})) as w:
        ports = w.ports
        dying = DyingDns(ports.dns)
        w.ports = with_ports(ports, dns=dying)
        await killed_run(w, dies_when(lambda: dying.dead))
        (node,) = w.nodes("kh").values()
        pinned = node.host_key
        assert pinned is not None  # written with the dns step's intent, before the update
        assert node.step_done("hostkey")
        assert not node.step_done("dns")
        journal = w.store.journal("kh", limit=50)
        assert [i.status for i in journal if i.kind == "dns"] == [IntentStatus.PENDING]

        w.ports = ports
        _, report = await w.run()
        assert report is not None
        assert all(o.status.value == "done" for o in report.outcomes), report.outcomes
        assert_every_step_once(w, "kh")
        (node,) = w.nodes("kh").values()
        assert node.host_key == pinned
        # the killed run's dns intent is closed by the rerun that redid the step
        assert not w.store.load_fleet("kh").pending_intents
        dns = [i for i in w.store.journal("kh", limit=50) if i.kind == "dns"]  # newest first
        assert [i.status for i in dns] == [IntentStatus.DONE, IntentStatus.FAILED]
        assert dns[1].error == "interrupted; superseded by a new attempt"


class RefusingDns(DyingDns):
    async def update(self, **_: object) -> None:
        raise AuthError("NOTAUTH (BADKEY)")


async def test_a_refused_dns_update_after_the_scan_leaves_the_key_and_the_failure_recorded(
    reachable_dir: Path,
) -> None:

    async with world(reachable_dir, spec_yaml("kr", {"seattle": 1})) as w:
        w.ports = with_ports(w.ports, dns=RefusingDns(w.ports.dns))
        _, report = await w.run()
        assert report is not None
        assert any(o.status.value == "failed" for o in report.outcomes)
        (node,) = w.nodes("kr").values()
        assert node.host_key is not None
        assert node.step_done("hostkey")
        state = node.step("dns")
        assert state is not None
        assert state.status.value == "failed"


async def test_a_decommission_killed_after_its_dns_update_is_finished_by_the_next_run(
    reachable_dir: Path,
) -> None:
    """Killed once the DNS update of a decommission went out (its ``unpublish`` intent still
    pending): the next run closes that intent, removes the records again (idempotent) and
    finishes the decommission; nothing is left pending (it stayed pending for ever before)."""
    from reconciler.core.planning import PlanOptions

    shrink = RunRequest(options=PlanOptions(allow_mass_destroy=True))
    async with world(reachable_dir, spec_yaml("ku", {"seattle": 2})) as w:
        await w.run()
        w.spec_path.write_text(spec_yaml("ku", {"seattle": 1}))

        def unpublishing() -> bool:
            pending = w.store.load_fleet("ku").pending_intents
            return any(i.kind == "unpublish" for i in pending)

        reconciler = w.reconciler()
        try:
            with pytest.raises(Killed):
                await reconciler.reconcile(
                    shrink, RunHooks(before_mutation=dies_when(unpublishing))
                )
        finally:
            await reconciler.cloud.aclose()
        (left,) = [i for i in w.store.load_fleet("ku").pending_intents if i.kind == "unpublish"]
        for _ in range(3):
            plan, _ = await w.run(options=shrink.options)
            if plan.is_empty:
                break
        plan, _ = await w.run(dry_run=True, options=shrink.options)
        assert plan.is_empty, plan.changes
        assert len(w.nodes("ku")) == 1
        assert not w.store.load_fleet("ku").pending_intents
        closed = next(i for i in w.store.journal("ku", limit=100) if i.id == left.id)
        assert closed.status is IntentStatus.FAILED
