"""Stopping the daemon on SIGTERM, SIGINT or SIGQUIT within a bounded time, whatever is stuck.

Against a database that accepts connections but never answers (SIGSTOP, a partition whose
kernel still acknowledges, where keepalives and ``tcp_user_timeout`` see nothing wrong) a store
call waits for ever. The reconcile's calls run on its own thread (``engineloop``), but a call
the loop waits on (the release, closing the store) or a bug that blocks the loop must not keep
the daemon from leaving either. The interpreter's own exit would wait too, for the worker
threads left in database calls (it joins them).

So the stop signals get Python-level handlers. Python runs them in the main thread at its
next check for signals, which psycopg's wait makes while it waits for a frozen server (the
handler runs within milliseconds, the call itself goes on waiting). The handler only hands
the signal's name to a watchdog thread, which does the rest off the loop:

- the first signal is logged at once (``daemon.stopping``) and the loop is asked to stop (the
  normal path: the step in flight may finish within ``--shutdown-grace``, leadership is
  released within a bounded wait, HTTP closes, exit code 0);
- when the daemon has not exited by the grace plus ``STOP_MARGIN`` seconds minus the release's
  wait (``RELEASE_WAIT``), or a second stop signal arrives, the watchdog stops the daemon
  itself: one line says what was stuck
  (``daemon.forced_exit``), the leader guard refuses every mutation from then on (without a
  round trip), leadership is released within a bounded wait (a frozen database leaves it to
  the lease, which ends by itself), the logs are flushed and the process exits with code 1;
- once the daemon has stopped (leadership released, HTTP closed) the process exits at once,
  or within ``EXIT_WAIT`` seconds when worker threads are still in database calls (code 0, or 1
  when it stopped on an error; with a line saying so).

While the daemon starts (before ``Daemon.run``), a stop signal is logged and ends the process
at once (``exit_on_stop_while_starting``): it does not lead yet.

Off the main thread (an embedding that runs the daemon in a thread) Python cannot install
signal handlers: the loop's own handlers are used, without the watchdog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

log = logging.getLogger("reconciler.daemon")

#: the process exits at the latest this many seconds past the grace: the release of leadership
#: (bounded at 5 s) and the HTTP server's close fit within it on the normal path
STOP_MARGIN = 10.0
#: seconds a forced stop waits for the release of leadership (a frozen database: the lease)
RELEASE_WAIT = 3.0
#: seconds the interpreter gets to exit by itself once the daemon has stopped
EXIT_WAIT = 3.0
#: exit code of a stop the watchdog had to force (the step in flight was abandoned unlogged
#: by the loop, leadership possibly left to expire)
FORCED_EXIT_CODE = 1
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT)


class StopSignals:
    """The stop signals' handlers and their watchdog (see the module docstring).

    ``on_stop(name)`` runs on the loop (the normal stop, not logged again there);
    ``abandon(wait)`` runs in the watchdog thread when the stop is forced: it stops mutations
    and releases leadership within ``wait`` seconds, returning a line for the log;
    ``phase()`` says what the daemon is doing (for that log line).
    ``exit_process``: force the process's exit (the daemon process); False in an embedding
    (tests), where a forced stop only logs and abandons."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        on_stop: Callable[[str], None],
        abandon: Callable[[float], str],
        phase: Callable[[], str],
        grace: float,
        exit_process: bool,
        release_wait: float = RELEASE_WAIT,
        margin: float = STOP_MARGIN,
    ) -> None:
        self._loop = loop
        self._on_stop = on_stop
        self._abandon = abandon
        self._phase = phase
        self._grace = grace
        #: the process is gone this many seconds after the first stop signal at the latest
        self.deadline = grace + margin
        self._exit_process = exit_process
        self._release_wait = release_wait
        # SimpleQueue.put is reentrant: safe in a signal handler that interrupted anything
        self._inbox: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._previous: dict[int, Any] = {}
        self._thread: threading.Thread | None = None
        self._loop_answered = threading.Event()
        self._exit_code = 0
        self._left_behind: list[str] = []
        self.forced = False

    def install(self) -> bool:
        """Handlers for the stop signals; False (nothing installed) off the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return False
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handler)
        self._thread = threading.Thread(target=self._watch, name="stop-watchdog", daemon=True)
        self._thread.start()
        return True

    def _handler(self, signum: int, frame: FrameType | None) -> None:
        self._inbox.put(signal.Signals(signum).name)

    def stopped(self, *, failed: bool = False, left_behind: list[str] | None = None) -> None:
        """The daemon has stopped (``failed``: by an error, exit code 1). In the daemon process
        the handlers stay (a late signal is still logged) and the exit is bounded: at once
        when the stop ``left_behind`` calls to a database that does not answer (the
        interpreter would wait for their threads), else within ``EXIT_WAIT`` s; in an
        embedding they are put back."""
        if self._exit_process:
            self._exit_code = 1 if failed else 0
            self._left_behind = list(left_behind or ())
            self._inbox.put("")
            return
        for sig, previous in self._previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, previous)
        self._previous.clear()
        self._inbox.put(None)
        if self._thread is not None:
            self._thread.join(5)

    # --- the watchdog thread -------------------------------------------------------------

    def _watch(self) -> None:
        first = self._inbox.get()
        if first is None:
            return
        if first == "":  # stopped without a signal: bound the exit only
            self._bounded_exit()
            return
        log.info(
            f"{first} received: stopping (the step in flight may finish within "
            f"{self._grace:.0f}s; the daemon exits within {self.deadline:.0f}s "
            "whatever is stuck)",
            extra={"event": "daemon.stopping", "signal": first},
        )
        with contextlib.suppress(RuntimeError):  # the loop is closed: it stopped already
            self._loop.call_soon_threadsafe(self._stop_on_loop, first)
        deadline = time.monotonic() + self.deadline - self._release_wait
        while True:
            try:
                item = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                waited = self.deadline - self._release_wait
                self._force(f"the stop did not finish within {waited:.0f}s")
                return
            if item is None:
                return
            if item == "":
                self._bounded_exit()
                return
            self._force(f"{item} received again")
            return

    def _stop_on_loop(self, name: str) -> None:
        self._loop_answered.set()
        self._on_stop(name)

    def _force(self, why: str) -> None:
        self.forced = True
        phase = self._phase()
        if not self._loop_answered.is_set():
            phase += (
                "; the event loop never answered: a call on it is stuck (a store call on a "
                "database that does not answer?)"
            )
        log.error(
            f"{why} ({phase}): mutations stopped, leaving without waiting further",
            extra={"event": "daemon.forced_exit", "phase": phase},
        )
        outcome = self._abandon(self._release_wait)
        log.warning(outcome, extra={"event": "daemon.forced_exit.leadership"})
        if not self._exit_process:
            return
        log.info("daemon stopped (forced)", extra={"event": "daemon.stopped", "forced": True})
        _flush_logs()
        os._exit(FORCED_EXIT_CODE)

    def _bounded_exit(self) -> None:
        """The daemon stopped; give the interpreter ``EXIT_WAIT`` s to exit by itself (none
        when the stop left calls to an unanswering database behind: it would wait for their
        threads)."""
        if self._left_behind:
            log.info(
                f"exiting now (code {self._exit_code}): the calls left behind end with the process",
                extra={"event": "daemon.exit_unjoined", "left_behind": self._left_behind},
            )
            _flush_logs()
            os._exit(self._exit_code)
        item = None
        with contextlib.suppress(queue.Empty):
            item = self._inbox.get(timeout=EXIT_WAIT)
        if item:  # a stop signal while the interpreter still waits: leave now
            log.info(f"{item} received while exiting", extra={"event": "daemon.signal"})
        stuck = [
            t.name
            for t in threading.enumerate()
            if t is not threading.current_thread()
            and t is not threading.main_thread()
            and not t.daemon
        ]
        log.warning(
            f"exiting without waiting for {len(stuck)} worker thread(s) still in calls (the "
            "state database does not answer?)",
            extra={"event": "daemon.exit_unjoined", "threads": len(stuck)},
        )
        _flush_logs()
        os._exit(self._exit_code)


def exit_on_stop_while_starting() -> Callable[[], None]:
    """Until the daemon runs (its spec, store, cloud and provisioning being set up, which may
    wait for a database up to its connect timeout): a stop signal is logged and ends the process
    at once, code 0 (it does not lead yet: there is nothing to release or finish). Returns the
    function that puts the previous handlers back (nothing is installed off the main thread)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        log.info(
            f"{name} received while starting: exiting (not leading yet, nothing to release)",
            extra={"event": "daemon.stopping", "signal": name, "phase": "starting"},
        )
        _flush_logs()
        os._exit(0)

    for sig in STOP_SIGNALS:
        previous[sig] = signal.signal(sig, handler)

    def restore() -> None:
        for sig, before in previous.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(sig, before)
        previous.clear()

    return restore


def _flush_logs() -> None:
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
