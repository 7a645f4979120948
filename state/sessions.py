"""Connecting to the state database: URL resolution, engines, and Alembic migrations.

- The URL comes from the caller, else ``RECONCILER_DATABASE_URL``, else the embedded default
  ``sqlite:///.reconciler/state.db`` relative to the working directory (the directory is created).
- ``postgresql://`` is normalised to ``postgresql+psycopg://``.
- SQLite: WAL journal, foreign keys on, a busy timeout, and ``BEGIN IMMEDIATE`` transactions (one
  writer at a time, so a fencing check and the write it guards cannot interleave with another
  writer).
- Passwords never appear in messages: URLs are rendered with ``hide_password``.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from reconciler.core.errors import StoreError, StoreUnavailableError, UserError

if TYPE_CHECKING:  # Alembic is imported when a migration runs or a check needs it
    from alembic.config import Config

ENV_VAR = "RECONCILER_DATABASE_URL"
DEFAULT_URL = "sqlite:///.reconciler/state.db"
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000
UPGRADE_HINT = "run: reconcile db upgrade"


class SchemaOutOfDateError(UserError):
    """The database schema is not at the migrations' head."""


class BadDatabaseUrlError(UserError):
    """The database URL cannot be parsed or names an unsupported engine."""


def _create_private(path: Path) -> None:
    """Create the SQLite file readable by its owner only (0600) before SQLite creates it with
    the umask's mode; SQLite gives its journal and WAL files the database file's mode."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        return
    except OSError:
        return  # an unwritable place: SQLite reports it when it opens the file


def resolve_url(url: str | None = None, environ: Mapping[str, str] = os.environ) -> URL:
    """The database URL to use, normalised (see the module docstring)."""
    text = url or environ.get(ENV_VAR) or DEFAULT_URL
    try:
        parsed = make_url(text)
    except ArgumentError as exc:
        raise BadDatabaseUrlError(
            f"cannot parse the database URL given in {'--url' if url else ENV_VAR}",
            hint="expected sqlite:///path/to/state.db or postgresql+psycopg://user@host/db",
        ) from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
            parsed = parsed.set(drivername="postgresql+psycopg")
    elif backend == "sqlite":
        database = parsed.database
        if database and database != ":memory:" and not database.startswith("file:"):
            path = Path(database).expanduser()
            path.parent.mkdir(parents=True, exist_ok=True)
            _create_private(path)
    else:
        raise BadDatabaseUrlError(
            f"unsupported database engine {backend!r} in {render_url(parsed)}",
            hint="use sqlite:///path/to/state.db or postgresql+psycopg://user@host/db",
        )
    return parsed


def render_url(url: URL | str) -> str:
    """The URL as text with its password hidden (``***``)."""
    try:
        parsed = make_url(url) if isinstance(url, str) else url
    except ArgumentError:
        return "<unparseable URL>"
    return parsed.render_as_string(hide_password=True)


def is_embedded(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def _sqlite_on_connect(dbapi_connection: Any, _record: object) -> None:
    # Take transaction control away from pysqlite; the "begin" hook below emits BEGIN IMMEDIATE.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA synchronous = NORMAL")
    finally:
        cursor.close()


def _sqlite_on_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


#: PostgreSQL session limits (design §5): a partition or a frozen server is noticed in
#: seconds, never waited on for ever. ``connect_timeout`` bounds the whole connection set-up,
#: TCP keepalives and ``tcp_user_timeout`` a dead peer; the statement and lock timeouts are
#: enforced by the server.
CONNECT_TIMEOUT_SECONDS = 5
STATEMENT_TIMEOUT_MS = 30_000
LOCK_TIMEOUT_MS = 10_000
IDLE_IN_TRANSACTION_TIMEOUT_MS = 60_000
TCP_KEEPALIVE = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}


def postgres_options(statement_timeout_ms: int = STATEMENT_TIMEOUT_MS) -> str:
    """The libpq ``options`` that set the server-side timeouts of every session."""
    lock_ms = min(LOCK_TIMEOUT_MS, statement_timeout_ms)
    return (
        f"-c statement_timeout={statement_timeout_ms} -c lock_timeout={lock_ms} "
        f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_TIMEOUT_MS}"
    )


def make_engine(
    url: URL, *, pool: bool = True, statement_timeout_ms: int = STATEMENT_TIMEOUT_MS
) -> Engine:
    """An engine for ``url`` with the per-engine settings above."""
    if is_embedded(url):
        engine = sa.create_engine(url, poolclass=NullPool if not pool else None)
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    kwargs: dict[str, Any] = {
        "pool_pre_ping": True,
        "connect_args": {
            "connect_timeout": CONNECT_TIMEOUT_SECONDS,
            "options": postgres_options(statement_timeout_ms),
            **TCP_KEEPALIVE,
            "application_name": "fleet-reconciler",
            # no server-side prepared statements: generic plans made while a table has no
            # statistics yet can be very slow (and this keeps PgBouncer transaction mode safe)
            "prepare_threshold": None,
        },
    }
    if not pool:
        kwargs["poolclass"] = NullPool
    return sa.create_engine(url, **kwargs)


def unavailable(url: URL, exc: BaseException) -> StoreUnavailableError:
    """The error for an unreachable database, naming it without its password."""
    reason = describe_db_error(exc, url)
    return StoreUnavailableError(
        f"cannot reach the state database {render_url(url)}: {reason}",
        hint=(
            "check that the database is running and reachable, and the URL "
            f"(--url or {ENV_VAR}); the embedded default is {DEFAULT_URL}"
        ),
    )


def describe_db_error(exc: BaseException, url: URL | None = None) -> str:
    """A one-line reason for a database error, without SQL parameters or passwords."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip().splitlines()
    reason = text[0] if text else type(exc).__name__
    if url is not None and url.password:
        reason = reason.replace(str(url.password), "***")
    return reason


# --- leadership naming (shared by state.leadership and the writer lock) ----------------------


def advisory_key(fleet: str) -> int:
    """The 64-bit PostgreSQL advisory lock key of a fleet (stable across processes)."""
    digest = hashlib.blake2b(f"fleet-reconciler:leader:{fleet}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


def leader_epoch_key(fleet: str, epoch: int) -> int:
    """The advisory lock key a PostgreSQL leader holds for its epoch (state.leadership)."""
    return advisory_key(f"{fleet}\x00epoch\x00{epoch}")


def writer_epoch_key(name: str, epoch: int) -> int:
    """The advisory lock key a PostgreSQL writer-lock holder's session holds for its epoch
    (``state.store.SqlStore.acquire_lock``): its session gone, the lock is taken over."""
    return advisory_key(f"{name}\x00writer\x00{epoch}")


def leader_lock_path(url: URL, fleet: str) -> Path:
    """The lock file of a fleet's leadership beside an SQLite database file."""
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        base = Path(".reconciler") / "state.db"
    else:
        base = Path(database).expanduser()
    return base.with_name(f"{base.name}.{fleet}.leader.lock")


def file_lock_held(path: Path) -> bool:
    """Whether some process holds an exclusive ``flock`` on ``path`` right now."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


# --- Alembic -------------------------------------------------------------------------------


def alembic_config(connection: Connection | None = None) -> Config:
    """Programmatic Alembic configuration (no alembic.ini): the migrations live in the package
    and env.py uses the connection given here."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # pragma: no cover - the package always ships its migrations
        raise StoreError("the state migrations are missing from the installation")
    return head


@dataclass(frozen=True, slots=True)
class SchemaStatus:
    url: str  # rendered without password
    current: str | None
    head: str
    empty: bool  # no tables at all

    @property
    def is_head(self) -> bool:
        return self.current == self.head


@contextmanager
def _connected(url: URL) -> Iterator[Connection]:
    engine = make_engine(url, pool=False)
    try:
        try:
            connection = engine.connect()
        except SQLAlchemyError as exc:
            raise unavailable(url, exc) from exc
        with connection:
            yield connection
    finally:
        engine.dispose()


_REVISION = re.compile(r"^revision(?:\s*:\s*str)?\s*=\s*\"([^\"]+)\"\s*$", re.MULTILINE)
_DOWN_REVISION = re.compile(
    r"^down_revision(?:\s*:\s*str\s*\|\s*None)?\s*=\s*(None|\"[^\"]+\")\s*$", re.MULTILINE
)


@functools.cache
def declared_head() -> str | None:
    """The head revision as the migration files declare it (``revision = "..."``,
    ``down_revision = "..."``), read without importing Alembic; None when a file does not
    declare them plainly (a merge, a tuple) or the chain has not exactly one head: then the
    caller asks Alembic. A test pins it equal to :func:`head_revision`."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((MIGRATIONS_DIR / "versions").glob("[0-9]*.py")):
        text = path.read_text(encoding="utf-8")
        revision, down = _REVISION.findall(text), _DOWN_REVISION.findall(text)
        if len(revision) != 1 or len(down) != 1:
            return None
        revisions.add(revision[0])
        if down[0] != "None":
            parents.add(down[0].strip('"'))
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 and parents <= revisions else None


def _at_declared_head(connection: Connection) -> bool:
    """True when the database's ``alembic_version`` is exactly the declared head: the check
    every store opening makes, in one query and without Alembic (whose import and reading of
    every migration cost more than a whole no-op reconcile of a small fleet)."""
    head = declared_head()
    if head is None:
        return False
    try:
        rows = connection.execute(sa.text("SELECT version_num FROM alembic_version")).all()
    except SQLAlchemyError:
        connection.rollback()  # no such table yet: PostgreSQL aborted the transaction
        return False
    if connection.in_transaction():
        connection.commit()
    return [row[0] for row in rows] == [head]


def _status(connection: Connection, url: URL) -> SchemaStatus:
    from alembic.runtime.migration import MigrationContext

    context = MigrationContext.configure(connection)
    current = context.get_current_revision()
    tables = sa.inspect(connection).get_table_names()
    if connection.in_transaction():
        connection.commit()
    empty = not set(tables) - {"alembic_version"}
    return SchemaStatus(render_url(url), current, head_revision(), empty=empty)


def schema_status(url: str | None = None, environ: Mapping[str, str] = os.environ) -> SchemaStatus:
    """Which revision the database is at, and the head of the migrations."""
    resolved = resolve_url(url, environ)
    with _connected(resolved) as connection:
        try:
            return _status(connection, resolved)
        except SQLAlchemyError as exc:
            raise _classify(exc, resolved, "reading the schema revision") from exc


def upgrade(
    url: str | None = None, revision: str = "head", environ: Mapping[str, str] = os.environ
) -> SchemaStatus:
    """Apply the migrations up to ``revision``; returns the resulting status."""
    resolved = resolve_url(url, environ)
    with _connected(resolved) as connection:
        _run_alembic(connection, resolved, "upgrade", revision)
        return _status(connection, resolved)


def downgrade(
    url: str | None, revision: str, environ: Mapping[str, str] = os.environ
) -> SchemaStatus:
    """Revert the migrations down to ``revision`` (``base`` drops everything)."""
    resolved = resolve_url(url, environ)
    with _connected(resolved) as connection:
        _run_alembic(connection, resolved, "downgrade", revision)
        return _status(connection, resolved)


def _run_alembic(connection: Connection, url: URL, what: str, revision: str) -> None:
    from alembic import command
    from alembic.util.exc import CommandError

    config = alembic_config(connection)
    try:
        if what == "upgrade":
            command.upgrade(config, revision)
        else:
            command.downgrade(config, revision)
        if connection.in_transaction():
            connection.commit()
    except CommandError as exc:
        raise UserError(
            f"cannot {what} the state database {render_url(url)} to {revision!r}: {exc}",
            hint="`reconcile db current` shows the current revision; `head` is the latest, "
            "`base` the empty schema",
        ) from exc
    except SQLAlchemyError as exc:
        raise _classify(exc, url, f"{what} to {revision}") from exc


def _classify(exc: SQLAlchemyError, url: URL, doing: str) -> StoreError:
    if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.DisconnectionError):
        return unavailable(url, exc)
    return StoreError(f"state database {render_url(url)}: {doing}: {describe_db_error(exc, url)}")


def _holds_no_rows(connection: Connection) -> bool:
    """Whether no table but ``alembic_version`` holds a row: a database whose first upgrade
    was cut short (the first run killed while it migrated) has nothing to lose by finishing it."""
    tables = [t for t in sa.inspect(connection).get_table_names() if t != "alembic_version"]
    try:
        for name in tables:
            probe = sa.select(sa.literal(1)).select_from(sa.table(name)).limit(1)
            if connection.execute(probe).first() is not None:
                return False
    finally:
        if connection.in_transaction():
            connection.commit()
    return True


def ensure_schema(engine: Engine, url: URL, *, upgrade: bool | None) -> None:
    """Check (and maybe apply) the migrations before the store is used.

    ``upgrade=None``: an empty embedded SQLite database is upgraded by itself, and so is one
    whose tables hold no row (its first upgrade was cut short); anything else must already be
    at head. ``upgrade=True``: always upgrade. ``upgrade=False``: only check.
    """
    try:
        with engine.connect() as connection:
            if upgrade is not True and _at_declared_head(connection):
                return
            status = _status(connection, url)
            auto = (
                upgrade is None
                and is_embedded(url)
                and (status.empty or (not status.is_head and _holds_no_rows(connection)))
            )
            if not status.is_head and (upgrade or auto):
                _run_alembic(connection, url, "upgrade", "head")
                status = _status(connection, url)
    except SQLAlchemyError as exc:
        raise _classify(exc, url, "checking the schema") from exc
    if not status.is_head:
        where = "empty" if status.current is None else f"at revision {status.current}"
        raise SchemaOutOfDateError(
            f"the state database {status.url} is {where}; this version needs revision "
            f"{status.head}",
            hint=UPGRADE_HINT,
        )
