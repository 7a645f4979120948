"""Fenced to the wire (issue 9, design §3c): the writer's check runs after the rate-limit token
is taken and right before every mutating request; a lost leadership cancels the apply in
flight, calls waiting for a token included."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from providers.hostwinds import HostwindsClient
from reconciler.cli.reconciling import _writer_lock
from reconciler.core.errors import LeadershipLostError
from reconciler.core.fencing import check_fence, fenced
from reconciler.core.fleet import CreateRequest, IntentStatus
from reconciler.engine.fences import WriterFence
from reconciler.engine.reconciling import RunHooks, RunRequest, lock_name
from tests.engine.conftest import World, make_spec
from tests.fakes.clocks import FakeClock
from tests.fakes.cloud import FakeCloud
from tests.fakes.wires import ScriptedApi, command_ok

REQUEST = CreateRequest(name="acme-dallas-001", location_id=13, rid=52, template="t")


def test_leadership_lost_between_the_check_and_the_send_sends_nothing() -> None:
    """The engine's check passes, the call then waits for its rate-limit token, leadership is
    lost meanwhile: the request is never sent (it was, before issue 9)."""
    api = ScriptedApi()
    api.json("add_instance", command_ok("Add Instance"), times=2)
    api.json("get_instances", {"success": []})
    clock = FakeClock()
    leading = True

    async def token_wait(seconds: float) -> None:
        nonlocal leading
        leading = False  # the lease runs out while this call waits for its token
        await clock.sleep(seconds)

    def still_leading() -> None:
        if not leading:
            raise LeadershipLostError("lease expired")

    async def go() -> None:
        client = HostwindsClient(
            "https://api.example.test/cloud/api.php",
            "key",
            rate_limit=1.0,
            burst=1,
            transport=api.transport,
            sleep=token_wait,
            monotonic=clock.monotonic,
        )
        async with client:
            with fenced(still_leading):
                still_leading()  # the engine's check before the mutating step: fine
                await client.create_server(REQUEST)  # a token is free: sent
                still_leading()  # fine again
                with pytest.raises(LeadershipLostError):
                    await client.create_server(REQUEST)  # waits for a token: lost meanwhile
                # reads are not fenced: observing stays possible
                assert await client.list_servers() == []

    asyncio.run(go())
    assert api.actions == ["add_instance", "get_instances"]


def test_no_fence_installed_means_no_check() -> None:
    check_fence()  # nothing installed: nothing happens

    def refuse() -> None:
        raise LeadershipLostError("lost")

    with fenced(refuse), pytest.raises(LeadershipLostError):
        check_fence()
    check_fence()  # uninstalled again


def test_the_apply_stops_at_the_wire_when_the_fence_refuses(world: World) -> None:
    spec = make_spec({"dallas": 3})
    cloud = world.cloud

    def wire_check() -> None:
        if cloud.calls["add_instance"] >= 1:
            raise LeadershipLostError("lease lost")

    # the engine's own check (before_mutation) always passes: only the wire check stops it
    result = asyncio.run(
        world.reconciler(spec).reconcile(RunRequest(), RunHooks(fence=WriterFence(wire_check)))
    )
    assert isinstance(result.error, LeadershipLostError)
    assert result.outcome == "failed"
    assert cloud.calls["add_instance"] == 1
    # the next leader converges without a duplicate
    world.clock.advance(600)
    world.converge(spec)
    world.assert_sound(spec)


class _EmptyBucket(FakeCloud):
    """Every create after the first waits for a rate-limit token that never comes."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.started = 0
        self.waiting = 0

    async def create_server(self, request: CreateRequest) -> None:
        self.started += 1
        if self.started > 1:
            self.waiting += 1
            await asyncio.Event().wait()  # the token never comes
        await super().create_server(request)


def test_losing_leadership_cancels_calls_waiting_for_a_token() -> None:
    world = World()
    cloud = _EmptyBucket(clock=world.clock, build_seconds=0)
    world.cloud = cloud
    spec = make_spec({"dallas": 4})
    fence = WriterFence()

    async def go() -> float:
        reconciler = world.reconciler(spec)
        loop = asyncio.get_running_loop()

        async def lose_soon() -> None:
            for _ in range(500):
                if world.cloud.calls["add_instance"] >= 1 and cloud.waiting >= 3:
                    break
                await asyncio.sleep(0.01)
            loop.call_soon(fence.lose, "lease expired")

        loser = asyncio.ensure_future(lose_soon())
        started = time.monotonic()
        result = await asyncio.wait_for(
            reconciler.reconcile(RunRequest(), RunHooks(fence=fence)), timeout=10
        )
        await loser
        assert isinstance(result.error, LeadershipLostError)
        # either the watcher cancelled the apply, or the first node's next call met the fence
        # at the wire first: both stop everything, the waiting calls are cancelled
        assert "cancelled" in str(result.error) or "refused" in str(result.error)
        return time.monotonic() - started

    elapsed = asyncio.run(go())
    assert elapsed < 5
    assert cloud.waiting == 3
    assert cloud.calls["add_instance"] == 1  # the three waiting calls were never sent
    # their intents stay pending and resolve next run (without waiting for the grace: they
    # were never sent, see test_intents)
    pending = world.store.load_fleet("acme").pending_intents
    assert all(i.status is IntentStatus.PENDING for i in pending)
    world.store.close()


def test_the_cli_writer_lock_fence_refuses_once_the_lock_is_taken_over(tmp_path: Path) -> None:
    world = World()
    spec = make_spec({"dallas": 1})
    reconciler = world.reconciler(spec)

    async def go() -> None:
        environ = {"RECONCILER_LOCK_TTL": "60"}
        async with _writer_lock(world.store, reconciler, environ) as (lease, fence):
            fence.check()  # held: fine, and renewed
            world.clock.advance(61)  # a pause longer than the lease
            other = world.store.acquire_lock(lock_name("acme"), "other:1", 60, world.clock.now())
            assert other.epoch > lease.epoch
            with pytest.raises(LeadershipLostError):
                fence.check()
            assert fence.lost  # remembered: every later check refuses at once
            with pytest.raises(LeadershipLostError):
                fence.check()

    asyncio.run(go())
    world.store.close()


def test_a_fence_whose_lease_runs_out_on_the_monotonic_clock_is_lost() -> None:
    held = True
    fence = WriterFence(held=lambda: held)
    fence.check()
    held = False
    with pytest.raises(LeadershipLostError):
        fence.check()

    async def wait() -> str:
        return await asyncio.wait_for(fence.wait_lost(), timeout=2)

    assert "no longer held" in asyncio.run(wait())
