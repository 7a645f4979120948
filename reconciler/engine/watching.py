"""Waiting for servers to reach a state, sharing list calls between concurrent waiters.

One waiter polls its server with ``get_server``; as soon as two or more wait, they share one
``list_servers`` per poll round, so waiting for a hundred new servers costs one list call per
round rather than a hundred reads (design §2: observing is cheap).

Every poll is ``deferrable`` (``core.pacing``): at a rate-limited client it takes a token only
when no create, ``set_rdns``, resize or destroy is waiting for one (bounded by the client's
``defer_limit``), so polling never pushes the calls it waits for back in the queue. A list
round deferred that way still serves every waiter that joined it, and no new round starts
while it waits (issue 12). A round that finds the account as the one before (nothing built,
nothing new) doubles the gap before the next, up to four intervals and at most
``QUIET_BACKOFF_LIMIT`` more than one; any change brings it back to one interval: a quiet wait
(servers still building, no mutation queued) spends fewer of the tokens the bucket saves for
the calls that follow, and a slow poll (10 s on Hostwinds) is barely changed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import datetime, timedelta

from reconciler.core.errors import NotFoundError, TransientError
from reconciler.core.fleet import ObservedServer
from reconciler.core.pacing import deferrable
from reconciler.core.ports import Clock, CloudPort

#: the most a run of quiet list rounds adds to the poll interval (seconds)
QUIET_BACKOFF_LIMIT = 0.25


class WaitFailedError(Exception):
    """The server did not reach the wanted state (timeout, ERROR, vanished)."""


class ServerWatcher:
    def __init__(self, cloud: CloudPort, clock: Clock, interval: float) -> None:
        self._cloud = cloud
        self._clock = clock
        self._interval = interval
        self._waiters = 0
        self._generation = 0
        self._result: dict[int, ObservedServer] = {}
        self._result_generation = 0
        self._task: asyncio.Task[None] | None = None
        self._last_started: datetime | None = None
        #: seconds between two list rounds: the interval, doubled after a quiet round
        self._gap = interval
        self._max_gap = interval + min(3 * interval, QUIET_BACKOFF_LIMIT)

    async def _list(self, generation: int) -> None:
        try:
            with deferrable():
                servers = await self._cloud.list_servers()
            result = {s.service_id: s for s in servers}
            quiet = result == self._result
            self._gap = min(self._max_gap, self._gap * 2) if quiet else self._interval
            self._result = result
            self._result_generation = generation
        finally:
            self._task = None

    async def _listed_after(self, seen: int) -> tuple[int, dict[int, ObservedServer]]:
        """A list started after generation ``seen``; list rounds start at most once per
        interval (longer after quiet rounds), so waiters arriving one after the other share
        them."""
        while self._result_generation <= seen:
            if self._task is None:
                if self._last_started is not None:
                    gap = self._gap - (self._clock.now() - self._last_started).total_seconds()
                    if gap > 0:
                        await self._clock.sleep(gap)
                        continue  # another waiter may have started one meanwhile
                self._generation += 1
                self._last_started = self._clock.now()
                self._task = asyncio.create_task(self._list(self._generation))
            await asyncio.shield(self._task)
        return self._result_generation, self._result

    async def wait_for_name(self, name: str, *, within: timedelta) -> ObservedServer | None:
        """The server named ``name`` (lowest id if several) once it shows up, or ``None`` after
        ``within``. Transient errors count as "not yet"."""
        deadline = self._clock.now() + within
        seen = self._generation
        self._waiters += 1
        try:
            while True:
                found: list[ObservedServer] = []
                try:
                    if self._waiters <= 1:
                        with deferrable():
                            found = await self._cloud.find_servers_by_name(name)
                    else:
                        seen, servers = await self._listed_after(seen)
                        found = [s for s in servers.values() if s.name == name]
                except TransientError:
                    found = []
                if found:
                    return min(found, key=lambda s: s.service_id)
                if self._clock.now() >= deadline:
                    return None
                await self._clock.sleep(self._interval)
        finally:
            self._waiters -= 1

    async def _current(self, service_id: int, seen: int) -> tuple[int, ObservedServer | None]:
        if self._waiters <= 1:
            try:
                with deferrable():
                    return seen, await self._cloud.get_server(service_id)
            except NotFoundError:
                return seen, None
        generation, servers = await self._listed_after(seen)
        return generation, servers.get(service_id)

    async def wait_for(
        self,
        service_id: int,
        done: Callable[[ObservedServer], bool],
        *,
        within: timedelta,
        what: str,
        fail_on_error: bool = True,
    ) -> ObservedServer:
        """Poll until ``done(server)``; raise WaitFailedError on timeout, ERROR or absence."""
        deadline = self._clock.now() + within
        # only a list started after this wait began may answer it
        seen = self._generation
        self._waiters += 1
        try:
            while True:
                problem = ""
                try:
                    seen, server = await self._current(service_id, seen)
                except TransientError as exc:
                    problem = f" (last error: {exc.message})"
                else:
                    if server is None:
                        raise WaitFailedError(
                            f"server {service_id} vanished while waiting for {what}"
                        )
                    if done(server):
                        return server
                    if fail_on_error and server.status.is_failed:
                        raise WaitFailedError(
                            f"server {service_id} went to ERROR while waiting for {what}"
                        )
                if self._clock.now() >= deadline:
                    raise WaitFailedError(
                        f"server {service_id}: no {what} within {_seconds(within)}{problem}"
                    )
                await self._clock.sleep(self._interval)
        finally:
            self._waiters -= 1

    async def aclose(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _seconds(value: timedelta) -> str:
    seconds = value.total_seconds()
    return f"{seconds:g}s"
