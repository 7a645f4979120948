"""A controllable clock implementing ``reconciler.core.ports.Clock``."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

T = TypeVar("T")

DEFAULT_START = datetime(2026, 1, 1, tzinfo=UTC)


class FakeClock:
    """Time moves only when told: ``advance(seconds)``, or ``await sleep(seconds)`` (which
    advances at once and yields to the loop). ``monotonic()`` and ``sleep`` plug straight into
    ``HostwindsClient(monotonic=..., sleep=...)`` and ``TokenBucket``."""

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self._start = start
        self._elapsed = 0.0
        self.sleeps: list[float] = []

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._elapsed

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self._elapsed += seconds

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.advance(max(0.0, seconds))
        await asyncio.sleep(0)


class VirtualClock:
    """Virtual time for concurrent sleepers: ``sleep`` waits (without advancing anything) until
    ``run`` moves time to the earliest wake-up once every task has settled. Unlike
    ``FakeClock``, two tasks sleeping 1 s at once both wake at t = 1. For code that waits only
    on this clock (no sockets); ``monotonic``/``sleep`` plug into ``TokenBucket`` and
    ``HostwindsClient``, ``now``/``sleep`` into ``Clock``."""

    #: loop passes given to the tasks before time moves (they have no real I/O to wait for)
    SETTLE = 30

    def __init__(self, start: datetime = DEFAULT_START) -> None:
        self._start = start
        self._elapsed = 0.0
        self._seq = 0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._start + timedelta(seconds=self._elapsed)

    def monotonic(self) -> float:
        return self._elapsed

    async def sleep(self, seconds: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._seq += 1
        heapq.heappush(self._sleepers, (self._elapsed + max(0.0, seconds), self._seq, future))
        await future

    async def run(self, main: Awaitable[T]) -> T:
        """Run ``main`` to its end, moving time from one wake-up to the next."""
        task = asyncio.ensure_future(main)
        while True:
            for _ in range(self.SETTLE):
                await asyncio.sleep(0)
            if task.done():
                return task.result()
            while self._sleepers and self._sleepers[0][2].cancelled():
                heapq.heappop(self._sleepers)
            if not self._sleepers:
                task.cancel()
                raise RuntimeError("nothing sleeps and the task is not done: a deadlock")
            self._elapsed = max(self._elapsed, self._sleepers[0][0])
            while self._sleepers and self._sleepers[0][0] <= self._elapsed:
                _when, _seq, future = heapq.heappop(self._sleepers)
                if not future.done():
                    future.set_result(None)
