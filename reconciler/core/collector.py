"""The cyclic garbage collector paused around bounded work that allocates a lot and makes no
reference cycles: planning a fleet, and a whole ``reconcile --dry-run`` (issue 14).

Objects are still freed by reference counting while the collector is paused; only the
collector's passes are skipped. Those passes walk every young object every few hundred
allocations and, as objects survive, repeatedly every object alive (a 100,000-node plan's
inputs are a server and a record per node): 15-45 % of a large plan, about a fifth of a
10,000-node dry-run. Nested and concurrent pauses (threads) share one: the collector comes
back (if it was on) when the last one ends, and collects any cycle then as usual.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = [
    "SERVICE_SWITCH_INTERVAL",
    "SERVICE_THRESHOLDS",
    "collector_paused",
    "tune_for_service",
]

_lock = threading.Lock()
_pausing = 0
_resume = False


@contextmanager
def collector_paused() -> Iterator[None]:
    """No collector passes inside the block (see the module doc)."""
    global _pausing, _resume
    with _lock:
        if _pausing == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pausing += 1
    try:
        yield
    finally:
        with _lock:
            _pausing -= 1
            if _pausing == 0 and _resume:
                gc.enable()


#: the collector's generation thresholds for a long-running service that answers thousands of
#: requests a second (the daemon; the heartbeat ceiling app gets the same, to compare alike)
SERVICE_THRESHOLDS = (10_000, 10, 10)


#: the interpreter's thread switch interval for such a service (seconds; Python's is 5 ms)
SERVICE_SWITCH_INTERVAL = 0.0005


def tune_for_service() -> None:
    """A young-generation pass every 10,000 net allocations instead of 700. A request waiting
    for its commit (a few ms) outlived several passes at 700 and every object it held moved to
    the old generation, whose full passes walk every object alive (10,000 nodes' state):
    ~17 % of the daemon's CPU while beats flowed (gc callbacks, loaded machine). At 10,000
    most request objects are freed before a pass sees them; cycles are still collected.

    And a thread switch interval of 0.5 ms instead of 5: a thread coming back from the
    database (the heartbeat batch writer, after each round trip) waits for the GIL until the
    thread holding it lets go, which a busy event loop does only when the interval runs out.
    Batches of 16 beats written while another thread kept the GIL busy (2,000 nodes,
    PostgreSQL on loopback, loaded machine): p50 31-62 ms per batch at 5 ms, 6-24 ms at
    0.5 ms. A forced switch costs a few microseconds, paid only while threads contend."""
    gc.set_threshold(*SERVICE_THRESHOLDS)
    sys.setswitchinterval(SERVICE_SWITCH_INTERVAL)
