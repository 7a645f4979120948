"""Polls yield to mutations at the rate limiter (issue 12).

Waiting for servers (``engine.watching``) polls the account: list rounds, name look-ups,
single reads. Each poll takes a rate-limit token from the same bucket as the calls that change
something (``add_instance``, ``set_rdns``, resizes, destroys). When the mutations are what the
run waits for, a poll that takes a token in their queue only pushes them back. So the watcher
marks its polls ``deferrable()``, and a cloud adapter with a rate limiter lets such a read take
a token only when no mutation is waiting for one, up to a bounded wait (the adapter's
``defer_limit``), after which the read queues like any other call: polls are never starved.

The mark travels in a context variable, like the writer's fence (``core.fencing``), so the
``CloudPort`` signatures stay as they are; tasks started inside the block carry it. Outside
(the plan's observation, a no-op reconcile's one list, the create protocol's own look-ups)
reads keep their place in the queue. This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["deferrable", "reads_deferrable"]

_DEFERRABLE: ContextVar[bool] = ContextVar("reconciler_deferrable_reads", default=False)


def reads_deferrable() -> bool:
    """Whether the reads made here are polls that may wait for queued mutations."""
    return _DEFERRABLE.get()


@contextmanager
def deferrable() -> Iterator[None]:
    """Mark the reads made inside this block (and in tasks started inside it) as polls."""
    token = _DEFERRABLE.set(True)
    try:
        yield
    finally:
        _DEFERRABLE.reset(token)
