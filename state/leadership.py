"""Daemon leadership (``reconciler.core.ports.LeadershipPort``), design §5.

- :class:`PostgresLeadership`: a lease in the ``leadership`` row with a renewal deadline
  (measured on the leader's monotonic clock), plus a session advisory lock on the epoch held
  on a dedicated connection, so a killed leader is replaced at once and a frozen one after
  the lease (see the class).
- :class:`FileLeadership`: for the embedded SQLite store, an exclusive ``fcntl.flock`` on a
  lock file (one host).

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

#: default lease of a PostgreSQL leader: renewed about every second, a frozen or partitioned
#: leader stops mutating by itself within this time and a standby takes over after it
DEFAULT_LEASE_SECONDS = 10.0
#: a leader stops mutating this long before its lease expires in the database
LEASE_MARGIN_SECONDS = 1.0


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

    def _epoch_key(self, epoch: int) -> int:
        return leader_epoch_key(self.fleet, epoch)

    def try_acquire(self) -> int | None:
        if self._connection is not None and self._epoch is not None and self.check():
            return self._epoch
        started = self._monotonic()
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
        return True

    def _lost(self) -> None:
        connection, self._connection, self._epoch = self._connection, None, None
        self._valid_until = 0.0
        if connection is not None:
            _close_quietly(connection)

    def release(self) -> None:
        connection, epoch = self._connection, self._epoch
        self._connection, self._epoch = None, None
        self._valid_until = 0.0
        if connection is None or epoch is None:
            return
        try:
            with connection.begin():
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
    """Leadership of ``fleet`` on one host: an exclusive ``flock`` on ``path``, plus an epoch
    bumped in the (SQLite) store at ``url``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        fleet: str,
        holder: str,
        *,
        url: str | None = None,
        environ: Mapping[str, str] = os.environ,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.path = Path(path)
        self.fleet = fleet
        self.holder = holder
        self._url = resolve_url(url, environ)
        self._clock = clock
        self._engine = make_engine(self._url, pool=False)
        self._fd: int | None = None
        self._epoch: int | None = None

    def __repr__(self) -> str:
        return f"FileLeadership({str(self.path)!r}, holder={self.holder!r}, epoch={self._epoch})"

    @property
    def epoch(self) -> int | None:
        return self._epoch

    def try_acquire(self) -> int | None:
        if self._fd is not None and self._epoch is not None and self.check():
            return self._epoch
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{self.holder}\n".encode())
            with self._engine.begin() as connection:
                epoch = claim_leadership(connection, self.fleet, self.holder, self._clock())
        except SQLAlchemyError as exc:
            _unlock(fd)
            raise convert_error(exc, f"taking the leadership of {self.fleet!r}", self._url) from exc
        except BaseException:
            _unlock(fd)
            raise
        self._fd = fd
        self._epoch = epoch
        return epoch

    def check(self) -> bool:
        fd = self._fd
        if fd is None:
            return False
        try:
            same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            same = False
        if not same:  # the lock file was removed or replaced: another process may lock it
            self._fd, self._epoch = None, None
            _unlock(fd)
        return same

    def release(self) -> None:
        fd, epoch = self._fd, self._epoch
        self._fd, self._epoch = None, None
        if fd is None:
            return
        try:
            if epoch is not None:
                with self._engine.begin() as connection:
                    release_leadership(connection, self.fleet, self.holder, epoch)
        except SQLAlchemyError:
            pass
        finally:
            _unlock(fd)

    def close(self) -> None:
        self.release()
        self._engine.dispose()


def leadership_for(
    url: str | None,
    fleet: str,
    holder: str,
    *,
    environ: Mapping[str, str] = os.environ,
    clock: Callable[[], datetime] = utc_now,
    lease_seconds: float = DEFAULT_LEASE_SECONDS,
) -> PostgresLeadership | FileLeadership:
    """PostgreSQL: advisory lock. SQLite: a file lock beside the database file
    (``<db>.<fleet>.leader.lock``)."""
    resolved = resolve_url(url, environ)
    text = resolved.render_as_string(hide_password=False)
    if resolved.get_backend_name() == "postgresql":
        return PostgresLeadership(text, fleet, holder, clock=clock, lease_seconds=lease_seconds)
    path = leader_lock_path(resolved, fleet)
    return FileLeadership(path, fleet, holder, url=text, environ=environ, clock=clock)


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
