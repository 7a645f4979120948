"""The simulator's clock: real UTC time (or a frozen start) plus an offset tests can advance."""

from __future__ import annotations

import functools
import threading
import time
from datetime import UTC, datetime


class SimClock:
    """Epoch seconds. ``SimClock()`` follows real time; ``SimClock(start=...)`` is frozen.

    Either way :meth:`advance` moves it forward, so lifecycle tests need no real sleeps.
    """

    def __init__(self, *, start: float | None = None, offset: float = 0.0) -> None:
        self._start = start
        self._offset = offset
        self._lock = threading.Lock()

    @property
    def frozen(self) -> bool:
        return self._start is not None

    @property
    def offset(self) -> float:
        return self._offset

    def now(self) -> float:
        base = time.time() if self._start is None else self._start
        return base + self._offset

    def advance(self, seconds: float) -> float:
        """Move forward by ``seconds`` (>= 0); returns the new time."""
        if not seconds >= 0:
            raise ValueError(f"the clock only moves forward, got {seconds!r} seconds")
        with self._lock:
            self._offset += seconds
        return self.now()

    def set_offset(self, offset: float) -> None:
        with self._lock:
            self._offset = offset


def wire_time(epoch: float) -> str:
    """``YYYY-MM-DD HH:MM:SS`` in UTC, the API's timestamp format."""
    return _wire_second(int(epoch))


@functools.lru_cache(maxsize=65536)
def _wire_second(second: int) -> str:
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d %H:%M:%S")


def iso_time(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
