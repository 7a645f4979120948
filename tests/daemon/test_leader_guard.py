"""LeaderGuard with a fake port: backoff when unreachable, bounded pre-mutation check."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from reconciler.core.errors import LeadershipLostError, StoreUnavailableError
from reconciler.daemon.leadership import LeaderGuard


class Port:
    def __init__(self) -> None:
        self.unreachable = False
        self.block = threading.Event()
        self.blocking = False
        self.attempts = 0
        self.release_blocks = False
        self.released = 0
        #: what a lease port tells about its lease (``PostgresLeadership.lease_expires_at``)
        self.lease_expires_at = datetime(2026, 12, 1, 12, 0, 10, tzinfo=UTC)

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
        if self.release_blocks:  # a database that does not answer
            self.block.wait(10)
        self.released += 1


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


def test_a_release_the_database_does_not_answer_is_left_to_the_lease_and_says_until_when(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A shutdown waits for the release at most its bound, then says the lease is left to
    expire, and when (issue 10: a stop on a frozen database is bounded and clean)."""
    port = Port()
    port.lease_expires_at = datetime.now(UTC) + timedelta(seconds=8)
    guard = LeaderGuard(port)
    caplog.set_level(logging.INFO, logger="reconciler.daemon.leadership")

    async def scenario() -> tuple[bool, float]:
        assert await guard.tick()
        port.release_blocks = True
        started = time.monotonic()
        released = await guard.release(0.3)
        return released, time.monotonic() - started

    try:
        released, took = asyncio.run(scenario())
    finally:
        port.block.set()
    assert released is False
    assert took < 1.0, took
    assert not guard.is_leader
    events = [getattr(r, "event", None) for r in caplog.records]
    assert "leadership.released" not in events
    (failed,) = [
        r for r in caplog.records if getattr(r, "event", None) == "leadership.release_failed"
    ]
    at = port.lease_expires_at.isoformat(timespec="seconds")
    assert f"lease left to expire at {at}" in failed.getMessage()
    assert failed.lease_expires_at == port.lease_expires_at.isoformat()  # type: ignore[attr-defined]


def test_a_release_that_answers_is_logged_as_done(caplog: pytest.LogCaptureFixture) -> None:
    port = Port()
    guard = LeaderGuard(port)
    caplog.set_level(logging.INFO, logger="reconciler.daemon.leadership")

    async def scenario() -> bool:
        assert await guard.tick()
        return await guard.release(0.3)

    assert asyncio.run(scenario()) is True
    assert port.released == 1
    events = [getattr(r, "event", None) for r in caplog.records]
    assert "leadership.released" in events
    assert "leadership.release_failed" not in events
