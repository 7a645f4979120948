"""A controllable clock implementing ``reconciler.core.ports.Clock``."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

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
