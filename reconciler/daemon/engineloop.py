"""The reconcile's own thread and event loop (issue 10: no store call on the daemon's loop).

A reconcile makes synchronous store calls (the engine's journal, the run history: a frozen
database holds each for as long as it is frozen) and plans in CPU-bound Python. On the
daemon's main loop either would stop everything else the loop does: renewing the leadership
lease, the sweeps, the stop signals' grace. So the daemon runs each reconcile, whole, on an
``EngineLoop``: a daemon thread running its own asyncio loop. The cloud client and the
provisioning adapters live there too (``serve_daemon`` builds them on it, with ``enter``):
an ``httpx.AsyncClient``'s connections belong to the loop that opened them.

- ``call(coro)`` (from the main loop) runs a coroutine there and awaits its result without
  blocking the caller. Cancelling the caller cancels it there, and the caller then waits (at
  most ``unwind_wait`` s) for it to unwind (the engine records the run as failed); a thread
  stuck in a call to a frozen database keeps it from unwinding, and the caller goes on.
- ``close(wait)`` leaves what ``enter`` entered, cancels what still runs there (stand-in
  agents), waits at most ``wait`` s, and stops the loop; a thread still stuck in a call is left
  behind (a daemon thread never holds the process's exit) and closes its loop once the call
  returns.

While the engine thread waits for the database or plans, the GIL is released at least every
switch interval (5 ms): the main loop keeps its jobs' pace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from typing import Any, TypeVar

log = logging.getLogger("reconciler.daemon")

_T = TypeVar("_T")

#: seconds a cancelled call is given to unwind (record its run) before the caller goes on
UNWIND_WAIT = 2.0


class EngineLoop:
    def __init__(self, name: str = "reconcile", *, unwind_wait: float = UNWIND_WAIT) -> None:
        self.name = name
        self.unwind_wait = unwind_wait
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._stack = AsyncExitStack()
        self._started = False
        self._closed = False
        #: the calls that have not finished over there (one token each)
        self._unfinished: set[object] = set()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        loop = self.loop
        try:
            loop.run_forever()
        finally:
            # what is left once stopped (a call that came back from a frozen database after
            # ``close`` gave up on it) is cancelled, and the thread closes its own loop
            left = asyncio.all_tasks(loop)
            for task in left:
                task.cancel()
            if left:
                loop.run_until_complete(asyncio.gather(*left, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            loop.close()

    def start(self) -> EngineLoop:
        if not self._started:
            self._started = True
            self._thread.start()
        return self

    @property
    def thread(self) -> threading.Thread:
        return self._thread

    @property
    def busy(self) -> bool:
        """Whether a call has not finished there (a cancelled one still stuck in a call to a
        database that does not answer, say)."""
        return bool(self._unfinished)

    def in_thread(self) -> bool:
        """Whether the caller runs on this loop's thread."""
        return threading.current_thread() is self._thread

    async def call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` on this loop; its result (or exception) here."""
        if self._closed:
            coro.close()
            raise RuntimeError(f"the {self.name} loop is closed")
        caller = asyncio.get_running_loop()
        unwound: asyncio.Future[None] = caller.create_future()

        def mark_unwound() -> None:
            if not unwound.done():
                unwound.set_result(None)

        token = object()
        self._unfinished.add(token)

        async def tracked() -> _T:
            try:
                return await coro
            finally:
                self._unfinished.discard(token)
                with contextlib.suppress(RuntimeError):  # the caller's loop is closed
                    caller.call_soon_threadsafe(mark_unwound)

        future = asyncio.run_coroutine_threadsafe(tracked(), self.start().loop)
        try:
            return await asyncio.wrap_future(future)
        except asyncio.CancelledError:
            future.cancel()  # cancels the task over there (at its next await)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(unwound), self.unwind_wait)
            raise

    async def enter(self, manager: AbstractAsyncContextManager[_T]) -> _T:
        """Enter an async context manager on this loop (left there by ``close``)."""
        return await self.call(self._stack.enter_async_context(manager))

    async def close(self, wait: float = 5.0) -> bool:
        """Leave what ``enter`` entered and cancel what still runs (on this loop, within
        ``wait`` s), then stop the loop; the thread closes it. False when the thread is still
        stuck in a call (it finishes, and closes its loop, once the call returns)."""
        if self._closed:
            return not self._thread.is_alive()
        self._closed = True
        if not self._started:
            self.loop.close()
            return True
        future = asyncio.run_coroutine_threadsafe(self._wind_down(), self.loop)
        try:
            await asyncio.wait_for(asyncio.wrap_future(future), wait)
        except TimeoutError:
            log.warning(
                f"the {self.name} thread did not finish within {wait:g}s (a call to the "
                "database that does not answer?): left behind",
                extra={"event": "daemon.engine_stuck"},
            )
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self.loop.stop)
            return False  # stuck in a call: joining it would only wait longer
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self.loop.stop)
        await asyncio.to_thread(self._thread.join, 1.0)
        return not self._thread.is_alive()

    async def _wind_down(self) -> None:
        try:
            await self._stack.aclose()
        finally:
            current = asyncio.current_task()
            others = [t for t in asyncio.all_tasks() if t is not current]
            for task in others:
                task.cancel()
            if others:
                await asyncio.gather(*others, return_exceptions=True)
