"""Daemon leadership (``reconciler.core.ports.LeadershipPort``), design §5.

- :class:`PostgresLeadership`: a session advisory lock (``pg_try_advisory_lock``) held on a
  dedicated connection. ``check()`` runs ``SELECT 1`` on that connection: if the connection is
  gone (server restart, ``pg_terminate_backend``, network), the advisory lock is gone too, so
  leadership is lost and ``check()`` answers False at once.
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
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection
from sqlalchemy.exc import SQLAlchemyError

from reconciler.core.errors import StoreError
from state.sessions import (
    advisory_key,
    leader_lock_path,
    make_engine,
    render_url,
    resolve_url,
)
from state.store import claim_leadership, convert_error, release_leadership, utc_now


class PostgresLeadership:
    """Leadership of ``fleet`` through a PostgreSQL session advisory lock.

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
    ) -> None:
        self._url: URL = resolve_url(url)
        if self._url.get_backend_name() != "postgresql":
            raise StoreError(f"PostgresLeadership needs a PostgreSQL URL, not {render_url(url)}")
        self.fleet = fleet
        self.holder = holder
        self.key = advisory_key(fleet)
        self._clock = clock
        self._engine = make_engine(self._url, pool=False)
        self._connection: Connection | None = None
        self._epoch: int | None = None

    def __repr__(self) -> str:
        return f"PostgresLeadership({self.fleet!r}, holder={self.holder!r}, epoch={self._epoch})"

    @property
    def epoch(self) -> int | None:
        """The epoch of the leadership held, or None."""
        return self._epoch

    def try_acquire(self) -> int | None:
        if self._connection is not None and self._epoch is not None and self.check():
            return self._epoch
        try:
            connection = self._engine.connect()
        except SQLAlchemyError as exc:
            raise convert_error(exc, "connecting for leadership", self._url) from exc
        try:
            with connection.begin():
                got = connection.execute(
                    sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}
                ).scalar_one()
            if not got:
                connection.close()
                return None
            with connection.begin():
                epoch = claim_leadership(connection, self.fleet, self.holder, self._clock())
        except SQLAlchemyError as exc:
            _close_quietly(connection)
            raise convert_error(exc, f"taking the leadership of {self.fleet!r}", self._url) from exc
        except BaseException:
            _close_quietly(connection)
            raise
        self._connection = connection
        self._epoch = epoch
        return epoch

    def check(self) -> bool:
        connection = self._connection
        if connection is None:
            return False
        try:
            with connection.begin():
                connection.execute(sa.text("SELECT 1")).scalar_one()
        except Exception:
            self._lost()
            return False
        return True

    def _lost(self) -> None:
        connection, self._connection, self._epoch = self._connection, None, None
        if connection is not None:
            _close_quietly(connection)

    def release(self) -> None:
        connection, epoch = self._connection, self._epoch
        self._connection, self._epoch = None, None
        if connection is None or epoch is None:
            return
        try:
            with connection.begin():
                release_leadership(connection, self.fleet, self.holder, epoch)
                connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
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
) -> PostgresLeadership | FileLeadership:
    """PostgreSQL: advisory lock. SQLite: a file lock beside the database file
    (``<db>.<fleet>.leader.lock``)."""
    resolved = resolve_url(url, environ)
    text = resolved.render_as_string(hide_password=False)
    if resolved.get_backend_name() == "postgresql":
        return PostgresLeadership(text, fleet, holder, clock=clock)
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
