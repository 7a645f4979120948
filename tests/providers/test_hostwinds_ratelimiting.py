"""The token bucket, on fake time."""

from __future__ import annotations

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers.hostwinds.ratelimiting import TokenBucket
from tests.fakes.clocks import FakeClock

pytestmark = pytest.mark.anyio


async def test_burst_is_free_then_requests_are_spaced_by_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 2, monotonic=clock.monotonic, sleep=clock.sleep)
    stamps = []
    for _ in range(6):
        await bucket.acquire()
        stamps.append(clock.monotonic())
    assert stamps == [0.0, 0.0, 0.5, 1.0, 1.5, 2.0]


async def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    bucket = TokenBucket(1.0, 3, monotonic=clock.monotonic, sleep=clock.sleep)
    for _ in range(3):
        assert await bucket.acquire() == 0.0
    clock.advance(100.0)
    assert bucket.available == pytest.approx(3.0)
    for _ in range(3):
        assert await bucket.acquire() == 0.0
    assert await bucket.acquire() == pytest.approx(1.0)


async def test_concurrent_waiters_are_served_in_arrival_order_at_the_rate() -> None:
    clock = FakeClock()
    bucket = TokenBucket(4.0, 1, monotonic=clock.monotonic, sleep=clock.sleep)
    order: list[int] = []

    async def worker(n: int) -> None:
        await bucket.acquire()
        order.append(n)

    async with anyio.create_task_group() as tg:
        for n in range(5):
            tg.start_soon(worker, n)
    assert order == [0, 1, 2, 3, 4]
    # five requests at 4/s with a burst of one take at least a second
    assert clock.monotonic() == pytest.approx(1.0)


def test_rejects_nonsense_settings() -> None:
    with pytest.raises(ValueError, match="rate"):
        TokenBucket(0.0)
    with pytest.raises(ValueError, match="burst"):
        TokenBucket(1.0, 0)


@settings(max_examples=60, deadline=None)
@given(
    rate=st.floats(min_value=0.1, max_value=50.0),
    burst=st.integers(min_value=1, max_value=10),
    n=st.integers(min_value=1, max_value=60),
)
def test_never_more_than_burst_plus_rate_times_elapsed(rate: float, burst: int, n: int) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, burst, monotonic=clock.monotonic, sleep=clock.sleep)

    async def run() -> None:
        for _ in range(n):
            await bucket.acquire()

    anyio.run(run)
    elapsed = clock.monotonic()
    assert n <= burst + rate * elapsed + 1e-6
    # and it is not slower than needed
    assert elapsed <= max(0.0, (n - burst) / rate) + 1e-6
