"""LeaderGuard with a fake port: backoff when unreachable, bounded pre-mutation check."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from reconciler.core.errors import LeadershipLostError, StoreUnavailableError
from reconciler.daemon.leadership import LeaderGuard


class Port:
    def __init__(self) -> None:
        self.unreachable = False
        self.block = threading.Event()
        self.blocking = False
        self.attempts = 0

    def try_acquire(self) -> int | None:
        self.attempts += 1
        if self.unreachable:
            raise StoreUnavailableError("database unreachable")
        return 7

    def check(self) -> bool:
        if self.blocking:
            self.block.wait(10)
        return True

    def release(self) -> None:
        return None


def test_unreachable_database_backs_off_then_takes_over() -> None:
    port = Port()
    port.unreachable = True
    now = [0.0]
    guard = LeaderGuard(port, backoff_initial=1.0, backoff_max=4.0, monotonic=lambda: now[0])

    async def scenario() -> None:
        assert not await guard.tick()
        assert port.attempts == 1
        assert not await guard.tick()  # too early: no new attempt
        assert port.attempts == 1
        now[0] += 1.3
        assert not await guard.tick()
        assert port.attempts == 2
        now[0] += 1.3  # the second failure doubled the delay (about 2 s)
        assert not await guard.tick()
        assert port.attempts == 2
        port.unreachable = False
        now[0] += 5
        assert await guard.tick()
        assert guard.epoch == 7

    asyncio.run(scenario())


def test_a_stuck_check_refuses_the_mutation_within_the_bound() -> None:
    port = Port()
    guard = LeaderGuard(port, check_wait=0.2)

    async def scenario() -> None:
        assert await guard.tick()
        port.blocking = True
        stuck = asyncio.get_running_loop().create_task(guard.tick())  # holds the lock
        await asyncio.sleep(0.1)
        started = time.monotonic()
        with pytest.raises(LeadershipLostError):
            guard.before_mutation()
        assert time.monotonic() - started < 1.0
        assert not guard.is_leader
        port.block.set()
        await stuck

    asyncio.run(scenario())
