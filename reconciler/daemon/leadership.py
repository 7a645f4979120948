"""Holding leadership (design §5) on top of the store's ``LeadershipPort``.

``LeaderGuard`` is polled by the daemon (``tick``) and consulted before every mutating step
(``before_mutation``, handed to the engine). It takes leadership when it can, renews it while
held (the port's ``check``), and on any doubt (the renewal fails, the lock connection drops,
the lease's deadline passes) stops mutations at once: ``before_mutation`` raises
``LeadershipLostError`` from then on, the epoch is forgotten, and the guard keeps trying to
take leadership again with backoff.

A port with a lease (``valid_until``, a time on the monotonic clock) bounds leadership by
time: past it the guard is not the leader, even if the renewal is stuck in a frozen database
or the process itself was frozen (SIGSTOP) — nothing needs to answer for it to stop.

The port's calls are blocking (a database round trip): ``tick`` runs them in a worker thread
and never waits for one longer than ``check_wait`` (a stuck call is left running, and no
second one is started beside it); ``before_mutation`` runs the renewal inline, because the
engine calls it synchronously right before each mutation. A lock serialises the two. Nothing
blocking runs on the event loop: a release after a loss runs in a thread too.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import UTC, datetime
from typing import Any, TypeVar

from reconciler.core.errors import LeadershipLostError, ReconcilerError
from reconciler.core.ports import LeadershipPort
from reconciler.daemon.bounded import LeftBehindError, call_within
from reconciler.daemon.metrics import DaemonMetrics

log = logging.getLogger("reconciler.daemon.leadership")

_T = TypeVar("_T")

#: seconds a shutdown waits for the release of leadership (a database that does not answer:
#: the lease is left to expire, logged)
RELEASE_WAIT = 1.5


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
        mutation_wait: float = 1.0,
    ) -> None:
        self._port = port
        self._metrics = metrics
        self._standby_poll = standby_poll
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._monotonic = monotonic
        self._on_change = on_change
        self._check_wait = check_wait
        self._mutation_wait = min(mutation_wait, check_wait)
        self._pending_check: Future[bool | None] | None = None
        self._lock = threading.Lock()
        self._epoch: int | None = None
        self._next_attempt = 0.0
        self._failures = 0
        self._closed = False
        #: a port call still running in its thread (a frozen database), with what it runs
        self._inflight: tuple[Callable[[], Any], asyncio.Future[Any]] | None = None

    @property
    def epoch(self) -> int | None:
        return self._epoch if self._lease_valid() else None

    @property
    def holds_epoch(self) -> bool:
        """Whether an epoch was taken and not given up yet (its lease may have run out)."""
        return self._epoch is not None

    @property
    def is_leader(self) -> bool:
        return self._epoch is not None and self._lease_valid()

    def _lease_valid(self) -> bool:
        until = getattr(self._port, "valid_until", None)
        return until is None or self._monotonic() < float(until)

    # --- the mutation gate ---------------------------------------------------------------

    def before_mutation(self) -> None:
        """Raise LeadershipLostError unless this process leads right now (checked live).

        Bounded: the lease's deadline is checked first (no round trip); the live renewal runs
        in a worker thread and the mutation is refused when it does not answer within
        ``mutation_wait`` (a frozen database or a partition can hang a socket), so a caller on
        the event loop is never held longer than that."""
        if self._epoch is None:
            raise LeadershipLostError("not the leader: mutation refused")
        if not self._lease_valid():
            self._lose("the lease expired before it was renewed", release=False)
            raise LeadershipLostError("lease expired: mutation refused")
        if self._pending_check is not None and not self._pending_check.done():
            self._lose("leadership check did not answer in time", release=False)
            raise LeadershipLostError("leadership unconfirmed: mutation refused")
        future: Future[bool | None] = Future()
        self._pending_check = future

        def check() -> None:
            try:
                future.set_result(self._checked_within(self._mutation_wait))
            except BaseException as exc:
                future.set_exception(exc)

        # a daemon thread: one stuck in a frozen database never holds the process's exit
        threading.Thread(target=check, name="leader-check", daemon=True).start()
        try:
            ok = future.result(timeout=self._mutation_wait)
        except FutureTimeout:
            self._lose("leadership check did not answer in time", release=False)
            raise LeadershipLostError("leadership unconfirmed: mutation refused") from None
        if ok is None:
            self._lose("leadership check did not answer in time", release=False)
            raise LeadershipLostError("leadership unconfirmed: mutation refused")
        if not ok:
            self._lose("leadership check failed before a mutation")
            raise LeadershipLostError("leadership lost: mutation refused")

    def _checked_within(self, wait: float) -> bool | None:
        """The live check, or None when another check holds the lock longer than ``wait``."""
        if not self._lock.acquire(timeout=wait):
            return None
        try:
            return self._port.check()
        except ReconcilerError:
            return False
        finally:
            self._lock.release()

    # --- the loop ------------------------------------------------------------------------

    async def tick(self) -> bool:
        """Renew (when leading) or try to take (when due). Returns whether we lead."""
        if self._closed:
            return False
        if self._epoch is not None:
            if not self._lease_valid():
                self._lose("the lease expired before it was renewed", release=False)
                return False
            done, ok = await self._bounded(self._checked)
            if done and not ok:
                self._lose("leadership check failed")
            elif not done and not self._lease_valid():
                self._lose("the lease renewal did not answer in time", release=False)
            return self.is_leader
        now = self._monotonic()
        if now < self._next_attempt:
            return False
        try:
            done, epoch = await self._bounded(self._acquire)
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
        if not done:
            return False  # still trying (a slow database): the next tick looks again
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

    async def _bounded(self, call: Callable[[], _T]) -> tuple[bool, _T | None]:
        """Run ``call`` in a thread, waiting at most ``check_wait``: (finished, result).

        A call still running from an earlier tick is awaited (bounded) instead of starting
        another one beside it; its result is used when it is the same call."""
        if self._inflight is not None:
            previous, running = self._inflight
            if not running.done():
                await asyncio.wait({running}, timeout=self._check_wait)
                if not running.done():
                    return False, None
            self._inflight = None
            if previous == call:
                return True, running.result()
        future: asyncio.Future[Any] = asyncio.ensure_future(asyncio.to_thread(call))
        self._inflight = (call, future)
        await asyncio.wait({future}, timeout=self._check_wait)
        if not future.done():
            return False, None
        self._inflight = None
        return True, future.result()

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
        if release:
            # off the event loop: a release is a database round trip
            threading.Thread(
                target=self._release_quietly, name="leader-release", daemon=True
            ).start()
        self._next_attempt = self._monotonic() + self._backoff_initial
        self._changed(False, "lost")

    def _release_quietly(self) -> None:
        if not self._lock.acquire(timeout=self._check_wait):
            return
        try:
            self._port.release()
        except ReconcilerError as exc:
            log.info(
                f"release after loss failed: {type(exc).__name__}",
                extra={"event": "leadership.release_failed"},
            )
        finally:
            self._lock.release()

    def _changed(self, leading: bool, event: str) -> None:
        if self._metrics is not None:
            self._metrics.is_leader.set(1 if leading else 0)
            self._metrics.leadership_changes.labels(event).inc()
        if self._on_change is not None:
            self._on_change(leading)

    async def release(self, wait: float = RELEASE_WAIT) -> bool:
        """Give leadership up (shutdown), waiting at most ``wait`` s; safe when not leading.
        True when released (or nothing was held).

        The release runs in a daemon thread (the port's own statement timeout is short, but a
        database that does not answer at all holds a call on its socket, and a renewal stuck
        there holds the port's lock): past ``wait`` it is left behind with its connection
        (closing that would wait on the same database), and the lease is left to expire, at
        the time logged (``leadership.release_failed``). The session ends with the process,
        so a standby takes over as soon as the database answers again, or when the lease
        expires if that comes first."""
        self._closed = True
        epoch = self._epoch
        self._epoch = None
        expires = getattr(self._port, "lease_expires_at", None) if epoch is not None else None
        # a daemon thread: one stuck in a frozen database never holds the process's exit
        failure = await call_within(
            lambda: self._release_within(wait), name="leader-release", wait=wait
        )
        if epoch is not None:
            self._changed(False, "released")
        if failure is None:
            if epoch is not None:
                log.info(
                    f"leadership released (epoch {epoch})",
                    extra={"event": "leadership.released", "epoch": epoch},
                )
            return True
        why = type(failure).__name__
        if isinstance(failure, LeftBehindError):
            why = f"no answer within {wait:g}s"
        if epoch is None:  # a standby: a call of its own still waits on the database
            log.info(
                f"no leadership held; a leadership call still waits ({why}): left behind",
                extra={"event": "leadership.release_failed", "epoch": None},
            )
            return False
        lease = (
            "lease left to expire; a standby takes over then, or as soon as the database sees "
            "this process's session end"
        )
        if isinstance(expires, datetime):
            at = expires.astimezone(UTC).isoformat(timespec="seconds")
            if expires <= datetime.now(UTC):
                lease = (
                    f"lease expired at {at} (not renewed since the database stopped "
                    "answering); a standby takes over as soon as the database answers"
                )
            else:
                lease = f"lease left to expire at {at}; " + lease.split("; ", 1)[1]
        log.warning(
            f"leadership not released ({why}; epoch {epoch}): {lease}",
            extra={
                "event": "leadership.release_failed",
                "epoch": epoch,
                "lease_expires_at": expires.isoformat() if isinstance(expires, datetime) else None,
            },
        )
        return False

    def abandon(self, wait: float) -> str:
        """Stop leading now, from any thread, without the event loop (a forced stop): every
        mutation is refused from this call on (no round trip needed), then leadership is
        released within ``wait`` seconds (in a thread; a frozen database leaves it to the
        lease, which ends by itself). Returns a line for the log."""
        self._closed = True
        epoch, self._epoch = self._epoch, None
        if epoch is not None:
            self._changed(False, "released")
        done = threading.Event()
        failed: list[str] = []

        def release() -> None:
            try:
                self._release_within(wait)
            except (ReconcilerError, TimeoutError) as exc:
                failed.append(type(exc).__name__)
            except Exception as exc:  # the process is leaving: say it, never raise
                failed.append(type(exc).__name__)
            finally:
                done.set()

        threading.Thread(target=release, name="leader-abandon", daemon=True).start()
        lease = getattr(self._port, "lease_seconds", None)
        expiry = f" within {float(lease):.0f}s" if lease is not None else ""
        who = f"epoch {epoch}" if epoch is not None else "no epoch held"
        if not done.wait(wait) or failed:
            why = failed[0] if failed else f"no answer within {wait:.0f}s"
            return f"leadership not released ({who}; {why}): the lease expires by itself{expiry}"
        return f"leadership released ({who})"

    def _release_within(self, wait: float) -> None:
        if not self._lock.acquire(timeout=wait):
            raise TimeoutError("the leadership lock is held by a stuck call")
        try:
            self._port.release()
        finally:
            self._lock.release()
