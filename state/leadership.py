"""Daemon leadership (``reconciler.core.ports.LeadershipPort``), design §5.

- :class:`PostgresLeadership`: a lease in the ``leadership`` row with a renewal deadline
  (measured on the leader's monotonic clock), plus a session advisory lock on the epoch held
  on a dedicated connection, so a killed leader is replaced at once and a frozen one after
  the lease (see the class).
- :class:`FileLeadership`: for the embedded SQLite store (one host), the same lease in the
  ``leadership`` row, plus an exclusive ``fcntl.flock`` on a lock file for a killed leader
  (see the class).

Both bump the fleet's epoch in the ``leadership`` table when they take over and return it: it
is the fencing token the store checks on every write (``epoch=``), so a stale leader's writes
are refused even if it has not noticed yet that it lost leadership.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import SQLAlchemyError

from reconciler.core.errors import StoreError
from state import models as m
from state.sessions import (
    advisory_key,
    leader_epoch_key,
    leader_lock_path,
    make_engine,
    render_url,
    resolve_url,
)
from state.store import (
    claim_leadership,
    convert_error,
    ensure_epoch_rows,
    release_leadership,
    utc_now,
)

#: default lease of a leader: renewed about every second, a frozen or partitioned
#: leader stops mutating by itself within this time and a standby takes over after it
DEFAULT_LEASE_SECONDS = 10.0
#: a leader stops mutating this long before its lease expires in the database
LEASE_MARGIN_SECONDS = 1.0
#: statement and lock timeout of the release (a shutdown must not wait on a slow database;
#: one that does not answer at all is bounded by the caller, which leaves the lease to expire)
RELEASE_TIMEOUT_MS = 1000


class PostgresLeadership:
    """Leadership of ``fleet`` as a lease in the ``leadership`` row, plus a session advisory
    lock tied to the epoch on a dedicated connection.

    - ``try_acquire``: in one transaction (the row locked ``FOR UPDATE``), take the lease when
      it is free or expired by the *database's* clock, or when the current holder's session is
      gone (its epoch's advisory lock can be taken: the leader was killed or its session
      terminated, so there is no need to wait for the expiry); a new epoch is granted and its
      advisory lock taken in the same transaction.
    - ``check`` renews the lease (``UPDATE ... WHERE holder AND epoch``) on that connection;
      on success the leader may mutate until ``valid_until`` on its *own monotonic clock*:
      the renewal's start plus the lease minus a margin, which always ends before the expiry
      the database recorded (that one is counted from a later instant). A frozen leader
      (SIGSTOP) or one that cannot reach the database stops by itself when ``valid_until``
      passes, however long its connection stays open, and a standby takes over once the
      database's expiry passed.
    - The new epoch fences the old leader's store writes (``SqlStore`` checks ``epoch=``).

    ``try_acquire`` raises ``StoreUnavailableError`` when the database cannot be reached (the
    caller retries with backoff); ``check`` never raises.
    """

    def __init__(
        self,
        url: str,
        fleet: str,
        holder: str,
        *,
        clock: Callable[[], datetime] = utc_now,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._url: URL = resolve_url(url)
        if self._url.get_backend_name() != "postgresql":
            raise StoreError(f"PostgresLeadership needs a PostgreSQL URL, not {render_url(url)}")
        if lease_seconds < 2 * LEASE_MARGIN_SECONDS + 1:
            raise StoreError(f"the leadership lease must be at least 3 s, not {lease_seconds}")
        self.fleet = fleet
        self.holder = holder
        self.key = advisory_key(fleet)
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._monotonic = monotonic
        # statements on the lease connection must answer well within the lease
        statement_ms = int(min(5.0, lease_seconds / 3) * 1000)
        self._engine = make_engine(self._url, pool=False, statement_timeout_ms=statement_ms)
        self._connection: Connection | None = None
        self._epoch: int | None = None
        self._valid_until = 0.0
        self._expires_at: datetime | None = None

    def __repr__(self) -> str:
        return f"PostgresLeadership({self.fleet!r}, holder={self.holder!r}, epoch={self._epoch})"

    @property
    def epoch(self) -> int | None:
        """The epoch of the leadership held, or None."""
        return self._epoch

    @property
    def valid_until(self) -> float:
        """Monotonic time until which the lease held is certainly valid (0 when none)."""
        return self._valid_until if self._epoch is not None else 0.0

    @property
    def lease_expires_at(self) -> datetime | None:
        """About when the lease held expires in the database (this host's clock at the last
        renewal plus the lease), or None: what a shutdown that cannot release it logs."""
        return self._expires_at if self._epoch is not None else None

    def _epoch_key(self, epoch: int) -> int:
        return leader_epoch_key(self.fleet, epoch)

    def try_acquire(self) -> int | None:
        if self._connection is not None and self._epoch is not None and self.check():
            return self._epoch
        started = self._monotonic()
        started_at = self._clock()
        try:
            connection = self._engine.connect()
        except SQLAlchemyError as exc:
            raise convert_error(exc, "connecting for leadership", self._url) from exc
        try:
            with connection.begin():
                ensure_epoch_rows(connection, self.fleet)
                row = connection.execute(
                    sa.text(
                        "SELECT holder, epoch, lease_expires_at, now() AS db_now "
                        "FROM leadership WHERE name = :name FOR UPDATE"
                    ),
                    {"name": self.fleet},
                ).one()
                free = (
                    row.holder is None
                    or row.lease_expires_at is None
                    or row.lease_expires_at <= row.db_now
                )
                if not free and row.holder != self.holder:
                    # the holder's session holds its epoch's lock: gone means dead
                    free = self._session_gone(connection, int(row.epoch))
                if not free and row.holder == self.holder:
                    free = self._session_gone(connection, int(row.epoch))  # our old session
                if not free:
                    connection.rollback()
                    connection.close()
                    return None
                expires = row.db_now + timedelta(seconds=self.lease_seconds)
                epoch = claim_leadership(
                    connection, self.fleet, self.holder, row.db_now, lease_expires_at=expires
                )
                got = connection.execute(
                    sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self._epoch_key(epoch)}
                ).scalar_one()
                if not got:  # cannot happen while the row is locked; refuse to be unsure
                    raise StoreError("the new epoch's advisory lock is held by another session")
        except SQLAlchemyError as exc:
            _close_quietly(connection)
            raise convert_error(exc, f"taking the leadership of {self.fleet!r}", self._url) from exc
        except BaseException:
            _close_quietly(connection)
            raise
        self._connection = connection
        self._epoch = epoch
        self._valid_until = started + self.lease_seconds - LEASE_MARGIN_SECONDS
        self._expires_at = started_at + timedelta(seconds=self.lease_seconds)
        return epoch

    def _session_gone(self, connection: Connection, epoch: int) -> bool:
        key = self._epoch_key(epoch)
        got = connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
        if not got.scalar_one():
            return False
        connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
        return True

    def check(self) -> bool:
        """Renew the lease; False (and leadership dropped) when it cannot be renewed."""
        connection, epoch = self._connection, self._epoch
        if connection is None or epoch is None:
            return False
        started = self._monotonic()
        if started >= self._valid_until:
            self._lost()  # expired on our own clock: another daemon may lead already
            return False
        started_at = self._clock()
        try:
            with connection.begin():
                renewed = connection.execute(
                    sa.text(
                        "UPDATE leadership SET lease_expires_at = now() + make_interval("
                        "secs => :lease) WHERE name = :name AND holder = :holder "
                        "AND epoch = :epoch RETURNING epoch"
                    ),
                    {
                        "lease": self.lease_seconds,
                        "name": self.fleet,
                        "holder": self.holder,
                        "epoch": epoch,
                    },
                ).scalar_one_or_none()
        except Exception:
            self._lost()
            return False
        if renewed is None or self._epoch != epoch:
            self._lost()
            return False
        self._valid_until = started + self.lease_seconds - LEASE_MARGIN_SECONDS
        self._expires_at = started_at + timedelta(seconds=self.lease_seconds)
        return True

    def _lost(self) -> None:
        connection, self._connection, self._epoch = self._connection, None, None
        self._valid_until = 0.0
        if connection is not None:
            _close_quietly(connection)

    def release(self) -> None:
        """Clear the lease and unlock the epoch, with a short statement and lock timeout
        (``RELEASE_TIMEOUT_MS``). Against a database that does not answer at all this call
        waits on its socket: the caller bounds it (``LeaderGuard.release``) and leaves the
        call, and its connection, behind (closing it would wait on the same database); the
        lease expires by itself and the session ends with the process."""
        connection, epoch = self._connection, self._epoch
        self._connection, self._epoch = None, None
        self._valid_until = 0.0
        if connection is None or epoch is None:
            return
        try:
            with connection.begin():
                connection.execute(
                    sa.text(
                        "SELECT set_config('statement_timeout', :ms, true), "
                        "set_config('lock_timeout', :ms, true)"
                    ),
                    {"ms": str(RELEASE_TIMEOUT_MS)},
                )
                release_leadership(connection, self.fleet, self.holder, epoch)
                connection.execute(
                    sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self._epoch_key(epoch)}
                )
        except Exception:  # noqa: S110 - closing the session frees the advisory lock anyway
            pass
        finally:
            _close_quietly(connection)

    def close(self) -> None:
        """Release (if held) and free the engine."""
        self.release()
        self._engine.dispose()


class FileLeadership:
    """Leadership of ``fleet`` over an SQLite store (one host): a lease in the ``leadership``
    row with a renewal deadline, as :class:`PostgresLeadership`, plus an exclusive ``flock``
    on ``path`` that stands for the leader's process being alive (the advisory lock's part).

    - ``try_acquire``: in one ``BEGIN IMMEDIATE`` transaction (SQLite's single writer
      serialises every claim, and every fenced write), take the lease when it is free, expired
      by the host's clock (all daemons on one SQLite file share it), or when its holder is
      gone: the lock file could be locked and names the current epoch (the leader of that
      epoch held it while it led, and the kernel freed it when that process died or stepped
      down). A new epoch is granted; the lock file, when it was free, records it.
    - ``check`` renews the lease (``UPDATE ... WHERE holder AND epoch``); the leader may mutate
      until ``valid_until`` on its *own monotonic clock* (the renewal's start plus the lease
      minus a margin, before the expiry recorded). A frozen leader (SIGSTOP) stops by itself,
      and a standby takes over once the lease expired although the frozen one still holds the
      lock file; a leader that took over so takes the lock file at a later renewal. A renewal
      that finds the database busy (another writer) is not a loss while ``valid_until`` is
      ahead: the lease still holds, it is renewed at the next check.
    - The new epoch fences the old leader's store writes (``SqlStore`` checks ``epoch=``).
    - A lock file removed or replaced under a leader ends its leadership (it can no longer
      show that it is alive).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        fleet: str,
        holder: str,
        *,
        url: str | None = None,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], datetime] = utc_now,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if lease_seconds < 2 * LEASE_MARGIN_SECONDS + 1:
            raise StoreError(f"the leadership lease must be at least 3 s, not {lease_seconds}")
        self.path = Path(path)
        self.fleet = fleet
        self.holder = holder
        self.lease_seconds = lease_seconds
        self._url = resolve_url(url, environ)
        self._clock = clock
        self._monotonic = monotonic
        self._engine = make_engine(self._url, pool=False)
        # a claim or a renewal waits for another writer at most this long (not SQLite's 10 s)
        busy_ms = int(min(5.0, lease_seconds / 5) * 1000)
        sa.event.listen(
            self._engine,
            "connect",
            lambda dbapi, _record: dbapi.execute(f"PRAGMA busy_timeout = {busy_ms}"),
        )
        self._fd: int | None = None
        self._epoch: int | None = None
        self._valid_until = 0.0
        self._expires_at: datetime | None = None

    def __repr__(self) -> str:
        return f"FileLeadership({str(self.path)!r}, holder={self.holder!r}, epoch={self._epoch})"

    @property
    def epoch(self) -> int | None:
        return self._epoch

    @property
    def valid_until(self) -> float:
        """Monotonic time until which the lease held is certainly valid (0 when none)."""
        return self._valid_until if self._epoch is not None else 0.0

    @property
    def lease_expires_at(self) -> datetime | None:
        """When the lease held expires (as recorded at the last renewal), or None."""
        return self._expires_at if self._epoch is not None else None

    def try_acquire(self) -> int | None:
        if self._epoch is not None and self.check():
            return self._epoch
        started = self._monotonic()
        fd, recorded = self._lock_file()
        try:
            with self._engine.begin() as connection:
                ensure_epoch_rows(connection, self.fleet)
                row = connection.execute(
                    sa.select(m.Leadership).where(m.Leadership.name == self.fleet)
                ).one()
                now = self._clock()
                expires = row.lease_expires_at
                free = row.holder is None or (expires is not None and expires <= now)
                if not free and fd is not None:
                    # the lock file is free: its holder exited or stepped down; gone when it
                    # led the current epoch (or held leadership without a lease: an older
                    # version, which always held the lock file)
                    free = recorded == int(row.epoch) or expires is None
                if not free:
                    connection.rollback()
                    if fd is not None:
                        _unlock(fd)
                    return None
                expires_at = now + timedelta(seconds=self.lease_seconds)
                epoch = claim_leadership(
                    connection, self.fleet, self.holder, now, lease_expires_at=expires_at
                )
        except SQLAlchemyError as exc:
            if fd is not None:
                _unlock(fd)
            raise convert_error(exc, f"taking the leadership of {self.fleet!r}", self._url) from exc
        except BaseException:
            if fd is not None:
                _unlock(fd)
            raise
        if fd is not None:
            self._record(fd, epoch)
        self._fd = fd
        self._epoch = epoch
        self._valid_until = started + self.lease_seconds - LEASE_MARGIN_SECONDS
        self._expires_at = expires_at
        return epoch

    def _lock_file(self) -> tuple[int | None, int | None]:
        """The lock file locked (and the epoch it names), or (None, None) when another
        process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None, None
        except BaseException:
            os.close(fd)
            raise
        try:
            text = os.pread(fd, 256, 0).decode("utf-8", "replace").splitlines()
            recorded = int(text[1]) if len(text) > 1 else None
        except (OSError, ValueError):
            recorded = None
        return fd, recorded

    def _record(self, fd: int, epoch: int) -> None:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{self.holder}\n{epoch}\n".encode(), 0)

    def _same_file(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    def check(self) -> bool:
        """Renew the lease; False (and leadership dropped) when it cannot be renewed."""
        epoch = self._epoch
        if epoch is None:
            return False
        started = self._monotonic()
        if started >= self._valid_until:
            self._lost()  # expired on our own clock: another daemon may lead already
            return False
        if self._fd is not None and not self._same_file(self._fd):
            self._lost()  # the lock file was removed or replaced
            return False
        expires_at = self._clock() + timedelta(seconds=self.lease_seconds)
        try:
            with self._engine.begin() as connection:
                renewed = connection.execute(
                    sa.update(m.Leadership)
                    .where(
                        m.Leadership.name == self.fleet,
                        m.Leadership.holder == self.holder,
                        m.Leadership.epoch == epoch,
                    )
                    .values(lease_expires_at=expires_at)
                ).rowcount
        except SQLAlchemyError as exc:
            if _busy(exc) and self._monotonic() < self._valid_until:
                return True  # not renewed this time, and the lease still holds
            self._lost()
            return False
        if renewed != 1 or self._epoch != epoch:
            self._lost()
            return False
        self._valid_until = started + self.lease_seconds - LEASE_MARGIN_SECONDS
        self._expires_at = expires_at
        if self._fd is None:
            # took over from a frozen leader: show we are alive once that one let go
            fd, _ = self._lock_file()
            if fd is not None:
                self._record(fd, epoch)
                self._fd = fd
        return True

    def _lost(self) -> None:
        fd, self._fd, self._epoch = self._fd, None, None
        self._valid_until = 0.0
        if fd is not None:
            _unlock(fd)

    def release(self) -> None:
        fd, epoch = self._fd, self._epoch
        self._fd, self._epoch = None, None
        self._valid_until = 0.0
        try:
            if epoch is not None:
                with self._engine.begin() as connection:
                    release_leadership(connection, self.fleet, self.holder, epoch)
        except SQLAlchemyError:
            pass
        finally:
            if fd is not None:
                _unlock(fd)

    def close(self) -> None:
        self.release()
        self._engine.dispose()


def _busy(exc: SQLAlchemyError) -> bool:
    """SQLite's answer when another writer held the database past the busy timeout."""
    return "is locked" in str(getattr(exc, "orig", exc))


def leadership_for(
    url: str | None,
    fleet: str,
    holder: str,
    *,
    environ: Mapping[str, str] = os.environ,
    clock: Callable[[], datetime] = utc_now,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> PostgresLeadership | FileLeadership:
    """PostgreSQL: a lease plus an advisory lock. SQLite: a lease plus a file lock beside the
    database file (``<db>.<fleet>.leader.lock``)."""
    resolved = resolve_url(url, environ)
    text = resolved.render_as_string(hide_password=False)
    if resolved.get_backend_name() == "postgresql":
        return PostgresLeadership(text, fleet, holder, clock=clock, lease_seconds=lease_seconds)
    path = leader_lock_path(resolved, fleet)
    return FileLeadership(
        path, fleet, holder, url=text, environ=environ, clock=clock, lease_seconds=lease_seconds
    )


def _close_quietly(connection: Connection) -> None:
    """Close a connection that may already be broken (its session, and lock, end with it)."""
    with contextlib.suppress(Exception):
        connection.invalidate()
    with contextlib.suppress(Exception):
        connection.close()


def _unlock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
