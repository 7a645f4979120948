"""Stalls at the boundaries: a store that freezes for calls made on an event loop, a clock
whose read during planning burns CPU.

- ``FreezingStore`` wraps a store (``InMemoryStore``). Once ``armed``, the first call made
  from a thread that runs an event loop (a synchronous store call on a loop: what a database
  frozen by SIGSTOP does to it) waits on ``thaw`` (a ``threading.Event``), at most
  ``longest`` seconds; calls from worker threads (``asyncio.to_thread``) go through. It says
  when it froze (``frozen``), whether the freeze ended by the test's ``thaw`` or by running
  out of time (``timed_out``), and on which thread it froze.
- ``BurningClock`` is the system clock; once ``burn_on_thread(ident, seconds)`` is set, the
  next ``now()`` on that thread spins the CPU (pure Python, holding the GIL between switch
  intervals) for that long: a long CPU-bound plan, where the planner reads the clock.
"""

from __future__ import annotations

import asyncio
import threading
import time
from datetime import UTC, datetime
from typing import Any


def _on_a_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class FreezingStore:
    def __init__(self, inner: Any, *, longest: float = 8.0) -> None:
        self._inner = inner
        self.longest = longest
        self.armed = False
        self.thaw = threading.Event()
        self.frozen = threading.Event()
        self.froze_at: float | None = None
        self.thawed_at: float | None = None
        self.timed_out = False
        self.frozen_on: str | None = None
        self.frozen_call: str | None = None

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not callable(value) or name.startswith("_"):
            return value

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.armed and _on_a_loop():
                self.armed = False
                self.frozen_on = threading.current_thread().name
                self.frozen_call = name
                self.froze_at = time.monotonic()
                self.frozen.set()
                self.timed_out = not self.thaw.wait(self.longest)
                self.thawed_at = time.monotonic()
            return value(*args, **kwargs)

        return call


class BurningClock:
    def __init__(self) -> None:
        self._burn: tuple[int, float] | None = None
        self.burnt: tuple[float, float] | None = None
        self.burnt_on: str | None = None

    def burn_on_thread(self, ident: int, seconds: float) -> None:
        self._burn = (ident, seconds)

    def now(self) -> datetime:
        burn = self._burn
        if burn is not None and burn[0] == threading.get_ident():
            self._burn = None
            self.burnt_on = threading.current_thread().name
            started = time.monotonic()
            spins = 0
            while time.monotonic() - started < burn[1]:
                spins += sum(i * i for i in range(200))  # CPU-bound Python, no I/O, no sleep
            self.burnt = (started, time.monotonic())
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))
