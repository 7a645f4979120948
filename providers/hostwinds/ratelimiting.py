"""A client-side token bucket for asyncio, on an injectable clock.

Hostwinds documents no rate limit; we throttle ourselves (default 2 requests/s) to be a polite
client and to stay clear of the IP-change cool-down seen in practice.

Deferrable reads (polls, ``reconciler.core.pacing``) yield to the other calls: they take a token
only when one is free and the other calls have paused for a token period, for at most
``defer_limit`` seconds;
then they queue like any call (issue 12: list rounds were pushing creates and ``set_rdns`` back).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

#: float slack when comparing token counts and waits (a sleep of exactly the computed time)
_EPSILON = 1e-9


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up.

    :meth:`acquire` reserves a slot at once (tokens may go negative) and then sleeps until that
    slot comes, so waiters are served in arrival order without a lock and fake time works:
    pass a ``monotonic`` that reads a fake clock and a ``sleep`` that advances it.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        defer_limit: float = 5.0,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        if burst < 1:
            raise ValueError("burst must be at least 1")
        if defer_limit < 0:
            raise ValueError("defer_limit must be >= 0")
        #: the longest a deferrable read yields to other calls before it queues like them
        self.defer_limit = float(defer_limit)
        self.rate = float(rate)
        #: the configured rate: ``slow_down`` lowers ``rate``, ``recover`` brings it back
        self.max_rate = float(rate)
        self.burst = int(burst)
        self._monotonic = monotonic
        self._sleep = sleep
        self._tokens = float(burst)
        self._updated = monotonic()
        #: until when the other (non-deferrable) calls count as a queue for deferrable reads
        self._busy_until = float("-inf")

    def _refill(self) -> None:
        now = self._monotonic()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)

    def reserve(self) -> float:
        """Take one token; return how many seconds to wait before using it (0 if none)."""
        self._refill()
        self._tokens -= 1.0
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate

    async def acquire(self, *, deferrable: bool = False) -> float:
        """Wait for a token; return the seconds waited.

        ``deferrable`` (a poll): take a token only when one is free now and the other calls
        have paused: none reserved ahead (reservations drive the count below one) and none
        took a token in the last token period (calls arriving one after the other, spending
        the burst, are still a queue: a poll taking a saved token now takes it from them a
        little later). Otherwise sleep until then and look again, so calls arriving meanwhile
        go first. After ``defer_limit`` seconds, reserve like any call (bounded wait)."""
        if not deferrable:
            delay = self.reserve()
            # the calls are busy until a token period after this one's slot
            self._busy_until = max(self._busy_until, self._monotonic() + delay + 1.0 / self.rate)
            if delay > 0:
                await self._sleep(delay)
            return delay
        started = self._monotonic()
        while True:
            self._refill()
            now = self._monotonic()
            waited = now - started
            busy = self._busy_until - now
            if self._tokens >= 1.0 - _EPSILON and busy <= _EPSILON:
                self._tokens -= 1.0
                return waited
            left = self.defer_limit - waited
            if left <= _EPSILON:
                delay = self.reserve()
                if delay > 0:
                    await self._sleep(delay)
                return waited + delay
            await self._sleep(min(left, max(busy, (1.0 - self._tokens) / self.rate)))

    def slow_down(self, retry_after: float | None = None) -> None:
        """The server said 429: halve the rate (down to a sixteenth of the configured one)
        and hand out no token before ``retry_after`` seconds (``Retry-After``)."""
        self._refill()
        self.rate = max(self.max_rate / 16, self.rate / 2)
        # one token becomes free exactly when Retry-After has passed
        floor = min(0.0, 1.0 - (retry_after or 0.0) * self.rate)
        self._tokens = min(self._tokens, floor)

    def recover(self) -> None:
        """A request went through: the rate grows back by a tenth of the configured one
        (additive increase after the multiplicative decrease)."""
        if self.rate < self.max_rate:
            self._refill()
            self.rate = min(self.max_rate, self.rate + self.max_rate / 10)

    @property
    def available(self) -> float:
        """Tokens available now (negative when callers are queued)."""
        self._refill()
        return self._tokens
