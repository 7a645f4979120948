"""The real clock: timezone-aware UTC now and an asyncio sleep (implements ``core.ports.Clock``)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime


class SystemClock:
    """Wall-clock time. Tests pass a fake clock instead."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
