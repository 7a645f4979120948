"""The stop signals' watchdog in-process (reconciler.daemon.stopping): a signal is logged at
once even when the event loop never runs, the stop is forced past its deadline (mutations
stopped through ``abandon``), a second signal forces it at once, and the handlers are put back
afterwards. The daemon process itself is tested in test_pg_faults.py (a frozen database)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time

import pytest

from reconciler.daemon.stopping import StopSignals

pytestmark = pytest.mark.skipif(
    threading.current_thread() is not threading.main_thread(),
    reason="signal handlers need the main thread",
)


def watch(
    loop: asyncio.AbstractEventLoop, grace: float, margin: float
) -> tuple[StopSignals, list[str], list[float]]:
    stops: list[str] = []
    abandoned: list[float] = []

    def abandon(wait: float) -> str:
        abandoned.append(wait)
        return "leadership released (epoch 7)"

    signals = StopSignals(
        loop,
        on_stop=stops.append,
        abandon=abandon,
        phase=lambda: "waiting for the reconcile in flight",
        grace=grace,
        exit_process=False,
        release_wait=0.2,
        margin=margin,
    )
    return signals, stops, abandoned


def wait_until(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_stop_signal_is_logged_at_once_and_forced_past_the_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    previous = signal.getsignal(signal.SIGTERM)
    loop = asyncio.new_event_loop()  # never run: a loop stuck in a call
    signals, stops, abandoned = watch(loop, grace=0.3, margin=0.4)
    caplog.set_level(logging.INFO, logger="reconciler.daemon")
    assert signals.install()
    try:
        sent = time.monotonic()
        os.kill(os.getpid(), signal.SIGTERM)
        wait_until(lambda: any(r.event == "daemon.stopping" for r in caplog.records))  # type: ignore[attr-defined]
        logged = time.monotonic() - sent
        wait_until(lambda: signals.forced)
        wait_until(lambda: any(r.event == "daemon.forced_exit.leadership" for r in caplog.records))  # type: ignore[attr-defined]
        forced_after = time.monotonic() - sent
    finally:
        signals.stopped()
        loop.close()
    assert logged < 0.5
    assert 0.4 <= forced_after < 2.0  # grace + margin - the release wait
    assert abandoned == [0.2]
    assert stops == []  # the loop never ran
    (forced,) = [r for r in caplog.records if getattr(r, "event", "") == "daemon.forced_exit"]
    assert "event loop never answered" in forced.getMessage()
    assert "waiting for the reconcile in flight" in forced.getMessage()
    assert signal.getsignal(signal.SIGTERM) == previous  # handlers put back


def test_a_second_signal_forces_the_stop_at_once(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    signals, _stops, abandoned = watch(loop, grace=60, margin=10)
    caplog.set_level(logging.INFO, logger="reconciler.daemon")
    assert signals.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        wait_until(
            lambda: any(getattr(r, "event", "") == "daemon.stopping" for r in caplog.records)
        )
        sent = time.monotonic()
        os.kill(os.getpid(), signal.SIGINT)
        wait_until(lambda: signals.forced)
        assert time.monotonic() - sent < 1.0
    finally:
        signals.stopped()
        loop.close()
    assert abandoned == [0.2]
    (forced,) = [r for r in caplog.records if getattr(r, "event", "") == "daemon.forced_exit"]
    assert forced.getMessage().startswith("SIGINT received again")


def test_a_loop_that_answers_stops_normally_and_nothing_is_forced() -> None:
    loop = asyncio.new_event_loop()
    signals, stops, abandoned = watch(loop, grace=0.2, margin=0.3)
    assert signals.install()
    try:

        async def main() -> None:
            os.kill(os.getpid(), signal.SIGQUIT)
            for _ in range(100):
                if stops:
                    return
                await asyncio.sleep(0.01)

        loop.run_until_complete(main())
        assert stops == ["SIGQUIT"]
        signals.stopped()  # the daemon stopped in time: the watchdog stands down
        time.sleep(0.6)
    finally:
        loop.close()
    assert not signals.forced
    assert abandoned == []
