"""``call_within``: a blocking call in a daemon thread, waited for at most a bound."""

from __future__ import annotations

import asyncio
import threading

from reconciler.daemon.bounded import LeftBehindError, call_within


def test_a_call_that_returns_gives_none() -> None:
    ran: list[str] = []
    assert asyncio.run(call_within(lambda: ran.append("x"), "ok", 5.0)) is None
    assert ran == ["x"]


def test_what_the_call_raised_is_returned_not_raised() -> None:
    def fail() -> None:
        raise TimeoutError("raised by the call itself")

    outcome = asyncio.run(call_within(fail, "raises", 5.0))
    # the call's own TimeoutError is not taken for the bound expiring
    assert isinstance(outcome, TimeoutError)
    assert not isinstance(outcome, LeftBehindError)
    assert str(outcome) == "raised by the call itself"


def test_a_call_past_its_bound_is_left_behind_in_a_daemon_thread() -> None:
    release = threading.Event()
    seen: list[threading.Thread] = []

    def stuck() -> None:
        seen.append(threading.current_thread())
        release.wait(30)

    try:
        outcome = asyncio.run(call_within(stuck, "stuck-call", 0.05))
        assert isinstance(outcome, LeftBehindError)
        assert "stuck-call" in str(outcome)
        assert len(seen) == 1
        assert seen[0].daemon
        assert seen[0].name == "stuck-call"
        assert seen[0].is_alive()
    finally:
        release.set()
    seen[0].join(5)
    assert not seen[0].is_alive()
