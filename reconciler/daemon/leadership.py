"""Holding leadership (design §5) on top of the store's ``LeadershipPort``.

``LeaderGuard`` is polled by the daemon (``tick``) and consulted before every mutating step
(``before_mutation``, handed to the engine). It takes leadership when it can, checks it while
held, and on any doubt (the check fails, the lock connection drops) stops mutations at once:
``before_mutation`` raises ``LeadershipLostError`` from then on, the epoch is forgotten, and
the guard keeps trying to take leadership again with backoff.

The port's calls are blocking (a database round trip): ``tick`` runs them in a worker thread;
``before_mutation`` runs the check inline (one ``SELECT 1`` on the lock connection), because
the engine calls it synchronously right before each mutation. A lock serialises the two.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable

from reconciler.core.errors import LeadershipLostError, ReconcilerError
from reconciler.core.ports import LeadershipPort
from reconciler.daemon.metrics import DaemonMetrics

log = logging.getLogger("reconciler.daemon.leadership")


class LeaderGuard:
    def __init__(
        self,
        port: LeadershipPort,
        metrics: DaemonMetrics | None = None,
        *,
        standby_poll: float = 2.0,
        backoff_initial: float = 1.0,
        backoff_max: float = 15.0,
        monotonic: Callable[[], float] = time.monotonic,
        on_change: Callable[[bool], None] | None = None,
        check_wait: float = 2.0,
    ) -> None:
        self._port = port
        self._metrics = metrics
        self._standby_poll = standby_poll
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._monotonic = monotonic
        self._on_change = on_change
        self._check_wait = check_wait
        self._lock = threading.Lock()
        self._epoch: int | None = None
        self._next_attempt = 0.0
        self._failures = 0
        self._closed = False

    @property
    def epoch(self) -> int | None:
        return self._epoch

    @property
    def is_leader(self) -> bool:
        return self._epoch is not None

    # --- the mutation gate ---------------------------------------------------------------

    def before_mutation(self) -> None:
        """Raise LeadershipLostError unless this process leads right now (checked live).

        Bounded: if a check is already stuck (a network partition can hang a socket), the
        mutation is refused after ``check_wait`` seconds instead of waiting for it."""
        if self._epoch is None:
            raise LeadershipLostError("not the leader: mutation refused")
        if not self._lock.acquire(timeout=self._check_wait):
            self._lose("leadership check did not answer in time", release=False)
            raise LeadershipLostError("leadership unconfirmed: mutation refused")
        try:
            ok = self._port.check()
        except ReconcilerError:
            ok = False
        finally:
            self._lock.release()
        if not ok:
            self._lose("leadership check failed before a mutation")
            raise LeadershipLostError("leadership lost: mutation refused")

    # --- the loop ------------------------------------------------------------------------

    async def tick(self) -> bool:
        """Check (when leading) or try to take (when due). Returns whether we lead."""
        if self._closed:
            return False
        if self._epoch is not None:
            ok = await asyncio.to_thread(self._checked)
            if not ok:
                self._lose("leadership check failed")
            return self._epoch is not None
        now = self._monotonic()
        if now < self._next_attempt:
            return False
        try:
            epoch = await asyncio.to_thread(self._acquire)
        except ReconcilerError as exc:
            self._failures += 1
            delay = min(self._backoff_max, self._backoff_initial * 2 ** (self._failures - 1))
            delay *= random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not crypto)
            self._next_attempt = now + delay
            log.warning(
                f"cannot reach the leadership lock ({type(exc).__name__}); retry in {delay:.1f}s",
                extra={"event": "leadership.unreachable", "retry_in": round(delay, 1)},
            )
            return False
        self._failures = 0
        if epoch is None:
            self._next_attempt = now + self._standby_poll
            return False
        self._epoch = epoch
        log.info(
            f"leadership taken (epoch {epoch})",
            extra={"event": "leadership.taken", "epoch": epoch},
        )
        self._changed(True, "taken")
        return True

    def _checked(self) -> bool:
        with self._lock:
            try:
                return self._port.check()
            except ReconcilerError:
                return False

    def _acquire(self) -> int | None:
        with self._lock:
            return self._port.try_acquire()

    def _lose(self, why: str, *, release: bool = True) -> None:
        if self._epoch is None:
            return
        epoch = self._epoch
        self._epoch = None
        log.error(
            f"{why}: mutations stopped (epoch {epoch}); will try to take over again",
            extra={"event": "leadership.lost", "epoch": epoch},
        )
        if release and self._lock.acquire(timeout=self._check_wait):
            try:
                self._port.release()
            except ReconcilerError as exc:
                log.info(
                    f"release after loss failed: {type(exc).__name__}",
                    extra={"event": "leadership.release_failed"},
                )
            finally:
                self._lock.release()
        self._next_attempt = self._monotonic() + self._backoff_initial
        self._changed(False, "lost")

    def _changed(self, leading: bool, event: str) -> None:
        if self._metrics is not None:
            self._metrics.is_leader.set(1 if leading else 0)
            self._metrics.leadership_changes.labels(event).inc()
        if self._on_change is not None:
            self._on_change(leading)

    async def release(self) -> None:
        """Give leadership up (shutdown). Safe to call when not leading."""
        self._closed = True
        epoch = self._epoch
        self._epoch = None
        try:
            await asyncio.to_thread(self._release)
        except ReconcilerError as exc:
            log.warning(
                f"leadership release failed: {type(exc).__name__}",
                extra={"event": "leadership.release_failed"},
            )
        if epoch is not None:
            log.info(
                f"leadership released (epoch {epoch})",
                extra={"event": "leadership.released", "epoch": epoch},
            )
            self._changed(False, "released")

    def _release(self) -> None:
        with self._lock:
            self._port.release()
