"""A blocking call run in a daemon thread and waited for at most a bound, from the event loop.

A database that does not answer at all holds a call on its socket: the shutdown's leadership
release and store closes run here, so a frozen database never holds the loop or the process's
exit (a call still stuck past its bound is left behind; its thread is a daemon thread)."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable


class LeftBehindError(TimeoutError):
    """The call did not finish within its bound: it is left behind in its thread."""


async def call_within(call: Callable[[], None], name: str, wait: float) -> BaseException | None:
    """Run ``call`` in a daemon thread named ``name``; wait at most ``wait`` s for it.

    Returns None when it returned, the exception it raised, or ``LeftBehindError`` when it did not
    finish in time. Never raises what the call raised."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[BaseException | None] = loop.create_future()

    def settle(outcome: BaseException | None) -> None:
        if not done.done():
            done.set_result(outcome)

    def run() -> None:
        outcome: BaseException | None = None
        try:
            call()
        except BaseException as exc:  # reported on the loop, never raised in the thread
            outcome = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            loop.call_soon_threadsafe(settle, outcome)

    threading.Thread(target=run, name=name, daemon=True).start()
    try:
        return await asyncio.wait_for(asyncio.shield(done), wait)
    except TimeoutError:
        return LeftBehindError(f"{name}: no answer within {wait:g}s")
