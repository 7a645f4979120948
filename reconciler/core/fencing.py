"""The writer's fence, carried to the wire (design §3c).

A mutating cloud call may be sent only while this process is the fleet's writer (daemon
leadership: lease and epoch; a CLI run: the writer lock). The engine checks that before each
mutating step, but a call may then wait for the client's rate-limit token, and leadership can
be lost meanwhile. So the engine installs the writer's check for the apply it runs
(``fenced(check)``), and every cloud adapter calls ``check_fence()`` **after the rate-limit
token is taken and immediately before it sends a mutating request**. The check raises
``LeadershipLostError``; nothing is sent.

The check travels in a context variable so that every task the apply starts (they copy the
context) carries it to the adapter without widening the ``CloudPort`` signatures. Outside an
apply (reads, tests, the daemon's other work) no fence is installed and ``check_fence`` does
nothing. This module does no I/O itself: the check is the caller's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["check_fence", "fenced"]

_CHECKS: ContextVar[tuple[Callable[[], None], ...]] = ContextVar("reconciler_fence", default=())


def check_fence() -> None:
    """Run the installed checks in order (the writer's fence first; it raises
    ``LeadershipLostError``); none installed: nothing."""
    for check in _CHECKS.get():
        check()


@contextmanager
def fenced(check: Callable[[], None] | None) -> Iterator[None]:
    """Add ``check`` to the checks run right before the mutating requests made inside (and in
    the tasks started inside) this block. The applier installs the writer's fence for the
    whole apply; a create adds the write of its intent for its one request (design §3: the
    intent is written after the rate-limit token, marked sent, right before the request)."""
    if check is None:
        yield
        return
    token = _CHECKS.set((*_CHECKS.get(), check))
    try:
        yield
    finally:
        _CHECKS.reset(token)
