"""``SqlStore``: the state store port (``reconciler.core.ports.StorePort``) on SQLAlchemy 2.

Works on SQLite (embedded default) and PostgreSQL. Rules kept here:

- Rows never leave this package: every method returns ``reconciler.core.fleet`` value types or
  plain data.
- Writes that belong together are one transaction (``begin_intent`` writes the intent and the
  node together; a failure anywhere rolls back both).
- Fencing: a method given ``epoch=`` refuses (``LeadershipLostError``) when a newer epoch was
  granted for the fleet, either by the daemon leadership or by the writer lock; the check runs
  in the transaction of the write, holding a share lock on the epoch rows (PostgreSQL) or the
  database write lock (SQLite, ``BEGIN IMMEDIATE``).
- Library errors are translated at the edge: connection problems become
  ``StoreUnavailableError``, the rest ``StoreError``; messages carry no password.
- A ``None`` field of a ``RecordedNode`` never erases a recorded value on upsert (service id,
  IP, hostname, pool, cost, warmup start, observed generation); protection is only ever
  lowered by ``set_protected``.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import json
import os
import re
import socket
import threading
import uuid
from collections import defaultdict, namedtuple
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from urllib.parse import urlsplit

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.exc import SQLAlchemyError

from reconciler.core.billing import CostPeriod, Finding
from reconciler.core.errors import (
    LeadershipLostError,
    LockHeldError,
    ReconcilerError,
    StoreError,
    StoreUnavailableError,
    UserError,
)
from reconciler.core.fleet import (
    CostConstant,
    HoldKind,
    HostKey,
    IntentStatus,
    IpStatus,
    Maintenance,
    MarksDelta,
    NodeMark,
    NodeMetrics,
    NodeStatus,
    PausedBy,
    RecordedFleet,
    RecordedIntent,
    RecordedNode,
    StepState,
    StepStatus,
    peak_count,
)
from reconciler.core.ports import Lease, LockHolder, RunRecord
from state import models as m
from state.sessions import (
    ENV_VAR,
    describe_db_error,
    ensure_schema,
    file_lock_held,
    leader_epoch_key,
    leader_lock_path,
    make_engine,
    render_url,
    resolve_url,
    writer_epoch_key,
)

#: heartbeats kept per node (ring of slots overwritten in place)
DEFAULT_METRICS_WINDOW = 20
#: the per-IP monthly price used when neither the caller nor finance's table gives one
DEFAULT_IP_MONTHLY_PRICE = Decimal("4.99")
IP_PRICE_KEY = "ip_monthly_price"
#: statements carry at most this many names / rows at once (SQLite's variable limit)
CHUNK = 500
MAX_ERROR_TEXT = 4000

_T = TypeVar("_T")
_MONEY_QUANTUM = Decimal("0.0001")
_SCOPE_RE = re.compile(r"^(global|(pool|plan|contract):[^\s:][^\s]*)$")
_SECRET_WORDS = frozenset(
    {"password", "passwd", "pwd", "configkey", "api", "apikey", "token", "secret", "secrets"}
)
_SECRET_FRAGMENTS = (
    "password",
    "passwd",
    "configkey",
    "apikey",
    "token",
    "secret",
    "credential",
    "privatekey",
)


class InvalidRecordError(StoreError):
    """A value handed to the store is malformed (naive datetime, bad IP, bad scope...)."""


class SecretInParamsError(InvalidRecordError):
    """Intent parameters must never carry secrets: the journal is an audit trail in clear."""


class UnknownNodeError(UserError):
    """No open record of that node."""


def utc_now() -> datetime:
    return datetime.now(UTC)


def _aware(value: datetime, what: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise InvalidRecordError(f"{what} must be a timezone-aware datetime, got {value!r}")
    return value.astimezone(UTC)


def _maybe_aware(value: datetime | None, what: str) -> datetime | None:
    return None if value is None else _aware(value, what)


def _money(value: Decimal | None, what: str) -> Decimal | None:
    """Validate an amount for a Numeric(12, 4) column: exact, at most 4 decimals."""
    if value is None:
        return None
    if not isinstance(value, Decimal):
        raise InvalidRecordError(f"{what} must be a Decimal (money is never a float)")
    try:
        quantized = value.quantize(_MONEY_QUANTUM)
    except InvalidOperation as exc:
        raise InvalidRecordError(f"{what} is not a finite amount: {value}") from exc
    if quantized != value or abs(quantized) >= Decimal(10) ** 8:
        raise InvalidRecordError(
            f"{what} {value} does not fit the store (at most 8 digits and 4 decimals)"
        )
    return quantized


def _money_out(value: Decimal | None) -> Decimal | None:
    """Amounts as read back: 4.9900 -> 4.99 (same value, friendlier text)."""
    if value is None:
        return None
    cents = value.quantize(Decimal("0.01"))
    return cents if cents == value else value.normalize()


def _money_text(value: Decimal | None) -> str:
    out = _money_out(value)
    return "" if out is None else str(out)


def normalise_ip(value: str, what: str = "ip_address") -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError as exc:
        raise InvalidRecordError(f"{what}: {value!r} is not an IP address") from exc


def check_params(params: Mapping[str, str]) -> dict[str, str]:
    """Intent parameters as stored: str -> str, and no key that names a secret."""
    clean: dict[str, str] = {}
    for key, value in params.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise InvalidRecordError(
                f"intent parameters must map text to text; {key!r} maps to {type(value).__name__}"
            )
        words = {w.lower() for w in re.findall(r"[A-Za-z][a-z]*|[A-Z]+(?![a-z])|\d+", key)}
        squashed = re.sub(r"[^a-z0-9]", "", key.lower())
        if words & _SECRET_WORDS or any(f in squashed for f in _SECRET_FRAGMENTS):
            raise SecretInParamsError(
                f"intent parameter {key!r} looks like a secret; the journal never stores secrets",
                hint="leave credentials out of intent params (they are recorded in clear)",
            )
        clean[key] = value
    return clean


def _chunks(items: Sequence[_T], size: int = CHUNK) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --- epochs (fencing tokens), shared with state.leadership ---------------------------------


def _upsert_stmt(connection: Connection, model: type[m.Base]) -> Any:
    """``INSERT`` with ``ON CONFLICT`` support for the connection's dialect."""
    if connection.dialect.name == "postgresql":
        return postgresql.insert(model)
    return sqlite.insert(model)


def _insert_for(dialect: str, model: type[m.Base]) -> Any:
    return postgresql.insert(model) if dialect == "postgresql" else sqlite.insert(model)


@functools.cache
def _node_upsert(dialect: str) -> Any:
    """The nodes' ``INSERT ... ON CONFLICT DO UPDATE`` (built once per dialect: building it
    costs more than running it, and it is the store's most frequent write)."""
    table = m.SendingNode
    stmt = _insert_for(dialect, table)
    excluded = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[table.fleet, table.name],
        index_where=table.closed_at.is_(None),
        set_={
            "provider_id": sa.func.coalesce(excluded.provider_id, table.provider_id),
            "ip_address": sa.func.coalesce(excluded.ip_address, table.ip_address),
            "hostname": sa.func.coalesce(excluded.hostname, table.hostname),
            "region": excluded.region,
            "plan": excluded.plan,
            "pool": sa.func.coalesce(excluded.pool, table.pool),
            "status": excluded.status,
            "reputation_score": excluded.reputation_score,
            "current_load": excluded.current_load,
            "approximate_cost": sa.func.coalesce(excluded.approximate_cost, table.approximate_cost),
            "protected": sa.or_(table.protected, excluded.protected),
            "rdns_done": excluded.rdns_done,
            "warmup_started_at": sa.func.coalesce(
                excluded.warmup_started_at, table.warmup_started_at
            ),
            "observed_generation": sa.func.coalesce(
                excluded.observed_generation, table.observed_generation
            ),
            "updated_at": excluded.updated_at,
            "last_heartbeat": sa.func.coalesce(table.last_heartbeat, excluded.last_heartbeat),
            "status_changed_at": sa.case(
                (table.status != excluded.status, excluded.status_changed_at),
                else_=table.status_changed_at,
            ),
            # a record written without step state keeps the recorded one
            "steps": sa.func.coalesce(excluded.steps, table.steps),
            # provisioning facts: a record written without them keeps the recorded
            # ones (clearing is an operator's act: clear_quarantine); maintenance is
            # never written here (set_maintenance only)
            "host_key": sa.func.coalesce(excluded.host_key, table.host_key),
            "bundle_version": sa.func.coalesce(excluded.bundle_version, table.bundle_version),
            "agent_url": sa.func.coalesce(excluded.agent_url, table.agent_url),
            "quarantine": sa.func.coalesce(excluded.quarantine, table.quarantine),
            # who holds the node out of rotation goes with the status it writes
            "paused_by": excluded.paused_by,
        },
    ).returning(table.id, table.fleet, table.name, table.ip_address, table.pool)


@functools.cache
def _vps_upsert(dialect: str) -> Any:
    """The VPS rows' upsert that follows every node upsert (built once per dialect)."""
    vps = m.VpsInstance
    stmt = _insert_for(dialect, vps)
    return stmt.on_conflict_do_update(
        index_elements=[vps.node_id],
        set_={
            "provider_id": sa.func.coalesce(stmt.excluded.provider_id, vps.provider_id),
            "plan": stmt.excluded.plan,
            "approximate_cost": sa.func.coalesce(
                stmt.excluded.approximate_cost, vps.approximate_cost
            ),
            "updated_at": stmt.excluded.updated_at,
        },
    )


@functools.cache
def _ip_upsert(dialect: str) -> Any:
    """The IP rows' upsert that follows a node upsert with an IP (built once per dialect)."""
    ips = m.SmtpIpAddress
    stmt = _insert_for(dialect, ips)
    new = stmt.excluded
    return stmt.on_conflict_do_update(
        index_elements=[ips.node_id, ips.ip_address],
        set_={
            "pool": sa.func.coalesce(new.pool, ips.pool),
            # statuses only move forward along assigned -> warming -> warmed here;
            # degraded / burned / quarantined are set by set_ip_status
            "status": sa.case(
                (
                    sa.and_(
                        new.status == IpStatus.WARMED.value,
                        sa.or_(
                            ips.status == IpStatus.ASSIGNED.value,
                            ips.status == IpStatus.WARMING.value,
                        ),
                    ),
                    new.status,
                ),
                (
                    sa.and_(
                        new.status == IpStatus.WARMING.value,
                        ips.status == IpStatus.ASSIGNED.value,
                    ),
                    new.status,
                ),
                (ips.released_at.is_not(None), new.status),
                else_=ips.status,
            ),
            "approximate_cost": sa.func.coalesce(new.approximate_cost, ips.approximate_cost),
            "released_at": None,
            "updated_at": new.updated_at,
        },
    )


# the other statements of the write paths, built once (SQLAlchemy's construction and cache
# key of a statement built per call cost more CPU than SQLite's work: ~8 statements per node
# written, several node writes per provisioned node)


@functools.cache
def _intent_insert() -> Any:
    return sa.insert(m.Intent).returning(m.Intent.id)


@functools.cache
def _intent_locked() -> Any:
    return sa.select(m.Intent).where(m.Intent.id == sa.bindparam("b_id")).with_for_update()


@functools.cache
def _intent_finish() -> Any:
    return (
        sa.update(m.Intent)
        .where(m.Intent.id == sa.bindparam("b_id"))
        .values(
            status=sa.bindparam("b_status"),
            error=sa.bindparam("b_error"),
            updated_at=sa.bindparam("b_at", type_=m.UtcDateTime()),
        )
    )


@functools.cache
def _claims_query() -> Any:
    """Open nodes holding any of the service ids ``b_ids``."""
    node = m.SendingNode
    return sa.select(node.fleet, node.name, node.provider_id).where(
        node.provider_id.in_(sa.bindparam("b_ids", expanding=True)), node.closed_at.is_(None)
    )


@functools.cache
def _ip_prices_query() -> Any:
    return sa.select(m.CostConstant.scope, m.CostConstant.value).where(
        m.CostConstant.key == IP_PRICE_KEY
    )


@functools.cache
def _ip_release() -> Any:
    """A node's open IP rows other than ``b_ip`` released at ``b_at``."""
    ips = m.SmtpIpAddress
    return (
        sa.update(ips)
        .where(
            ips.node_id == sa.bindparam("b_node", type_=sa.Uuid()),
            ips.ip_address != sa.bindparam("b_ip"),
            ips.released_at.is_(None),
        )
        .values(
            released_at=sa.bindparam("b_at", type_=m.UtcDateTime()),
            updated_at=sa.bindparam("b_at", type_=m.UtcDateTime()),
        )
    )


@functools.cache
def _period_inputs_query() -> Any:
    """What ``_sync_cost_periods`` compares, in one read: each node of ``b_ids`` with the cost
    of its open IP row and its open cost period (outer joins: either may be missing)."""
    node = m.SendingNode
    ips = m.SmtpIpAddress
    period = m.NodeCostPeriod
    return (
        sa.select(
            node.id,
            node.fleet,
            node.name,
            node.provider_id,
            node.region,
            node.pool,
            node.plan,
            node.approximate_cost,
            node.closed_at,
            ips.approximate_cost.label("ip_cost"),
            period.id.label("period_id"),
            period.monthly_cost.label("period_cost"),
            period.plan.label("period_plan"),
            period.pool.label("period_pool"),
            period.provider_id.label("period_provider_id"),
            period.started_at.label("period_start"),
        )
        .outerjoin(ips, sa.and_(ips.node_id == node.id, ips.released_at.is_(None)))
        .outerjoin(period, sa.and_(period.node_id == node.id, period.ended_at.is_(None)))
        .where(node.id.in_(sa.bindparam("b_ids", expanding=True)))
    )


@functools.cache
def _period_end() -> Any:
    return (
        sa.update(m.NodeCostPeriod)
        .where(m.NodeCostPeriod.id == sa.bindparam("b_id"))
        .values(ended_at=sa.bindparam("b_end", type_=m.UtcDateTime()))
    )


@functools.cache
def _period_insert() -> Any:
    return sa.insert(m.NodeCostPeriod)


def ensure_epoch_rows(connection: Connection, name: str) -> None:
    for model in (m.Leadership, m.WriterLock):
        connection.execute(
            _upsert_stmt(connection, model).values(name=name, epoch=0).on_conflict_do_nothing()
        )


def _end_session(connection: Connection) -> None:
    """End a kept session for good (invalidated, not returned to the pool, so that its
    advisory locks end with it), quietly: it may be broken already."""
    with contextlib.suppress(Exception):
        connection.invalidate()
    with contextlib.suppress(Exception):
        connection.close()


def holder_is_dead(owner: str) -> bool:
    """True when the lock's holder (``host:pid``, as the CLI names itself) ran on this host and
    its process is gone. A holder on another host, or one this process may not signal, is
    taken as alive (its lease still runs out by itself)."""
    host, _, pid_text = owner.rpartition(":")
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    pid = int(pid_text)
    if pid <= 0 or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False
    return False


def current_epoch(connection: Connection, name: str, *, lock: str | None = None) -> int:
    """The newest epoch granted for ``name`` (leadership or writer lock), 0 if none.

    ``lock="share"`` holds a key-share lock on both rows until the transaction ends: a
    concurrent grant (``lock="update"``, ``FOR UPDATE``) waits for it, but a lease renewal (an
    ``UPDATE`` of the lease column only, ``FOR NO KEY UPDATE``) does not, so a long fenced write
    (a reputation save of every node on a loaded database) never makes its own leader miss a
    renewal. ``lock="update"`` takes an exclusive one. Rows are always visited leadership
    first, then locks, so concurrent callers cannot deadlock.
    """
    epoch = 0
    for query in _epoch_queries(lock):
        value = connection.execute(query, {"b_name": name}).scalar_one_or_none()
        if value is not None:
            epoch = max(epoch, int(value))
    return epoch


@functools.cache
def _epoch_queries(lock: str | None) -> tuple[Any, ...]:
    """``current_epoch``'s two reads, built once per lock mode (every fenced write runs them:
    building a statement costs more than running it on SQLite)."""
    queries = []
    for model in (m.Leadership, m.WriterLock):
        query = sa.select(model.epoch).where(model.name == sa.bindparam("b_name"))
        if lock == "share":
            query = query.with_for_update(read=True, key_share=True)
        elif lock == "update":
            query = query.with_for_update()
        queries.append(query)
    return tuple(queries)


def claim_leadership(
    connection: Connection,
    name: str,
    holder: str,
    now: datetime,
    *,
    lease_expires_at: datetime | None = None,
) -> int:
    """Record ``holder`` as the leader of ``name`` with a new epoch (fencing token), newer than
    any epoch granted so far for that name; returns it. Call inside a transaction, after the
    leadership itself (advisory or file lock) was taken."""
    ensure_epoch_rows(connection, name)
    epoch = current_epoch(connection, name, lock="update") + 1
    connection.execute(
        sa.update(m.Leadership)
        .where(m.Leadership.name == name)
        .values(holder=holder, epoch=epoch, acquired_at=now, lease_expires_at=lease_expires_at)
    )
    return epoch


def release_leadership(connection: Connection, name: str, holder: str, epoch: int) -> None:
    """Clear the holder (the epoch stays: it only ever grows)."""
    connection.execute(
        sa.update(m.Leadership)
        .where(
            m.Leadership.name == name, m.Leadership.holder == holder, m.Leadership.epoch == epoch
        )
        .values(holder=None, lease_expires_at=None)
    )


#: SQLSTATEs after which a whole transaction may simply be run again
_RETRYABLE_SQLSTATES = frozenset({"40001", "40P01"})  # serialization failure, deadlock
_UNIQUE_VIOLATION = "23505"
HEARTBEAT_ATTEMPTS = 3
UPSERT_ATTEMPTS = 3


def _is_retryable(exc: BaseException | None, *, unique_too: bool = False) -> bool:
    orig = getattr(exc, "orig", None)
    state = getattr(orig, "sqlstate", None)
    return state in _RETRYABLE_SQLSTATES or (unique_too and state == _UNIQUE_VIOLATION)


def _retrying(attempts: int, work: Callable[[], _T], *, unique_too: bool = False) -> _T:
    """Run ``work`` (one whole transaction) again after a deadlock or serialization failure
    (and, with ``unique_too``, a unique violation: PostgreSQL's ``INSERT ... ON CONFLICT``
    arbitrates only one index, so a concurrent insert of the same node can trip another
    unique index; run again, the statement sees the committed row and updates it)."""
    for attempt in range(1, attempts + 1):
        try:
            return work()
        except StoreError as exc:
            # the transaction was rolled back whole, so doing it again is safe
            if attempt == attempts or not _is_retryable(exc.__cause__, unique_too=unique_too):
                raise
    raise AssertionError("unreachable")  # pragma: no cover


def convert_error(exc: SQLAlchemyError, doing: str, url: URL | None = None) -> StoreError:
    """Translate a SQLAlchemy / driver error into the project's error tree."""
    reason = describe_db_error(exc, url)
    where = f" ({render_url(url)})" if url is not None else ""
    invalidated = getattr(exc, "connection_invalidated", False)
    if invalidated or isinstance(
        exc, sa.exc.OperationalError | sa.exc.InterfaceError | sa.exc.DisconnectionError
    ):
        return StoreUnavailableError(
            f"state store unavailable{where} while {doing}: {reason}",
            hint=f"check that the database is running and reachable ({ENV_VAR})",
        )
    return StoreError(f"state store failed{where} while {doing}: {reason}")


# --- the store -----------------------------------------------------------------------------


class SqlStore:
    """The state store on one SQLAlchemy engine. Build it with :func:`open_store`."""

    def __init__(
        self,
        engine: Engine,
        *,
        url: URL | None = None,
        metrics_window: int = DEFAULT_METRICS_WINDOW,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        if not 1 <= metrics_window <= 10_000:
            raise InvalidRecordError("metrics_window must be between 1 and 10000")
        self._engine = engine
        self._url = url if url is not None else engine.url
        self._window = metrics_window
        self._clock = clock
        #: PostgreSQL: per writer lock held, (epoch, the session holding its advisory lock)
        self._writer_sessions: dict[str, tuple[int, Connection]] = {}
        self._sessions_guard = threading.Lock()

    # --- plumbing ------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        return self._engine

    @property
    def url(self) -> str:
        """The database URL, password hidden."""
        return render_url(self._url)

    @property
    def metrics_window(self) -> int:
        return self._window

    def __repr__(self) -> str:
        return f"SqlStore({self.url})"

    def _now(self) -> datetime:
        return _aware(self._clock(), "clock")

    @contextmanager
    def _tx(self, doing: str) -> Iterator[Connection]:
        """One transaction; library errors translated, ours passed through (after rollback)."""
        try:
            with self._engine.begin() as connection:
                yield connection
        except ReconcilerError:
            raise
        except SQLAlchemyError as exc:
            raise convert_error(exc, doing, self._url) from exc

    def _fence(self, connection: Connection, fleet: str, epoch: int | None) -> None:
        if epoch is None:
            return
        current = current_epoch(connection, fleet, lock="share")
        if epoch < current:
            raise LeadershipLostError(
                f"fenced: epoch {epoch} is older than epoch {current} of fleet {fleet!r}; "
                "another writer took over, this process must stop mutating",
                hint="only the current leader / lock holder may write",
            )

    def close(self) -> None:
        for name in list(self._writer_sessions):
            self._drop_writer_session(name)
        self._engine.dispose()

    # --- reading -------------------------------------------------------------------------

    def load_fleet(self, fleet: str) -> RecordedFleet:
        """Open nodes, pending intents and cost constants: three queries."""
        with self._tx(f"loading fleet {fleet!r}") as connection:
            nodes = _open_nodes(connection, fleet)
            intent_rows = connection.execute(
                sa.select(m.Intent)
                .where(m.Intent.fleet == fleet, m.Intent.status == IntentStatus.PENDING.value)
                .order_by(m.Intent.id)
            ).all()
            cost_rows = connection.execute(
                sa.select(m.CostConstant).order_by(m.CostConstant.key, m.CostConstant.scope)
            ).all()
        return RecordedFleet(
            fleet=fleet,
            nodes=nodes,
            pending_intents=tuple(_intent_out(row) for row in intent_rows),
            cost_overrides=tuple(_cost_out(row) for row in cost_rows),
            protected_names=frozenset(n.name for n in nodes if n.protected),
        )

    def pending_intents(self, fleet: str) -> tuple[RecordedIntent, ...]:
        with self._tx(f"reading the pending intents of {fleet!r}") as connection:
            rows = connection.execute(
                sa.select(m.Intent)
                .where(m.Intent.fleet == fleet, m.Intent.status == IntentStatus.PENDING.value)
                .order_by(m.Intent.id)
            ).all()
        return tuple(_intent_out(row) for row in rows)

    def peak_fleet_size(self, fleet: str, since: datetime) -> int:
        """The most node records open at once since ``since``: one query over the records
        still open or closed within the window (the mass-delete guard's recent size)."""
        since = _aware(since, "since")
        with self._tx(f"reading the node history of {fleet!r}") as connection:
            rows = connection.execute(
                sa.select(m.SendingNode.created_at, m.SendingNode.closed_at).where(
                    m.SendingNode.fleet == fleet,
                    sa.or_(m.SendingNode.closed_at.is_(None), m.SendingNode.closed_at >= since),
                )
            ).all()
        return peak_count(
            (
                (_aware(opened, "created_at"), _maybe_aware(closed, "closed_at"))
                for opened, closed in rows
            ),
            since,
        )

    def journal(self, fleet: str, limit: int = 100) -> list[RecordedIntent]:
        with self._tx(f"reading the journal of {fleet!r}") as connection:
            rows = connection.execute(
                sa.select(m.Intent)
                .where(m.Intent.fleet == fleet)
                .order_by(m.Intent.id.desc())
                .limit(max(0, limit))
            ).all()
        return [_intent_out(row) for row in rows]

    def get_node(self, fleet: str, name: str) -> RecordedNode | None:
        """The open record of one node, if any."""
        with self._tx(f"reading node {name!r}") as connection:
            row = connection.execute(
                sa.select(m.SendingNode).where(
                    m.SendingNode.fleet == fleet,
                    m.SendingNode.name == name,
                    m.SendingNode.closed_at.is_(None),
                )
            ).one_or_none()
        return None if row is None else _node_out(row)

    # --- the create protocol and the journal ---------------------------------------------

    def begin_intent(
        self,
        fleet: str,
        kind: str,
        target: str,
        params: Mapping[str, str],
        *,
        epoch: int | None = None,
        node: RecordedNode | None = None,
        done: bool = False,
    ) -> RecordedIntent:
        clean = check_params(params)
        status = IntentStatus.DONE if done else IntentStatus.PENDING
        if node is not None and node.fleet != fleet:
            raise InvalidRecordError(f"node {node.name!r} belongs to fleet {node.fleet!r}")
        now = self._now()
        with self._tx(f"writing the {kind} intent for {target!r}") as connection:
            self._fence(connection, fleet, epoch)
            intent_id = connection.execute(
                _intent_insert(),
                {
                    "fleet": fleet,
                    "kind": kind,
                    "target": target,
                    "params": clean,
                    "status": status.value,
                    "attempts": 1,
                    "epoch": epoch,
                    "created_at": now,
                    "updated_at": now,
                },
            ).scalar_one()
            if node is not None:
                self._upsert(connection, [node], now)
        return RecordedIntent(
            id=int(intent_id),
            fleet=fleet,
            kind=kind,
            target=target,
            params=clean,
            status=status,
            attempts=1,
            created_at=now,
            updated_at=now,
            epoch=epoch,
        )

    def _locked_intent(self, connection: Connection, intent_id: int) -> Any:
        row = connection.execute(_intent_locked(), {"b_id": intent_id}).one_or_none()
        if row is None:
            raise StoreError(f"no intent with id {intent_id} in the journal")
        return row

    def finish_intent(
        self,
        intent_id: int,
        status: IntentStatus,
        *,
        error: str | None = None,
        node: RecordedNode | None = None,
        epoch: int | None = None,
    ) -> None:
        status = IntentStatus(status)
        if status is IntentStatus.PENDING:
            raise InvalidRecordError("finish_intent takes done or failed, not pending")
        now = self._now()
        with self._tx(f"finishing intent {intent_id}") as connection:
            row = self._locked_intent(connection, intent_id)
            self._fence(connection, row.fleet, epoch)
            if node is not None and node.fleet != row.fleet:
                raise InvalidRecordError(f"node {node.name!r} belongs to fleet {node.fleet!r}")
            connection.execute(
                _intent_finish(),
                {
                    "b_id": intent_id,
                    "b_status": status.value,
                    "b_error": error[:MAX_ERROR_TEXT] if error else None,
                    "b_at": now,
                },
            )
            if node is not None:
                self._upsert(connection, [node], now)

    def retry_intent(self, intent_id: int, *, epoch: int | None = None) -> RecordedIntent:
        now = self._now()
        with self._tx(f"retrying intent {intent_id}") as connection:
            row = self._locked_intent(connection, intent_id)
            self._fence(connection, row.fleet, epoch)
            if row.status != IntentStatus.PENDING.value:
                raise StoreError(f"intent {intent_id} is {row.status}, only a pending one retries")
            values: dict[str, Any] = {"attempts": m.Intent.attempts + 1, "updated_at": now}
            if epoch is not None:
                values["epoch"] = epoch
            connection.execute(sa.update(m.Intent).where(m.Intent.id == intent_id).values(values))
            fresh = connection.execute(sa.select(m.Intent).where(m.Intent.id == intent_id)).one()
        return _intent_out(fresh)

    # --- nodes ---------------------------------------------------------------------------

    def upsert_node(self, node: RecordedNode, *, epoch: int | None = None) -> None:
        self.upsert_nodes([node], epoch=epoch)

    def upsert_nodes(self, nodes: Sequence[RecordedNode], *, epoch: int | None = None) -> None:
        if not nodes:
            return
        now = self._now()

        def once() -> None:
            with self._tx(f"recording {len(nodes)} node(s)") as connection:
                for fleet in sorted({n.fleet for n in nodes}):
                    self._fence(connection, fleet, epoch)
                self._upsert(connection, nodes, now)

        _retrying(UPSERT_ATTEMPTS, once, unique_too=True)

    def _upsert(self, connection: Connection, nodes: Sequence[RecordedNode], now: datetime) -> None:
        """Insert or update nodes by (fleet, name) among open records, and keep their VPS and
        IP rows consistent, in the caller's transaction. Concurrent upserts of one node keep
        one row (``INSERT ... ON CONFLICT`` on the partial unique index)."""
        latest: dict[tuple[str, str], RecordedNode] = {}
        for node in nodes:
            latest[(node.fleet, node.name)] = node
        batch = list(latest.values())
        params = [_node_params(node, now) for node in batch]
        self._check_service_ids(connection, batch)

        stmt = _node_upsert(connection.dialect.name)
        returned = {}
        for chunk in _chunks(params):
            for row in connection.execute(stmt, list(chunk)):
                returned[(row.fleet, row.name)] = row
        self._record_costs(connection, batch, returned, now)
        self._sync_cost_periods(connection, [row.id for row in returned.values()], now)

    def _check_service_ids(self, connection: Connection, batch: Sequence[RecordedNode]) -> None:
        claims = {n.service_id: n for n in batch if n.service_id is not None}
        if len(claims) != sum(1 for n in batch if n.service_id is not None):
            raise InvalidRecordError("two nodes in one batch carry the same service id")
        ids = sorted(claims)
        for chunk in _chunks(ids):
            rows = connection.execute(_claims_query(), {"b_ids": list(chunk)}).all()
            for row in rows:
                node = claims[row.provider_id]
                if (row.fleet, row.name) != (node.fleet, node.name):
                    raise StoreError(
                        f"service id {row.provider_id} is already recorded for node "
                        f"{row.name!r} (fleet {row.fleet!r}); cannot record it for {node.name!r}"
                    )

    def _ip_prices(self, connection: Connection) -> dict[str, Decimal]:
        rows = connection.execute(_ip_prices_query()).all()
        return {row.scope: Decimal(row.value) for row in rows}

    def _record_costs(
        self,
        connection: Connection,
        batch: Sequence[RecordedNode],
        returned: Mapping[tuple[str, str], Any],
        now: datetime,
    ) -> None:
        """vps_instances / smtp_ip_addresses follow the node rows, in the same transaction."""
        prices: dict[str, Decimal] | None = None
        vps_rows: list[dict[str, Any]] = []
        ip_rows: list[dict[str, Any]] = []
        releases: list[dict[str, Any]] = []
        for node in batch:
            row = returned[(node.fleet, node.name)]
            total = _money(node.approximate_cost, f"{node.name}: approximate_cost")
            ip = row.ip_address
            ip_cost: Decimal | None = None
            vps_cost = total
            if ip is not None and total is not None:
                ip_cost = _money(node.ip_cost, f"{node.name}: ip_cost")
                if ip_cost is None:
                    if prices is None:
                        prices = self._ip_prices(connection)
                    ip_cost = prices.get(
                        f"pool:{row.pool}", prices.get("global", DEFAULT_IP_MONTHLY_PRICE)
                    )
                ip_cost = min(ip_cost, total)
                vps_cost = total - ip_cost
            vps_rows.append(
                {
                    "id": uuid.uuid4(),
                    "node_id": row.id,
                    "provider_id": node.service_id,
                    "plan": node.plan,
                    "approximate_cost": vps_cost,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            if ip is not None:
                releases.append({"b_node": row.id, "b_ip": ip, "b_at": now})
                ip_rows.append(
                    {
                        "id": uuid.uuid4(),
                        "node_id": row.id,
                        "ip_address": ip,
                        "pool": node.pool,
                        "status": _ip_status_for(node.status).value,
                        "approximate_cost": ip_cost,
                        "assigned_at": now,
                        "released_at": None,
                        "updated_at": now,
                    }
                )
        stmt = _vps_upsert(connection.dialect.name)
        for chunk in _chunks(vps_rows):
            connection.execute(stmt, list(chunk))
        if not ip_rows:
            return
        release = _ip_release()
        for chunk in _chunks(releases):
            connection.execute(release, list(chunk))
        stmt = _ip_upsert(connection.dialect.name)
        for chunk in _chunks(ip_rows):
            connection.execute(stmt, list(chunk))

    def refresh_costs(
        self,
        fleet: str,
        costs: Mapping[str, tuple[Decimal, Decimal]],
        *,
        epoch: int | None = None,
    ) -> list[str]:
        """Bring the recorded monthly costs of open nodes to ``costs`` (name -> (total, IP
        part)): ``sending_nodes``, ``vps_instances`` (total - IP part) and the open
        ``smtp_ip_addresses`` rows. Only rows that differ are written (one read, then one
        update per changed node); returns the names of the nodes changed, sorted."""
        now = self._now()
        wanted = {
            name: (
                _money(total, f"{name}: approximate_cost"),
                _money(ip, f"{name}: ip cost"),
            )
            for name, (total, ip) in costs.items()
        }
        with self._tx(f"refreshing the recorded costs of {fleet!r}") as connection:
            self._fence(connection, fleet, epoch)
            rows = connection.execute(
                sa.select(
                    m.SendingNode.id,
                    m.SendingNode.name,
                    m.SendingNode.approximate_cost,
                    m.VpsInstance.approximate_cost.label("vps_cost"),
                    m.SmtpIpAddress.approximate_cost.label("ip_cost"),
                    m.SmtpIpAddress.id.label("ip_id"),
                )
                .outerjoin(m.VpsInstance, m.VpsInstance.node_id == m.SendingNode.id)
                .outerjoin(
                    m.SmtpIpAddress,
                    sa.and_(
                        m.SmtpIpAddress.node_id == m.SendingNode.id,
                        m.SmtpIpAddress.released_at.is_(None),
                    ),
                )
                .where(m.SendingNode.fleet == fleet, m.SendingNode.closed_at.is_(None))
            ).all()
            changed: set[str] = set()
            node_rows: list[dict[str, Any]] = []
            vps_rows: list[dict[str, Any]] = []
            ip_rows: list[dict[str, Any]] = []
            for row in rows:
                target = wanted.get(row.name)
                if target is None:
                    continue
                total, ip = target
                assert total is not None
                assert ip is not None
                has_ip = row.ip_id is not None
                vps = total - ip if has_ip else total
                if row.approximate_cost != total:
                    node_rows.append({"b_id": row.id, "b_cost": total})
                    changed.add(row.name)
                if row.vps_cost != vps:
                    vps_rows.append({"b_id": row.id, "b_cost": vps})
                    changed.add(row.name)
                if has_ip and row.ip_cost != ip:
                    ip_rows.append({"b_id": row.ip_id, "b_cost": ip})
                    changed.add(row.name)
            # one executemany per table (a constant change rewrites every node)
            for table, key, params in (
                (m.SendingNode, m.SendingNode.id, node_rows),
                (m.VpsInstance, m.VpsInstance.node_id, vps_rows),
                (m.SmtpIpAddress, m.SmtpIpAddress.id, ip_rows),
            ):
                if not params:
                    continue
                stmt = (
                    sa.update(table)
                    .where(key == sa.bindparam("b_id", type_=sa.Uuid()))
                    .values(
                        approximate_cost=sa.bindparam("b_cost", type_=m.Money),
                        updated_at=now,
                    )
                )
                for chunk in _chunks(params):
                    connection.execute(stmt, list(chunk))
            ids = [row.id for row in rows if row.name in changed]
            self._sync_cost_periods(connection, ids, now)
        return sorted(changed)

    # --- cost history (node_cost_periods, invoice_findings) -----------------------------------

    def _sync_cost_periods(
        self, connection: Connection, node_ids: Sequence[uuid.UUID], now: datetime
    ) -> None:
        """Keep each node's open cost period in line with its record, in the caller's
        transaction: a billed node (service id and cost recorded) has one open period at its
        cost, plan and pool; a change ends it and opens the next; closing the node ends it (at
        ``closed_at``)."""
        if not node_ids:
            return
        ids = list(dict.fromkeys(node_ids))
        nodes: dict[uuid.UUID, Any] = {}
        periods: dict[uuid.UUID, Any] = {}
        # one read: each node with its open IP row and its open period (built once)
        for chunk in _chunks(ids):
            for row in connection.execute(_period_inputs_query(), {"b_ids": list(chunk)}):
                nodes[row.id] = row
                if row.period_id is not None:
                    periods[row.id] = row
        ends: list[dict[str, Any]] = []
        opens: list[dict[str, Any]] = []
        for node_id in ids:
            node = nodes.get(node_id)
            if node is None:
                continue
            open_period = periods.get(node_id)
            billed = node.provider_id is not None and node.approximate_cost is not None
            if open_period is not None:
                same = billed and (
                    open_period.period_cost == node.approximate_cost
                    and open_period.period_plan == node.plan
                    and open_period.period_pool == node.pool
                    and open_period.period_provider_id == node.provider_id
                    and node.closed_at is None
                )
                if same:
                    continue
                ended = node.closed_at if node.closed_at is not None else now
                ends.append(
                    {"b_id": open_period.period_id, "b_end": max(ended, open_period.period_start)}
                )
            if billed and node.closed_at is None:
                opens.append(
                    {
                        "fleet": node.fleet,
                        "node_id": node_id,
                        "node": node.name,
                        "provider_id": node.provider_id,
                        "region": node.region,
                        "pool": node.pool,
                        "plan": node.plan,
                        "monthly_cost": node.approximate_cost,
                        "ip_cost": node.ip_cost,
                        "started_at": now,
                        "ended_at": None,
                    }
                )
        for part in _chunks(ends):
            connection.execute(_period_end(), list(part))
        for part in _chunks(opens):
            connection.execute(_period_insert(), list(part))

    def cost_periods(self, fleet: str, since: datetime) -> list[CostPeriod]:
        """The fleet's cost periods still running at ``since`` or later (oldest first)."""
        since = _aware(since, "since")
        with self._tx(f"reading the cost history of {fleet!r}") as connection:
            rows = connection.execute(
                sa.select(m.NodeCostPeriod)
                .where(
                    m.NodeCostPeriod.fleet == fleet,
                    sa.or_(m.NodeCostPeriod.ended_at.is_(None), m.NodeCostPeriod.ended_at > since),
                )
                .order_by(m.NodeCostPeriod.started_at, m.NodeCostPeriod.id)
            ).all()
        return [
            CostPeriod(
                node=row.node,
                service_id=row.provider_id,
                region=row.region,
                pool=row.pool,
                plan=row.plan,
                monthly_cost=_money_out(Decimal(row.monthly_cost)) or Decimal(0),
                started_at=row.started_at,
                ended_at=row.ended_at,
            )
            for row in rows
        ]

    def record_invoice_findings(self, run_id: int, findings: Sequence[Finding]) -> None:
        """Keep an invoice check's findings with its run (``reconcile_runs``)."""
        with self._tx("recording invoice findings") as connection:
            rows = [
                {
                    "run_id": run_id,
                    "kind": f.kind,
                    "month": f.month,
                    "service_id": f.service_id,
                    "node": f.node,
                    "invoiced": _money(f.invoiced, "invoiced"),
                    "expected": _money(f.expected, "expected"),
                    "detail": f.detail[:MAX_ERROR_TEXT],
                }
                for f in findings
            ]
            for chunk in _chunks(rows):
                connection.execute(sa.insert(m.InvoiceFinding), list(chunk))

    def invoice_findings(self, run_id: int) -> list[Finding]:
        with self._tx("reading invoice findings") as connection:
            rows = connection.execute(
                sa.select(m.InvoiceFinding)
                .where(m.InvoiceFinding.run_id == run_id)
                .order_by(m.InvoiceFinding.id)
            ).all()
        return [
            Finding(
                kind=row.kind,
                month=row.month,
                service_id=row.service_id,
                node=row.node,
                invoiced=_money_out(row.invoiced),
                expected=_money_out(row.expected),
                detail=row.detail,
            )
            for row in rows
        ]

    def close_node(self, fleet: str, name: str, at: datetime, *, epoch: int | None = None) -> None:
        """Decommission: status decommissioned, ``closed_at`` set, IPs released. The record stays
        for audit and leaves ``load_fleet``. Closing an already closed node does nothing."""
        at = _aware(at, "at")
        now = self._now()
        with self._tx(f"closing node {name!r}") as connection:
            self._fence(connection, fleet, epoch)
            node_id = connection.execute(
                sa.update(m.SendingNode)
                .where(
                    m.SendingNode.fleet == fleet,
                    m.SendingNode.name == name,
                    m.SendingNode.closed_at.is_(None),
                )
                .values(
                    status=NodeStatus.DECOMMISSIONED.value,
                    closed_at=at,
                    status_changed_at=at,
                    updated_at=now,
                )
                .returning(m.SendingNode.id)
            ).scalar_one_or_none()
            if node_id is not None:
                connection.execute(
                    sa.update(m.SmtpIpAddress)
                    .where(
                        m.SmtpIpAddress.node_id == node_id, m.SmtpIpAddress.released_at.is_(None)
                    )
                    .values(released_at=at, updated_at=now)
                )
                self._sync_cost_periods(connection, [node_id], now)

    def set_protected(self, fleet: str, name: str, protected: bool) -> None:
        now = self._now()
        with self._tx(f"protecting node {name!r}") as connection:
            found = connection.execute(
                sa.update(m.SendingNode)
                .where(
                    m.SendingNode.fleet == fleet,
                    m.SendingNode.name == name,
                    m.SendingNode.closed_at.is_(None),
                )
                .values(protected=protected, updated_at=now)
                .returning(m.SendingNode.id)
            ).scalar_one_or_none()
            if found is None:
                raise UnknownNodeError(
                    f"no recorded node {name!r} in fleet {fleet!r}",
                    hint="`reconcile status` lists the recorded nodes",
                )

    def set_maintenance(
        self, fleet: str, name: str, maintenance: Maintenance | None
    ) -> RecordedNode:
        now = self._now()
        values: dict[str, Any] = {
            "maintenance_reason": maintenance.reason[:MAX_ERROR_TEXT] if maintenance else None,
            "maintenance_by": maintenance.by[:100] if maintenance else None,
            "maintenance_since": _maybe_aware(maintenance.since, "since") if maintenance else None,
            "maintenance_ended_at": _maybe_aware(maintenance.ended_at, "ended_at")
            if maintenance
            else None,
            "maintenance_kind": maintenance.kind.value
            if maintenance and maintenance.kind is not HoldKind.MAINTENANCE
            else None,
            "updated_at": now,
        }
        return self._update_node(fleet, name, values, "recording maintenance of")

    def retry_steps(self, fleet: str, name: str) -> tuple[RecordedNode, tuple[str, ...]]:
        """An operator's ``reconcile node retry``: forget the node's failed pipeline steps
        (their attempt counts) in one transaction, so the next reconcile tries them again.
        Returns the node and the steps forgotten."""
        with self._tx(f"retrying the failed steps of node {name!r}") as connection:
            row = connection.execute(
                sa.select(m.SendingNode)
                .where(
                    m.SendingNode.fleet == fleet,
                    m.SendingNode.name == name,
                    m.SendingNode.closed_at.is_(None),
                )
                .with_for_update()
            ).one_or_none()
            if row is None:
                raise UnknownNodeError(
                    f"no recorded node {name!r} in fleet {fleet!r}",
                    hint="`reconcile node list` lists the recorded nodes",
                )
            steps = dict(row.steps) if isinstance(row.steps, dict) else {}
            failed = tuple(
                sorted(
                    step
                    for step, entry in steps.items()
                    if not isinstance(entry, dict) or entry.get("status") != "done"
                )
            )
            if failed:
                kept = {k: v for k, v in steps.items() if k not in failed}
                connection.execute(
                    sa.update(m.SendingNode)
                    .where(m.SendingNode.id == row.id)
                    .values(steps=kept or None, updated_at=self._now())
                )
        node = self.get_node(fleet, name)
        assert node is not None
        return node, failed

    def clear_quarantine(self, fleet: str, name: str, *, repin: bool = False) -> RecordedNode:
        # a failed slot (provisioning.replacements used up) gets a fresh set of replacements
        values: dict[str, Any] = {"quarantine": None, "slot_failures": 0, "updated_at": self._now()}
        if repin:
            values["host_key"] = None
        return self._update_node(fleet, name, values, "releasing")

    def _update_node(
        self, fleet: str, name: str, values: dict[str, Any], what: str
    ) -> RecordedNode:
        with self._tx(f"{what} node {name!r}") as connection:
            found = connection.execute(
                sa.update(m.SendingNode)
                .where(
                    m.SendingNode.fleet == fleet,
                    m.SendingNode.name == name,
                    m.SendingNode.closed_at.is_(None),
                )
                .values(**values)
                .returning(m.SendingNode.id)
            ).scalar_one_or_none()
            if found is None:
                raise UnknownNodeError(
                    f"no recorded node {name!r} in fleet {fleet!r}",
                    hint="`reconcile status` lists the recorded nodes",
                )
            row = connection.execute(
                sa.select(m.SendingNode).where(m.SendingNode.id == found)
            ).one()
        return _node_out(row)

    def set_ip_status(
        self,
        ip_address: str,
        status: IpStatus,
        *,
        reputation_state: str | None = None,
    ) -> int:
        """Set the status (and reputation state: good, fair, poor, critical) of an assigned IP;
        returns the number of rows changed."""
        ip = normalise_ip(ip_address)
        status = IpStatus(status)
        values: dict[str, Any] = {"status": status.value, "updated_at": self._now()}
        if reputation_state is not None:
            if reputation_state not in m.REPUTATION_STATES:
                raise InvalidRecordError(
                    f"reputation state {reputation_state!r} is not one of "
                    f"{', '.join(m.REPUTATION_STATES)}"
                )
            values["reputation_state"] = reputation_state
        with self._tx(f"setting the status of {ip}") as connection:
            result = connection.execute(
                sa.update(m.SmtpIpAddress)
                .where(m.SmtpIpAddress.ip_address == ip, m.SmtpIpAddress.released_at.is_(None))
                .values(values)
            )
        return int(result.rowcount)

    def ip_addresses(self, fleet: str) -> list[dict[str, str]]:
        """The assigned IPs of a fleet's open nodes, with status, reputation and monthly cost."""
        with self._tx(f"reading the IPs of {fleet!r}") as connection:
            rows = connection.execute(
                sa.select(m.SendingNode.name, m.SmtpIpAddress)
                .join(m.SendingNode, m.SendingNode.id == m.SmtpIpAddress.node_id)
                .where(
                    m.SendingNode.fleet == fleet,
                    m.SendingNode.closed_at.is_(None),
                    m.SmtpIpAddress.released_at.is_(None),
                )
                .order_by(m.SendingNode.name)
            ).all()
        return [
            {
                "node": row.name,
                "ip_address": row.ip_address,
                "pool": row.pool or "",
                "status": row.status,
                "reputation_state": row.reputation_state,
                "approximate_cost": _money_text(row.approximate_cost),
            }
            for row in rows
        ]

    def vps_costs(self, fleet: str) -> dict[str, Decimal]:
        """Per open node, the VPS part of its monthly cost (as recorded on vps_instances)."""
        with self._tx(f"reading the VPS costs of {fleet!r}") as connection:
            rows = connection.execute(
                sa.select(m.SendingNode.name, m.VpsInstance.approximate_cost)
                .join(m.VpsInstance, m.VpsInstance.node_id == m.SendingNode.id)
                .where(m.SendingNode.fleet == fleet, m.SendingNode.closed_at.is_(None))
            ).all()
        return {
            row.name: _money_out(row.approximate_cost) or Decimal(0)
            for row in rows
            if row.approximate_cost is not None
        }

    # --- blocklists ----------------------------------------------------------------------

    def record_listing(
        self,
        fleet: str,
        ip_address: str,
        zone: str,
        listed_at: datetime,
        *,
        node: str | None = None,
        details: str | None = None,
    ) -> int:
        """An IP found on a blocklist zone; an open listing of the same (ip, zone) is kept (no
        duplicate). Returns the event id."""
        ip = normalise_ip(ip_address)
        listed_at = _aware(listed_at, "listed_at")
        with self._tx(f"recording the listing of {ip} on {zone}") as connection:
            existing = connection.execute(
                sa.select(m.IpBlocklistEvent.id).where(
                    m.IpBlocklistEvent.ip_address == ip,
                    m.IpBlocklistEvent.zone == zone,
                    m.IpBlocklistEvent.delisted_at.is_(None),
                )
            ).scalar_one_or_none()
            if existing is not None:
                return int(existing)
            node_id = None
            if node is not None:
                node_id = connection.execute(
                    sa.select(m.SendingNode.id).where(
                        m.SendingNode.fleet == fleet,
                        m.SendingNode.name == node,
                        m.SendingNode.closed_at.is_(None),
                    )
                ).scalar_one_or_none()
            event_id = connection.execute(
                sa.insert(m.IpBlocklistEvent)
                .values(
                    node_id=node_id,
                    ip_address=ip,
                    zone=zone,
                    listed_at=listed_at,
                    details=details,
                )
                .returning(m.IpBlocklistEvent.id)
            ).scalar_one()
        return int(event_id)

    def record_delisting(self, ip_address: str, zone: str, delisted_at: datetime) -> int:
        """Close the open listing(s) of (ip, zone); returns how many were closed."""
        ip = normalise_ip(ip_address)
        delisted_at = _aware(delisted_at, "delisted_at")
        with self._tx(f"recording the delisting of {ip} from {zone}") as connection:
            result = connection.execute(
                sa.update(m.IpBlocklistEvent)
                .where(
                    m.IpBlocklistEvent.ip_address == ip,
                    m.IpBlocklistEvent.zone == zone,
                    m.IpBlocklistEvent.delisted_at.is_(None),
                )
                .values(delisted_at=delisted_at)
            )
        return int(result.rowcount)

    def open_listings(self, fleet: str | None = None) -> list[dict[str, str]]:
        """Listings not yet delisted (of one fleet's nodes when ``fleet`` is given)."""
        query = (
            sa.select(m.IpBlocklistEvent, m.SendingNode.name.label("node"))
            .outerjoin(m.SendingNode, m.SendingNode.id == m.IpBlocklistEvent.node_id)
            .where(m.IpBlocklistEvent.delisted_at.is_(None))
            .order_by(m.IpBlocklistEvent.listed_at)
        )
        if fleet is not None:
            query = query.where(m.SendingNode.fleet == fleet)
        with self._tx("reading blocklist listings") as connection:
            rows = connection.execute(query).all()
        return [
            {
                "id": str(row.id),
                "node": row.node or "",
                "ip_address": row.ip_address,
                "zone": row.zone,
                "listed_at": row.listed_at.isoformat(),
                "details": row.details or "",
            }
            for row in rows
        ]

    # --- runs ----------------------------------------------------------------------------

    def start_run(self, run: RunRecord) -> int:
        started = _aware(run.started_at, "started_at")
        finished = _maybe_aware(run.finished_at, "finished_at")
        with self._tx(f"recording a {run.mode} run of {run.fleet!r}") as connection:
            run_id = connection.execute(
                sa.insert(m.ReconcileRun)
                .values(
                    fleet=run.fleet,
                    started_at=started,
                    finished_at=finished,
                    spec_hash=run.spec_hash,
                    mode=run.mode,
                    summary={str(k): str(v) for k, v in run.summary.items()},
                    outcome=run.outcome,
                    error=run.error[:MAX_ERROR_TEXT] if run.error else None,
                    duration_seconds=(finished - started).total_seconds() if finished else None,
                )
                .returning(m.ReconcileRun.id)
            ).scalar_one()
        return int(run_id)

    def finish_run(
        self, run_id: int, outcome: str, finished_at: datetime, error: str | None = None
    ) -> None:
        finished_at = _aware(finished_at, "finished_at")
        with self._tx(f"finishing run {run_id}") as connection:
            started = connection.execute(
                sa.select(m.ReconcileRun.started_at).where(m.ReconcileRun.id == run_id)
            ).scalar_one_or_none()
            if started is None:
                raise StoreError(f"no reconcile run with id {run_id}")
            connection.execute(
                sa.update(m.ReconcileRun)
                .where(m.ReconcileRun.id == run_id)
                .values(
                    outcome=outcome,
                    finished_at=finished_at,
                    error=error[:MAX_ERROR_TEXT] if error else None,
                    duration_seconds=(finished_at - started).total_seconds(),
                )
            )

    def recent_runs(self, fleet: str, limit: int = 20) -> list[RunRecord]:
        """The latest runs of a fleet, newest first."""
        with self._tx(f"reading the runs of {fleet!r}") as connection:
            rows = connection.execute(
                sa.select(m.ReconcileRun)
                .where(m.ReconcileRun.fleet == fleet)
                .order_by(m.ReconcileRun.started_at.desc(), m.ReconcileRun.id.desc())
                .limit(max(0, limit))
            ).all()
        return [
            RunRecord(
                fleet=row.fleet,
                started_at=row.started_at,
                spec_hash=row.spec_hash,
                mode=row.mode,
                summary=dict(row.summary or {}),
                outcome=row.outcome,
                finished_at=row.finished_at,
                error=row.error,
            )
            for row in rows
        ]

    # --- one writer ----------------------------------------------------------------------

    def acquire_lock(self, name: str, owner: str, ttl_seconds: float, now: datetime) -> Lease:
        """Take the writer lock ``name`` (name it after the fleet so its epoch fences that
        fleet's writes). Held by another owner and unexpired: ``LockHeldError``. Expired (or
        free): taken with a new epoch. Held by the same owner: renewed, same epoch."""
        now = _aware(now, "now")
        if ttl_seconds <= 0:
            raise InvalidRecordError("ttl_seconds must be positive")
        expires = now + timedelta(seconds=ttl_seconds)
        with self._tx(f"taking the writer lock {name!r}") as connection:
            ensure_epoch_rows(connection, name)
            newest = current_epoch(connection, name, lock="update")
            row = connection.execute(sa.select(m.WriterLock).where(m.WriterLock.name == name)).one()
            self._refuse_if_a_daemon_leads(connection, name, owner)
            held = row.owner is not None and row.expires_at is not None and row.expires_at > now
            if held and row.owner != owner and self._holder_gone(connection, name, row):
                held = False  # its process or its session is gone: taken over at once
            if held and row.owner != owner:
                raise LockHeldError(
                    f"another run holds the writer lock {name!r}: {row.owner} (epoch "
                    f"{row.epoch}), until {row.expires_at:%Y-%m-%d %H:%M:%S} UTC",
                    hint="wait for that run to finish; a crashed holder's lock expires by "
                    f"itself at {row.expires_at:%H:%M:%S} UTC (or, once you know it is gone, "
                    "break it with `reconcile unlock`)",
                )
            # the same owner renewing keeps its epoch, even past the expiry, as long as no
            # other writer was granted a newer one meanwhile (a late renewal under load must
            # not fence the renewing process itself)
            mine = row.owner == owner and row.epoch == newest
            epoch = row.epoch if (held or mine) and row.epoch == newest else newest + 1
            connection.execute(
                sa.update(m.WriterLock)
                .where(m.WriterLock.name == name)
                .values(
                    owner=owner,
                    epoch=epoch,
                    acquired_at=row.acquired_at if held or mine else now,
                    expires_at=expires,
                )
            )
            # PostgreSQL: this process's session holds the epoch's advisory lock before the
            # grant commits, so no one ever sees the grant without a live session behind it
            session = self._hold_writer_session(connection, name, int(epoch))
        if session is not None:
            self._keep_writer_session(name, int(epoch), session)
        return Lease(name=name, owner=owner, epoch=int(epoch), expires_at=expires)

    def _holder_gone(self, connection: Connection, name: str, row: Any) -> bool:
        """Whether the writer lock's holder is known to be gone: its process ran on this host
        and is gone, or (PostgreSQL) its session no longer holds its epoch's advisory lock
        (a killed process's connection ends, and PostgreSQL frees the lock with it)."""
        if holder_is_dead(str(row.owner)):
            return True
        if connection.dialect.name != "postgresql":
            return False
        # transaction-scoped: freed when this transaction ends, whatever happens
        key = writer_epoch_key(name, int(row.epoch))
        got = connection.execute(sa.text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": key})
        return bool(got.scalar_one())

    def _hold_writer_session(
        self, connection: Connection, name: str, epoch: int
    ) -> Connection | None:
        """PostgreSQL: a connection of its own, kept while the lock is held, holding the
        session advisory lock of ``(name, epoch)`` (the holder's liveness for others). None on
        SQLite, or when this process already holds it for this epoch."""
        if connection.dialect.name != "postgresql":
            return None
        with self._sessions_guard:
            kept = self._writer_sessions.get(name)
        if kept is not None and kept[0] == epoch:
            return None
        session = self._engine.connect()
        try:
            got = session.execute(
                sa.text("SELECT pg_try_advisory_lock(:key)"),
                {"key": writer_epoch_key(name, epoch)},
            ).scalar_one()
            session.commit()  # the session lock outlives the transaction
        except BaseException:
            session.close()
            raise
        if not got:  # another session holds a brand-new epoch's key: refuse to be unsure
            session.close()
            raise StoreError(f"the writer lock {name!r}: epoch {epoch}'s session lock is taken")
        return session

    def _keep_writer_session(self, name: str, epoch: int, session: Connection) -> None:
        with self._sessions_guard:
            old = self._writer_sessions.pop(name, None)
            self._writer_sessions[name] = (epoch, session)
        if old is not None:
            _end_session(old[1])

    def _drop_writer_session(self, name: str, epoch: int | None = None) -> None:
        """End the kept session of lock ``name`` (only if it is ``epoch``'s, when given)."""
        with self._sessions_guard:
            old = self._writer_sessions.get(name)
            if old is None or (epoch is not None and old[0] != epoch):
                return
            del self._writer_sessions[name]
        if old is not None:
            _end_session(old[1])  # closing the session frees its advisory lock

    def lock_holder(self, name: str, now: datetime) -> LockHolder | None:
        """Who holds the writer lock ``name`` now (None: free, or its lease ran out), and
        whether the holder is known alive (``LockHolder.alive``)."""
        now = _aware(now, "now")
        with self._tx(f"reading the writer lock {name!r}") as connection:
            row = connection.execute(
                sa.select(m.WriterLock).where(m.WriterLock.name == name)
            ).one_or_none()
            if row is None or row.owner is None or row.expires_at is None or row.expires_at <= now:
                return None
            alive: bool | None
            if self._holder_gone(connection, name, row):
                alive = False
            elif connection.dialect.name == "postgresql":
                alive = True  # its session holds the epoch's lock
            else:
                host, _, pid = str(row.owner).rpartition(":")
                alive = True if host == socket.gethostname() and pid.isdigit() else None
        return LockHolder(
            name,
            str(row.owner),
            int(row.epoch),
            acquired_at=row.acquired_at,
            expires_at=row.expires_at,
            alive=alive,
        )

    def break_lock(self, name: str, epoch: int) -> bool:
        """Break the writer lock if it is still held with ``epoch``: the owner is cleared and,
        when its epoch is the fleet's newest, a newer epoch is recorded with no owner, so the
        holder's writes and its next renewal are refused (fenced) at once."""
        with self._tx(f"breaking the writer lock {name!r}") as connection:
            ensure_epoch_rows(connection, name)
            newest = current_epoch(connection, name, lock="update")
            row = connection.execute(sa.select(m.WriterLock).where(m.WriterLock.name == name)).one()
            if row.owner is None or int(row.epoch) != epoch:
                return False
            connection.execute(
                sa.update(m.WriterLock)
                .where(m.WriterLock.name == name)
                .values(
                    owner=None,
                    expires_at=None,
                    acquired_at=None,
                    epoch=newest + 1 if int(row.epoch) == newest else row.epoch,
                )
            )
        self._drop_writer_session(name, epoch)  # when this process held it itself
        return True

    def _refuse_if_a_daemon_leads(self, connection: Connection, name: str, owner: str) -> None:
        """A live daemon leader of the fleet ``name`` keeps the writer lock from others: its
        epoch would otherwise be fenced by the lock's newer one while it keeps leading."""
        row = connection.execute(
            sa.select(m.Leadership.holder, m.Leadership.epoch).where(m.Leadership.name == name)
        ).one_or_none()
        if row is None or row.holder is None or row.holder == owner:
            return
        if connection.dialect.name == "postgresql":
            # the daemon's lease (state.leadership): live while unexpired by the database's
            # clock and its epoch's advisory lock is held (a dead session holds nothing)
            key = leader_epoch_key(name, int(row.epoch)) & 0xFFFFFFFFFFFFFFFF
            live = connection.execute(
                sa.text(
                    "SELECT EXISTS (SELECT 1 FROM leadership WHERE name = :name "
                    "AND lease_expires_at > now()) AND EXISTS (SELECT 1 FROM pg_locks "
                    "WHERE locktype = 'advisory' AND granted AND classid = :high "
                    "AND objid = :low AND objsubid = 1)"
                ),
                {"name": name, "high": key >> 32, "low": key & 0xFFFFFFFF},
            ).scalar_one()
        else:
            # the daemon's lease (state.leadership.FileLeadership): live while unexpired by
            # this host's clock and a process holds the lock file (a killed leader holds
            # nothing; one that took over from a frozen leader finds the frozen one holding it)
            expires = connection.execute(
                sa.select(m.Leadership.lease_expires_at).where(m.Leadership.name == name)
            ).scalar_one()
            unexpired = expires is None or expires > utc_now()
            live = unexpired and file_lock_held(leader_lock_path(self._url, name))
        if live:
            raise LockHeldError(
                f"the daemon {row.holder} leads fleet {name!r} (epoch {row.epoch}); it applies "
                "the spec by itself",
                hint="let the daemon reconcile (it watches the spec files), or stop it first",
            )

    def release_lock(self, lease: Lease) -> None:
        """Release the lock if this lease still holds it (a taken-over lock is left alone)."""
        try:
            with self._tx(f"releasing the writer lock {lease.name!r}") as connection:
                connection.execute(
                    sa.update(m.WriterLock)
                    .where(
                        m.WriterLock.name == lease.name,
                        m.WriterLock.owner == lease.owner,
                        m.WriterLock.epoch == lease.epoch,
                    )
                    .values(owner=None, expires_at=None, acquired_at=None)
                )
        finally:
            self._drop_writer_session(lease.name, lease.epoch)

    def current_epoch(self, fleet: str) -> int:
        """The newest epoch granted for ``fleet`` (leadership or writer lock); 0 if none."""
        with self._tx(f"reading the epoch of {fleet!r}") as connection:
            return current_epoch(connection, fleet)

    def leader(self, fleet: str) -> tuple[str, int] | None:
        """(holder, epoch) of the recorded daemon leader of ``fleet``, if any."""
        with self._tx(f"reading the leader of {fleet!r}") as connection:
            row = connection.execute(
                sa.select(m.Leadership.holder, m.Leadership.epoch).where(m.Leadership.name == fleet)
            ).one_or_none()
        if row is None or row.holder is None:
            return None
        return (row.holder, int(row.epoch))

    # --- costs ---------------------------------------------------------------------------

    def set_cost_constant(
        self, key: str, scope: str, value: Decimal, set_by: str, at: datetime
    ) -> None:
        if not _SCOPE_RE.match(scope):
            raise InvalidRecordError(
                f"cost scope {scope!r} is not 'global', 'pool:<name>', 'plan:<name>' or "
                "'contract:<name>'"
            )
        if not key or not set_by:
            raise InvalidRecordError("a cost constant needs a key and who set it")
        amount = _money(value, f"cost constant {key} [{scope}]")
        assert amount is not None
        if amount < 0:
            raise InvalidRecordError(f"cost constant {key} [{scope}] cannot be negative")
        at = _aware(at, "at")
        with self._tx(f"setting cost constant {key} [{scope}]") as connection:
            old = connection.execute(
                sa.select(m.CostConstant.value)
                .where(m.CostConstant.key == key, m.CostConstant.scope == scope)
                .with_for_update()
            ).scalar_one_or_none()
            if old is not None and Decimal(old) == amount:
                return
            stmt = _upsert_stmt(connection, m.CostConstant).values(
                key=key, scope=scope, value=amount, set_by=set_by, set_at=at
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=[m.CostConstant.key, m.CostConstant.scope],
                set_={
                    "value": stmt.excluded.value,
                    "set_by": stmt.excluded.set_by,
                    "set_at": stmt.excluded.set_at,
                },
            )
            connection.execute(stmt)
            connection.execute(
                sa.insert(m.CostConstantHistory).values(
                    key=key, scope=scope, old_value=old, new_value=amount, set_by=set_by, set_at=at
                )
            )

    def cost_constants(self) -> list[CostConstant]:
        with self._tx("reading the cost constants") as connection:
            rows = connection.execute(
                sa.select(m.CostConstant).order_by(m.CostConstant.key, m.CostConstant.scope)
            ).all()
        return [_cost_out(row) for row in rows]

    def cost_history(self, key: str | None = None) -> list[dict[str, str]]:
        """Changes, newest first: key, scope, old ('' when first set), new, set_by, set_at."""
        query = sa.select(m.CostConstantHistory).order_by(
            m.CostConstantHistory.set_at.desc(), m.CostConstantHistory.id.desc()
        )
        if key is not None:
            query = query.where(m.CostConstantHistory.key == key)
        with self._tx("reading the cost history") as connection:
            rows = connection.execute(query).all()
        return [
            {
                "key": row.key,
                "scope": row.scope,
                "old": _money_text(row.old_value),
                "new": _money_text(row.new_value),
                "set_by": row.set_by,
                "set_at": row.set_at.isoformat(),
            }
            for row in rows
        ]

    # --- heartbeats ----------------------------------------------------------------------

    def record_heartbeats(self, fleet: str, beats: Sequence[NodeMetrics]) -> int:
        """Batched: per chunk of 500 nodes, two statements. PostgreSQL: one
        ``UPDATE ... FROM unnest(arrays) RETURNING`` of the nodes' last beat and counter, and one
        ``INSERT ... SELECT FROM unnest(arrays) ON CONFLICT`` into the metrics ring (constant
        statements: cached and prepared). SQLite: a SELECT, an executemany UPDATE and an
        executemany upsert. Unknown (or closed) nodes are skipped; returns the beats recorded."""
        return sum(self.record_beats(fleet, beats))

    def record_beats(self, fleet: str, beats: Sequence[NodeMetrics]) -> list[bool]:
        """As ``record_heartbeats``, saying for each beat whether it was recorded. A node's
        beats carrying ``sent_at`` (the node's signed timestamp) are recorded only when newer
        than the node's newest recorded ``sent_at`` (checked and advanced in the same UPDATE,
        so two daemons cannot both record one beat); otherwise the node's beats of this call
        are refused as a replay."""
        if not beats:
            return []
        by_node: dict[str, list[NodeMetrics]] = defaultdict(list)
        for beat in beats:
            _aware(beat.at, f"heartbeat of {beat.node}: at")
            by_node[beat.node].append(beat)
        for series in by_node.values():
            series.sort(key=lambda b: b.at)
        names = sorted(by_node)
        record = (
            self._record_heartbeats_postgres
            if self._engine.dialect.name == "postgresql"
            else self._record_heartbeats_sqlite
        )
        # concurrent recorders (several daemons) may deadlock on the same node rows
        recorded = _retrying(HEARTBEAT_ATTEMPTS, lambda: record(fleet, names, by_node, len(beats)))
        return [beat.node in recorded for beat in beats]

    def _record_heartbeats_sqlite(
        self,
        fleet: str,
        names: Sequence[str],
        by_node: Mapping[str, Sequence[NodeMetrics]],
        count: int,
    ) -> set[str]:
        """The SQLite batch through SQLAlchemy (PostgreSQL: ``_record_heartbeats_postgres``,
        the same batch on the raw psycopg connection)."""
        recorded: set[str] = set()
        window = self._window
        counts: dict[tuple[uuid.UUID, datetime], tuple[int, int, int, int]] = {}
        with self._tx(f"recording {count} heartbeat(s)") as connection:
            for chunk in _chunks(names):
                known = self._touch_nodes_sqlite(connection, fleet, chunk, by_node)
                rows: dict[tuple[uuid.UUID, int], dict[str, Any]] = {}
                for node_id, name, first_seq in known:
                    series = by_node[name]
                    for offset, beat in enumerate(series):
                        slot = (first_seq + offset) % window
                        rows[(node_id, slot)] = _metric_params(node_id, slot, beat)
                        if beat.sent or beat.bounces or beat.soft_bounces or beat.complaints:
                            key = (node_id, _hour(beat.at))
                            sent, hard, soft, complaints = counts.get(key, (0, 0, 0, 0))
                            counts[key] = (
                                sent + int(beat.sent),
                                hard + int(beat.bounces),
                                soft + int(beat.soft_bounces),
                                complaints + int(beat.complaints),
                            )
                    recorded.add(name)
                if rows:
                    connection.execute(self._metrics_upsert(connection), list(rows.values()))
            # the sending counts the beats carry (the reputation rates), in the same
            # transaction: a beat is recorded with its counts or not at all
            add_send_counts(connection, counts)
        return recorded

    def _record_heartbeats_postgres(
        self,
        fleet: str,
        names: Sequence[str],
        by_node: Mapping[str, Sequence[NodeMetrics]],
        count: int,
    ) -> set[str]:
        """The PostgreSQL batch on the pool's raw psycopg connection: the same statements,
        transaction and lock order as through SQLAlchemy, without its per-statement Python
        machinery (about a third of a beat's CPU in the daemon). Driver errors are translated
        as ``_tx`` does (so ``_retrying`` still sees deadlocks)."""
        import psycopg

        doing = f"recording {count} heartbeat(s)"
        try:
            raw = self._engine.raw_connection()
        except SQLAlchemyError as exc:
            raise convert_error(exc, doing, self._url) from exc
        except psycopg.Error as exc:
            # the pool's connect raises the driver's own error (a database stopped or
            # restarting): not wrapped by SQLAlchemy on this path
            wrapped = sa.exc.DBAPIError.instance(
                None, None, exc, psycopg.Error, connection_invalidated=True
            )
            raise convert_error(wrapped, doing, self._url) from wrapped
        driver: Any = raw.driver_connection
        try:
            try:
                if len(names) == count:  # one beat per node: one statement, one round trip
                    recorded = _pg_record_singles(
                        driver, fleet, [by_node[name][0] for name in names], self._window
                    )
                else:
                    with driver.cursor() as cursor:
                        recorded = _pg_record_batch(cursor, fleet, names, by_node, self._window)
                    driver.commit()
            except BaseException:
                if not driver.closed:
                    with contextlib.suppress(psycopg.Error):
                        driver.rollback()
                if driver.closed or driver.broken:
                    raw.invalidate()
                raise
        except psycopg.Error as exc:
            wrapped = sa.exc.DBAPIError.instance(
                None, None, exc, psycopg.Error, connection_invalidated=bool(driver.broken)
            )
            raise convert_error(wrapped, doing, self._url) from wrapped
        finally:
            raw.close()  # back to the pool
        return recorded

    @staticmethod
    def _metrics_upsert(connection: Connection) -> Any:
        metrics = m.NodeMetric
        upsert = _upsert_stmt(connection, metrics)
        return upsert.on_conflict_do_update(
            index_elements=[metrics.node_id, metrics.slot],
            set_={column: getattr(upsert.excluded, column) for column in _METRIC_COLUMNS},
        )

    @staticmethod
    def _touch_nodes_sqlite(
        connection: Connection,
        fleet: str,
        names: Sequence[str],
        by_node: Mapping[str, Sequence[NodeMetrics]],
    ) -> list[tuple[uuid.UUID, str, int]]:
        """SQLite (the database is locked for writing by BEGIN IMMEDIATE): read, then update."""
        node = m.SendingNode
        rows = connection.execute(
            sa.select(node.id, node.name, node.heartbeat_seq, node.last_beat_sent_at).where(
                node.fleet == fleet, node.name.in_(names), node.closed_at.is_(None)
            )
        ).all()
        known = [
            row
            for row in rows
            if row.last_beat_sent_at is None
            or (first := _first_sent_at(by_node[row.name])) is None
            or row.last_beat_sent_at < first
        ]
        if not known:
            return []
        at = sa.bindparam("b_at", type_=m.UtcDateTime())
        connection.execute(
            sa.update(node)
            .where(node.id == sa.bindparam("b_id", type_=sa.Uuid()))
            .values(
                heartbeat_seq=node.heartbeat_seq + sa.bindparam("b_count"),
                last_heartbeat=sa.case(
                    (sa.or_(node.last_heartbeat.is_(None), node.last_heartbeat < at), at),
                    else_=node.last_heartbeat,
                ),
                last_beat_sent_at=sa.func.coalesce(
                    sa.bindparam("b_sent_at", type_=sa.BigInteger()), node.last_beat_sent_at
                ),
            ),
            [
                {
                    "b_id": row.id,
                    "b_count": len(by_node[row.name]),
                    "b_at": by_node[row.name][-1].at,
                    "b_sent_at": _last_sent_at(by_node[row.name]),
                }
                for row in known
            ],
        )
        return [(row.id, row.name, int(row.heartbeat_seq)) for row in known]

    def recent_metrics(
        self, fleet: str, since: datetime, nodes: Collection[str] | None = None
    ) -> dict[str, list[NodeMetrics]]:
        """Two single-table reads joined here: the fleet's open nodes, then the metric rows
        newer than ``since``. Neither has a plan to choose (a sequential scan each, or the
        metrics' primary key for ``nodes``), so the cost stays linear on a fresh PostgreSQL
        database whose statistics autovacuum has not gathered yet (a join there was planned
        as a nested loop: quadratic, 5 s at 10,000 nodes)."""
        since = _aware(since, "since")
        node, metric = m.SendingNode, m.NodeMetric
        columns = _beat_columns()
        with self._tx(f"reading the metrics of {fleet!r}") as connection:
            names = {
                row.id: row.name
                for row in connection.execute(
                    sa.select(node.id, node.name).where(
                        node.fleet == fleet, node.closed_at.is_(None)
                    )
                )
            }
            rows: list[Any] = []
            if nodes is None:
                if names:
                    rows = list(connection.execute(sa.select(*columns).where(metric.at >= since)))
            else:
                wanted = set(nodes)
                ids = [node_id for node_id, name in names.items() if name in wanted]
                for chunk in _chunks(ids):
                    rows += connection.execute(
                        sa.select(*columns).where(metric.node_id.in_(chunk), metric.at >= since)
                    ).all()
        return _metrics_by_name(rows, names)

    def metrics_after(
        self, fleet: str, since: datetime, starts: Mapping[str, int]
    ) -> dict[str, list[NodeMetrics]]:
        """Per open node of ``starts``, the beats it recorded after its first ``start`` ones
        (its beats numbered ``start`` to its ``heartbeat_seq`` less one), newer than ``since``:
        a daemon that saw a node's mark at ``start`` reads only the ring slots written since,
        not the node's whole window (``recent_metrics``). A node whose count moved by the
        window or more, or went back (another record under the name), or with a negative
        ``start``, is read whole. Probes of the metrics' primary key, (node, slot) pairs:
        no plan to choose, linear on a fresh database."""
        since = _aware(since, "since")
        node, metric = m.SendingNode, m.NodeMetric
        window = self._window
        columns = _beat_columns()
        names: dict[Any, str] = {}
        rows: list[Any] = []
        with self._tx(f"reading the new metrics of {fleet!r}") as connection:
            whole: list[Any] = []
            pairs: list[tuple[Any, int]] = []
            for chunk in _chunks(sorted(starts)):
                for node_id, name, seq in connection.execute(
                    sa.select(node.id, node.name, node.heartbeat_seq).where(
                        node.fleet == fleet, node.closed_at.is_(None), node.name.in_(chunk)
                    )
                ):
                    names[node_id] = name
                    start, count = starts[name], int(seq)
                    if start < 0 or count < start or count - start >= window:
                        whole.append(node_id)
                    else:
                        pairs += ((node_id, number % window) for number in range(start, count))
            for ids in _chunks(whole):
                rows += connection.execute(
                    sa.select(*columns).where(metric.node_id.in_(ids), metric.at >= since)
                ).all()
            for part in _chunks(pairs):
                rows += connection.execute(
                    sa.select(*columns).where(
                        sa.tuple_(metric.node_id, metric.slot).in_(part), metric.at >= since
                    )
                ).all()
        return _metrics_by_name(rows, names)

    def node_marks(self, fleet: str) -> dict[str, NodeMark]:
        """One narrow read of the open nodes (no metrics, no JSON columns): a daemon's
        in-memory fleet polls it to learn which records and which beat series changed. The
        version is ``updated_at``, which every write of a record advances and a heartbeat
        does not. On PostgreSQL the rows skip the ORM's type processing (the driver's
        datetimes are aware already): a third of the cost at 10,000 nodes."""
        node = m.SendingNode
        with self._tx(f"reading the node marks of {fleet!r}") as connection:
            if connection.dialect.name == "postgresql":
                rows = connection.execute(_PG_NODE_MARKS, {"fleet": fleet}).all()
            else:
                rows = connection.execute(
                    sa.select(
                        node.name, node.heartbeat_seq, node.last_heartbeat, node.updated_at
                    ).where(node.fleet == fleet, node.closed_at.is_(None))
                ).all()
        return {name: NodeMark(name, int(seq), last, updated) for name, seq, last, updated in rows}

    def node_marks_since(self, fleet: str, cursor: object | None) -> MarksDelta:
        """On PostgreSQL, only the rows of ``fleet`` whose version (``xmin``: the transaction
        that wrote the row's current version, whatever it wrote: a beat, a record change, a
        close, from any process) is not older than the oldest transaction still running when
        the previous read began (its snapshot's ``xmin``, the cursor). A transaction that
        committed after that read's snapshot is either newer than that or was running then,
        so no change is missed; a change already seen may come again (the caller compares
        marks). The cursor is taken before the rows, in the same transaction. A row frozen by
        ``VACUUM FREEZE`` (its ``xmin`` reads as frozen) within seconds of its write would be
        missed: autovacuum freezes only rows older than ``vacuum_freeze_min_age``
        transactions, and the daemon's periodic full load is the net. With ``cursor=None``,
        and on SQLite, every open node's mark (``complete``)."""
        node = m.SendingNode
        with self._tx(f"reading the changed node marks of {fleet!r}") as connection:
            if connection.dialect.name != "postgresql":
                rows = connection.execute(
                    sa.select(
                        node.name, node.heartbeat_seq, node.last_heartbeat, node.updated_at
                    ).where(node.fleet == fleet, node.closed_at.is_(None))
                ).all()
                marks = {n: NodeMark(n, int(seq), last, up) for n, seq, last, up in rows}
                return MarksDelta(marks, complete=True)
            now = int(connection.execute(_PG_SNAPSHOT_XMIN).scalar_one())
            if not isinstance(cursor, int):
                rows = connection.execute(_PG_NODE_MARKS, {"fleet": fleet}).all()
                marks = {n: NodeMark(n, int(seq), last, up) for n, seq, last, up in rows}
                return MarksDelta(marks, complete=True, cursor=now)
            # xmin is 32 bits: compared by age (now minus xid, modulo 2**32) to the cursor's
            changed = connection.execute(
                _PG_NODE_MARKS_SINCE, {"fleet": fleet, "since": str(cursor % 2**32)}
            ).all()
        marks = {}
        closed: set[str] = set()
        for name, seq, last, updated, is_closed in changed:
            if is_closed:
                closed.add(name)
            else:
                marks[name] = NodeMark(name, int(seq), last, updated)
        return MarksDelta(marks, complete=False, cursor=now, closed=frozenset(closed))

    def nodes_named(self, fleet: str, names: Collection[str]) -> list[RecordedNode]:
        node = m.SendingNode
        wanted = sorted(set(names))
        result: list[RecordedNode] = []
        with self._tx(f"loading {len(wanted)} node(s) of {fleet!r}") as connection:
            for chunk in _chunks(wanted):
                rows = _plain_rows(
                    connection.execute(
                        sa.select(node).where(
                            node.fleet == fleet, node.closed_at.is_(None), node.name.in_(chunk)
                        )
                    )
                )
                result += (_node_out(row) for row in rows)
        return sorted(result, key=lambda n: n.name)

    def prune_metrics(self, older_than: datetime) -> int:
        """Delete metrics older than ``older_than`` and all metrics of closed nodes."""
        older_than = _aware(older_than, "older_than")
        closed = sa.select(m.SendingNode.id).where(m.SendingNode.closed_at.is_not(None))
        with self._tx("pruning node metrics") as connection:
            result = connection.execute(
                sa.delete(m.NodeMetric).where(
                    sa.or_(m.NodeMetric.at < older_than, m.NodeMetric.node_id.in_(closed))
                )
            )
        return int(result.rowcount)

    def metrics_rows(self) -> int:
        """How many metric rows are stored (bounded by open nodes x the window)."""
        with self._tx("counting node metrics") as connection:
            return int(
                connection.execute(
                    sa.select(sa.func.count()).select_from(m.NodeMetric)
                ).scalar_one()
            )


# --- rows <-> value types ------------------------------------------------------------------


def _beat_columns() -> tuple[Any, ...]:
    """The metric columns ``_metrics_by_name`` reads, node id first."""
    metric = m.NodeMetric
    return (
        metric.node_id,
        metric.at,
        metric.cpu,
        metric.memory,
        metric.disk,
        metric.queue_length,
        metric.sent,
        metric.bounces,
        metric.complaints,
        metric.interval_seconds,
    )


def _metrics_by_name(rows: Iterable[Any], names: Mapping[Any, str]) -> dict[str, list[NodeMetrics]]:
    """Metric rows (node id first) as each node's beats, oldest first; rows of a node not in
    ``names`` (another fleet's, or a closed one) are left out."""
    result: dict[str, list[NodeMetrics]] = defaultdict(list)
    for row in rows:
        name = names.get(row.node_id)
        if name is None:
            continue
        result[name].append(
            NodeMetrics(
                node=name,
                at=row.at,
                cpu=float(row.cpu),
                memory=float(row.memory),
                disk=float(row.disk),
                queue_length=int(row.queue_length),
                sent=int(row.sent),
                bounces=int(row.bounces),
                complaints=int(row.complaints),
                interval_seconds=float(row.interval_seconds),
            )
        )
    return {
        name: sorted(series, key=lambda beat: beat.at) for name, series in sorted(result.items())
    }


def _ip_status_for(status: NodeStatus) -> IpStatus:
    if status is NodeStatus.WARMING:
        return IpStatus.WARMING
    if status is NodeStatus.ACTIVE:
        return IpStatus.WARMED
    return IpStatus.ASSIGNED


def _node_params(node: RecordedNode, now: datetime) -> dict[str, Any]:
    if not node.fleet or not node.name:
        raise InvalidRecordError("a node needs a fleet and a name")
    try:
        status = NodeStatus(node.status)
    except ValueError as exc:
        raise InvalidRecordError(f"{node.name}: unknown status {node.status!r}") from exc
    try:
        node_id = uuid.UUID(node.id) if node.id else uuid.uuid4()
    except ValueError as exc:
        raise InvalidRecordError(f"{node.name}: id {node.id!r} is not a UUID") from exc
    if not 0 <= node.reputation_score <= 100:
        raise InvalidRecordError(f"{node.name}: reputation_score must be within 0..100")
    return {
        "id": node_id,
        "fleet": node.fleet,
        "name": node.name,
        "provider_id": node.service_id,
        "ip_address": normalise_ip(node.ip_address, f"{node.name}: ip_address")
        if node.ip_address
        else None,
        "hostname": node.hostname,
        "region": node.region,
        "plan": node.plan,
        "pool": node.pool,
        "status": status.value,
        "reputation_score": node.reputation_score,
        "current_load": _money(node.current_load, f"{node.name}: current_load") or Decimal(0),
        "approximate_cost": _money(node.approximate_cost, f"{node.name}: approximate_cost"),
        "protected": node.protected,
        "rdns_done": node.rdns_done,
        "warmup_started_at": _maybe_aware(node.warmup_started_at, "warmup_started_at"),
        "observed_generation": node.observed_generation,
        "created_at": _maybe_aware(node.created_at, "created_at") or now,
        "updated_at": now,
        "last_heartbeat": _maybe_aware(node.last_heartbeat, "last_heartbeat"),
        "heartbeat_seq": 0,
        "status_changed_at": _maybe_aware(node.status_changed_at, "status_changed_at") or now,
        "closed_at": None,
        "steps": _steps_in(node),
        "host_key": _host_key_in(node.host_key),
        "bundle_version": node.bundle_version,
        "agent_url": _agent_url_in(node),
        "quarantine": node.quarantine[:MAX_ERROR_TEXT] if node.quarantine else None,
        "paused_by": node.paused_by.value if node.paused_by is not None else None,
        "slot_failures": max(0, min(node.slot_failures, 1000)),
    }


def _agent_url_in(node: RecordedNode) -> str | None:
    """The node's agent URL, refused when it could carry a secret (user info, a query or
    a fragment: a heartbeat URL needs none, the node's token travels apart)."""
    url = node.agent_url
    if url is None:
        return None
    parts = urlsplit(url)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or "@" in parts.netloc
        or parts.query
        or parts.fragment
        or len(url) > 500
    ):
        raise InvalidRecordError(
            f"{node.name}: the agent URL is not a plain http(s) URL without credentials"
        )
    return url


def _host_key_in(key: HostKey | None) -> dict[str, str] | None:
    if key is None:
        return None
    return {"algorithm": key.algorithm, "public": key.public, "fingerprint": key.fingerprint}


def _host_key_out(raw: object) -> HostKey | None:
    if not isinstance(raw, dict):
        return None
    try:
        return HostKey(str(raw["algorithm"]), str(raw["public"]), str(raw["fingerprint"]))
    except KeyError:
        return None


def _maintenance_out(node: Any) -> Maintenance | None:
    reason = getattr(node, "maintenance_reason", None)
    if reason is None:
        return None
    since = node.maintenance_since or datetime.fromtimestamp(0, UTC)
    try:
        kind = HoldKind(getattr(node, "maintenance_kind", None) or HoldKind.MAINTENANCE.value)
    except ValueError:
        kind = HoldKind.CORDON  # an unknown kind written by a newer version: hold, at least
    return Maintenance(
        str(reason),
        str(node.maintenance_by or "unknown"),
        since,
        getattr(node, "maintenance_ended_at", None),
        kind,
    )


def _steps_in(node: RecordedNode) -> dict[str, Any] | None:
    if not node.steps:
        return None
    result: dict[str, Any] = {}
    for state in node.steps:
        at = _maybe_aware(state.at, f"{node.name}: steps.{state.name}.at")
        result[state.name] = {
            "status": StepStatus(state.status).value,
            "attempts": int(state.attempts),
            "at": at.isoformat() if at is not None else None,
            "error": state.error[:MAX_ERROR_TEXT] if state.error else None,
        }
    return result


def _steps_out(raw: object) -> tuple[StepState, ...]:
    if not isinstance(raw, dict):
        return ()
    states: list[StepState] = []
    for name, entry in sorted(raw.items()):
        if not isinstance(entry, dict):
            continue
        try:
            status = StepStatus(str(entry.get("status")))
        except ValueError:
            continue
        at_text = entry.get("at")
        at = datetime.fromisoformat(at_text) if isinstance(at_text, str) else None
        attempts = entry.get("attempts")
        error = entry.get("error")
        states.append(
            StepState(
                name=str(name),
                status=status,
                attempts=attempts if isinstance(attempts, int) else 1,
                at=at,
                error=str(error) if error is not None else None,
            )
        )
    return tuple(states)


_METRIC_COLUMNS = (
    "at",
    "sent",
    "queue_length",
    "cpu",
    "memory",
    "disk",
    "bounces",
    "complaints",
    "interval_seconds",
)


#: A batch's nodes are found by one probe of the (fleet, name) index each (LATERAL ... LIMIT 1
#: keeps the planner from hashing the whole fleet: on a fresh database, without statistics,
#: it estimates one row for the fleet and would scan every node per batch), all found before
#: the first row is updated (MATERIALIZED, ORDER BY) so no scan still holds a page the update
#: writes: a page must be pruned for its rows to be updated in place (HOT). Then each row is
#: updated through its primary key: hash and merge joins are off for the transaction
#: (``_PG_PROBES_ONLY``), else a batch of more than ~50 beats hashes every node of the table.
_PG_PROBES_ONLY = sa.text(
    "SELECT set_config('enable_hashjoin', 'off', true), set_config('enable_mergejoin', 'off', true)"
)

_PG_NODE_MARKS = sa.text(
    "SELECT name, heartbeat_seq, last_heartbeat, updated_at FROM sending_nodes "
    "WHERE fleet = :fleet AND closed_at IS NULL"
)

#: the oldest transaction still running for this statement's snapshot (64 bits, no wraparound)
_PG_SNAPSHOT_XMIN = sa.text("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint")

#: the rows written by a transaction not older than ``:since`` (an xid): ``age`` counts
#: from the same reference for both sides; a frozen row's age is the largest integer
_PG_NODE_MARKS_SINCE = sa.text(
    "SELECT name, heartbeat_seq, last_heartbeat, updated_at, closed_at IS NOT NULL "
    "FROM sending_nodes WHERE fleet = :fleet AND age(xmin) <= age(CAST(:since AS xid))"
)

_PG_TOUCH_NODES = sa.text(
    """
    WITH k AS MATERIALIZED (
        SELECT o.id AS k_id, b.*
        FROM unnest(CAST(:names AS text[]), CAST(:counts AS integer[]),
                    CAST(:ats AS timestamptz[]), CAST(:firsts AS bigint[]),
                    CAST(:lasts AS bigint[])) AS b(b_name, b_count, b_at, b_first, b_last)
        CROSS JOIN LATERAL (
            SELECT s.id FROM sending_nodes AS s
            WHERE s.fleet = :fleet AND s.name = b.b_name AND s.closed_at IS NULL
            LIMIT 1
        ) AS o
        ORDER BY o.id
    )
    UPDATE sending_nodes AS n
    SET heartbeat_seq = n.heartbeat_seq + k.b_count,
        last_heartbeat = GREATEST(n.last_heartbeat, k.b_at),
        last_beat_sent_at = GREATEST(n.last_beat_sent_at, k.b_last)
    FROM k
    WHERE n.id = k.k_id
      AND (k.b_first IS NULL OR n.last_beat_sent_at IS NULL OR n.last_beat_sent_at < k.b_first)
    RETURNING n.id, n.name, n.heartbeat_seq
    """
).columns(sa.column("id", sa.Uuid()), sa.column("name", sa.String()), sa.column("heartbeat_seq"))


_PG_RECORD_SINGLES = sa.text(
    """
    WITH b AS (
        SELECT * FROM unnest(
            CAST(:names AS text[]), CAST(:ats AS timestamptz[]), CAST(:sent_ats AS bigint[]),
            CAST(:hours AS timestamptz[]), CAST(:sent AS integer[]),
            CAST(:queue_length AS integer[]), CAST(:cpu AS float8[]), CAST(:memory AS float8[]),
            CAST(:disk AS float8[]), CAST(:bounces AS integer[]), CAST(:soft_bounces AS integer[]),
            CAST(:complaints AS integer[]), CAST(:interval_seconds AS float8[]))
        AS b(b_name, b_at, b_sent_at, b_hour, b_sent, b_queue_length, b_cpu, b_memory, b_disk,
             b_bounces, b_soft_bounces, b_complaints, b_interval_seconds)
    ),
    k AS MATERIALIZED (
        SELECT o.id AS k_id, b.*
        FROM b CROSS JOIN LATERAL (
            SELECT s.id FROM sending_nodes AS s
            WHERE s.fleet = :fleet AND s.name = b.b_name AND s.closed_at IS NULL
            LIMIT 1
        ) AS o
        ORDER BY o.id
    ),
    t AS (
        UPDATE sending_nodes AS n
        SET heartbeat_seq = n.heartbeat_seq + 1,
            last_heartbeat = GREATEST(n.last_heartbeat, k.b_at),
            last_beat_sent_at = GREATEST(n.last_beat_sent_at, k.b_sent_at)
        FROM k
        WHERE n.id = k.k_id
          AND (k.b_sent_at IS NULL OR n.last_beat_sent_at IS NULL
               OR n.last_beat_sent_at < k.b_sent_at)
        RETURNING n.id AS t_id, n.name AS t_name, n.heartbeat_seq AS t_seq, k.*
    ),
    metrics AS (
        INSERT INTO node_metrics (node_id, slot, at, sent, queue_length, cpu, memory, disk,
                                  bounces, complaints, interval_seconds)
        SELECT t_id, CAST((t_seq - 1) % :window AS smallint), b_at, b_sent, b_queue_length,
               b_cpu, b_memory, b_disk, b_bounces, b_complaints, b_interval_seconds
        FROM t ORDER BY t_id
        ON CONFLICT (node_id, slot) DO UPDATE SET
            at = excluded.at, sent = excluded.sent, queue_length = excluded.queue_length,
            cpu = excluded.cpu, memory = excluded.memory, disk = excluded.disk,
            bounces = excluded.bounces, complaints = excluded.complaints,
            interval_seconds = excluded.interval_seconds
    ),
    counts AS (
        INSERT INTO node_send_counts AS c (node_id, hour, sent, hard_bounces, soft_bounces,
                                           complaints)
        SELECT t_id, b_hour, b_sent, b_bounces, b_soft_bounces, b_complaints
        FROM t
        WHERE b_sent <> 0 OR b_bounces <> 0 OR b_soft_bounces <> 0 OR b_complaints <> 0
        ORDER BY t_id
        ON CONFLICT (node_id, hour) DO UPDATE SET
            sent = c.sent + excluded.sent,
            hard_bounces = c.hard_bounces + excluded.hard_bounces,
            soft_bounces = c.soft_bounces + excluded.soft_bounces,
            complaints = c.complaints + excluded.complaints
    )
    SELECT t_name FROM t
    """
)


def _pg_record_singles(
    connection: Any,
    fleet: str,
    beats: Sequence[NodeMetrics],
    window: int,
) -> set[str]:
    """A batch of at most one beat per node (what the daemon's batcher writes) in one
    statement and one round trip: the replay-checking touch of the nodes, the metrics ring
    upsert and the hourly send counts as data-modifying parts of one statement, sent in a
    pipeline with the transaction's planner settings and its commit (the caller has no
    statement to wait for in between: a beat's slot is its node's new count less one, modulo
    the window). Rows are locked in one order (node id) as by ``_pg_record_batch``; a node's
    metrics and send-count rows only after its node row. Commits; raises as psycopg does."""
    ordered = sorted(beats, key=lambda beat: beat.node)
    params = {
        "fleet": fleet,
        "window": window,
        "names": [beat.node for beat in ordered],
        "ats": [beat.at for beat in ordered],
        "sent_ats": [beat.sent_at for beat in ordered],
        "hours": [_hour(beat.at) for beat in ordered],
        "sent": [int(beat.sent) for beat in ordered],
        "queue_length": [int(beat.queue_length) for beat in ordered],
        "cpu": [float(beat.cpu) for beat in ordered],
        "memory": [float(beat.memory) for beat in ordered],
        "disk": [float(beat.disk) for beat in ordered],
        "bounces": [int(beat.bounces) for beat in ordered],
        "soft_bounces": [int(beat.soft_bounces) for beat in ordered],
        "complaints": [int(beat.complaints) for beat in ordered],
        "interval_seconds": [float(beat.interval_seconds) for beat in ordered],
    }
    with connection.pipeline(), connection.cursor() as settings, connection.cursor() as cursor:
        settings.execute(_PG_PROBES_ONLY_SQL)
        cursor.execute(_PG_RECORD_SINGLES_SQL, params)
        connection.commit()
        return {name for (name,) in cursor.fetchall()}


def _pg_record_batch(
    cursor: Any,
    fleet: str,
    names: Sequence[str],
    by_node: Mapping[str, Sequence[NodeMetrics]],
    window: int,
) -> set[str]:
    """One heartbeat batch on a psycopg cursor inside its transaction (the caller commits):
    per chunk of nodes the replay-checking touch of the nodes, the metrics ring upsert, then
    the hourly send counts; rows in one order (node id, slot / hour) for every writer."""
    recorded: set[str] = set()
    counts: dict[tuple[uuid.UUID, datetime], list[int]] = {}
    cursor.execute(_PG_PROBES_ONLY_SQL)
    for chunk in _chunks(names):
        lasts = [by_node[name][-1] for name in chunk]
        cursor.execute(
            _PG_TOUCH_NODES_SQL,
            {
                "fleet": fleet,
                "names": list(chunk),
                "counts": [len(by_node[name]) for name in chunk],
                "ats": [beat.at.astimezone(UTC) for beat in lasts],
                "firsts": [_first_sent_at(by_node[name]) for name in chunk],
                "lasts": [_last_sent_at(by_node[name]) for name in chunk],
            },
        )
        rows: dict[tuple[uuid.UUID, int], NodeMetrics] = {}
        for node_id, name, seq in cursor.fetchall():
            series = by_node[name]
            first_seq = int(seq) - len(series)
            for offset, beat in enumerate(series):
                rows[(node_id, (first_seq + offset) % window)] = beat
                if beat.sent or beat.bounces or beat.soft_bounces or beat.complaints:
                    key = (node_id, _hour(beat.at))
                    total = counts.get(key)
                    if total is None:
                        total = counts[key] = [0, 0, 0, 0]
                    total[0] += int(beat.sent)
                    total[1] += int(beat.bounces)
                    total[2] += int(beat.soft_bounces)
                    total[3] += int(beat.complaints)
            recorded.add(name)
        if not rows:
            continue
        keys = sorted(rows)  # one lock order for all
        beats = [rows[key] for key in keys]
        cursor.execute(
            _PG_METRICS_UPSERT_SQL,
            {
                "a_node_id": [node_id for node_id, _ in keys],
                "a_slot": [slot for _, slot in keys],
                "a_at": [beat.at for beat in beats],
                "a_sent": [int(beat.sent) for beat in beats],
                "a_queue_length": [int(beat.queue_length) for beat in beats],
                "a_cpu": [float(beat.cpu) for beat in beats],
                "a_memory": [float(beat.memory) for beat in beats],
                "a_disk": [float(beat.disk) for beat in beats],
                "a_bounces": [int(beat.bounces) for beat in beats],
                "a_complaints": [int(beat.complaints) for beat in beats],
                "a_interval_seconds": [float(beat.interval_seconds) for beat in beats],
            },
        )
    hours = sorted(counts)  # one lock order for every writer
    for part in _chunks(hours, 5000):
        values = [counts[key] for key in part]
        cursor.execute(
            _PG_SEND_COUNTS_UPSERT_SQL,
            {
                "node_ids": [node_id for node_id, _ in part],
                "hours": [hour for _, hour in part],
                **{
                    f"a_{column}": [v[index] for v in values]
                    for index, column in enumerate(SEND_COUNT_COLUMNS)
                },
            },
        )
    return recorded


def _psycopg_sql(statement: Any, *, binary: bool = False) -> str:
    """A ``sa.text`` statement's SQL with psycopg's ``%(name)s`` placeholders; ``binary``:
    ``%(name)b``, parameters sent in PostgreSQL's binary format (the batch's arrays: psycopg
    writes a text array literal element by element in Python, escaping each with a regular
    expression, about 60 % of a heartbeat batch's client CPU; binary arrays cost a third)."""
    sql = str(statement.compile(dialect=postgresql.psycopg.dialect()))  # type: ignore[no-untyped-call]
    return re.sub(r"%\((\w+)\)s", r"%(\1)b", sql) if binary else sql


_PG_METRICS_UPSERT = sa.text(
    """
    INSERT INTO node_metrics (node_id, slot, at, sent, queue_length, cpu, memory, disk, bounces,
                              complaints, interval_seconds)
    SELECT * FROM unnest(
        CAST(:a_node_id AS uuid[]), CAST(:a_slot AS smallint[]), CAST(:a_at AS timestamptz[]),
        CAST(:a_sent AS integer[]), CAST(:a_queue_length AS integer[]),
        CAST(:a_cpu AS float8[]), CAST(:a_memory AS float8[]), CAST(:a_disk AS float8[]),
        CAST(:a_bounces AS integer[]), CAST(:a_complaints AS integer[]),
        CAST(:a_interval_seconds AS float8[]))
    ON CONFLICT (node_id, slot) DO UPDATE SET
        at = excluded.at, sent = excluded.sent, queue_length = excluded.queue_length,
        cpu = excluded.cpu, memory = excluded.memory, disk = excluded.disk,
        bounces = excluded.bounces, complaints = excluded.complaints,
        interval_seconds = excluded.interval_seconds
    """
)


SEND_COUNT_COLUMNS = ("sent", "hard_bounces", "soft_bounces", "complaints")


def _hour(at: datetime) -> datetime:
    return _aware(at, "hour").astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def add_send_counts(
    connection: Connection, counts: Mapping[tuple[uuid.UUID, datetime], tuple[int, int, int, int]]
) -> int:
    """Add (sent, hard bounces, soft bounces, complaints) to the hourly ``node_send_counts``
    rows of (node id, hour), inside the caller's transaction; returns the rows written.

    One fixed statement whatever the number of rows (PostgreSQL: arrays through ``unnest``;
    SQLite: one prepared statement run for each row): a multi-row ``VALUES`` built per call
    cost about a millisecond of compilation per row, most of a heartbeat batch's time."""
    keys = sorted(counts)  # one lock order for every writer
    if not keys:
        return 0
    if connection.dialect.name == "postgresql":
        for chunk in _chunks(keys, 5000):
            values = [counts[key] for key in chunk]
            connection.execute(
                _PG_SEND_COUNTS_UPSERT,
                {
                    "node_ids": [node_id for node_id, _ in chunk],
                    "hours": [_aware(hour, "hour").astimezone(UTC) for _, hour in chunk],
                    **{
                        f"a_{column}": [int(v[index]) for v in values]
                        for index, column in enumerate(SEND_COUNT_COLUMNS)
                    },
                },
            )
    else:
        connection.execute(
            _send_counts_upsert(connection.dialect.name),
            [
                {
                    "node_id": node_id,
                    "hour": hour,
                    **dict(zip(SEND_COUNT_COLUMNS, counts[(node_id, hour)], strict=True)),
                }
                for node_id, hour in keys
            ],
        )
    return len(keys)


@functools.cache
def _send_counts_upsert(dialect: str) -> Any:
    """The portable hourly counts upsert, built once (run with one parameter set per row)."""
    table = m.NodeSendCount
    stmt = _insert_for(dialect, table)
    return stmt.on_conflict_do_update(
        index_elements=[table.node_id, table.hour],
        set_={
            column: getattr(table, column) + getattr(stmt.excluded, column)
            for column in SEND_COUNT_COLUMNS
        },
    )


_PG_SEND_COUNTS_UPSERT = sa.text(
    """
    INSERT INTO node_send_counts AS c (node_id, hour, sent, hard_bounces, soft_bounces,
                                       complaints)
    SELECT * FROM unnest(
        CAST(:node_ids AS uuid[]), CAST(:hours AS timestamptz[]), CAST(:a_sent AS bigint[]),
        CAST(:a_hard_bounces AS bigint[]), CAST(:a_soft_bounces AS bigint[]),
        CAST(:a_complaints AS bigint[]))
    ON CONFLICT (node_id, hour) DO UPDATE SET
        sent = c.sent + excluded.sent,
        hard_bounces = c.hard_bounces + excluded.hard_bounces,
        soft_bounces = c.soft_bounces + excluded.soft_bounces,
        complaints = c.complaints + excluded.complaints
    """
)


def _first_sent_at(series: Sequence[NodeMetrics]) -> int | None:
    stamps = [beat.sent_at for beat in series if beat.sent_at is not None]
    return min(stamps) if stamps else None


def _last_sent_at(series: Sequence[NodeMetrics]) -> int | None:
    stamps = [beat.sent_at for beat in series if beat.sent_at is not None]
    return max(stamps) if stamps else None


def _metric_params(node_id: uuid.UUID, slot: int, beat: NodeMetrics) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "slot": slot,
        "at": beat.at,
        "sent": int(beat.sent),
        "queue_length": int(beat.queue_length),
        "cpu": float(beat.cpu),
        "memory": float(beat.memory),
        "disk": float(beat.disk),
        "bounces": int(beat.bounces),
        "complaints": int(beat.complaints),
        "interval_seconds": float(beat.interval_seconds),
    }


@functools.cache
def _row_type(keys: tuple[str, ...]) -> Any:
    return namedtuple("PlainRow", keys)


def _plain_rows(result: sa.CursorResult[Any]) -> list[Any]:
    """A result's rows as plain named tuples: the same values under the same names, but
    reading a field is a tuple index, where a SQLAlchemy ``Row`` goes through Python code for
    every attribute (~0.3 us: with ~30 columns, most of the cost of reading 10,000 nodes)."""
    make = _row_type(tuple(result.keys()))._make
    return [make(row) for row in result]


#: rows of ``sending_nodes`` fetched at a time by a full load (PostgreSQL: a server-side
#: cursor), each converted to its record before the next batch is fetched
_OPEN_NODES_BATCH = 1000


def _open_nodes(connection: Connection, fleet: str) -> tuple[RecordedNode, ...]:
    """The open nodes of ``fleet``, by name. On SQLite the rows are read as the driver gives
    them and converted by :func:`_sqlite_node` (a 10,000-node fleet: ~0.1 s less than
    SQLAlchemy's type processing, whose dates alone parse a text and then ``.replace`` its
    zone, ~1 us each, 8 per row: issue 14); a row holding anything else than what this store
    writes is read by the typed path again. PostgreSQL's driver converts the values itself."""
    if connection.dialect.name == "sqlite":
        # each row converted as the cursor gives it, not every row first and then every
        # record: the rows of a 10,000-node fleet are never all held next to their records
        # (a transient ~7 MB at each full load, part of the daemon's RSS peak: issue 14)
        try:
            return tuple(
                _sqlite_node(*row)
                for row in connection.exec_driver_sql(_SQLITE_OPEN_NODES, (fleet,))
            )
        except _UnusualValueError:
            pass
    return _open_nodes_typed(connection, fleet)


def _open_nodes_typed(connection: Connection, fleet: str) -> tuple[RecordedNode, ...]:
    """The open nodes of ``fleet`` through SQLAlchemy's types (what the SQLite path equals),
    ``_OPEN_NODES_BATCH`` rows at a time, each converted before the next batch is fetched: on
    PostgreSQL a server-side cursor, so neither the driver's result of every row nor a list
    of them is held next to the records (a 10,000-node load: RSS +29 -> +12 MB; issue 14)."""
    result = connection.execute(
        sa.select(m.SendingNode)
        .where(m.SendingNode.fleet == fleet, m.SendingNode.closed_at.is_(None))
        .order_by(m.SendingNode.name),
        execution_options={"yield_per": _OPEN_NODES_BATCH},
    )
    make = _row_type(tuple(result.keys()))._make
    return tuple(_node_out(make(row)) for row in result)


#: the columns ``_sqlite_node`` takes, in its parameters' order
_SQLITE_NODE_COLUMNS = (
    "id",
    "fleet",
    "name",
    "region",
    "plan",
    "status",
    "provider_id",
    "ip_address",
    "hostname",
    "pool",
    "protected",
    "reputation_score",
    "current_load",
    "created_at",
    "last_heartbeat",
    "rdns_done",
    "warmup_started_at",
    "approximate_cost",
    "observed_generation",
    "status_changed_at",
    "steps",
    "host_key",
    "bundle_version",
    "agent_url",
    "quarantine",
    "maintenance_reason",
    "maintenance_by",
    "maintenance_since",
    "maintenance_ended_at",
    "maintenance_kind",
    "paused_by",
    "slot_failures",
)
_SQLITE_OPEN_NODES = (  # our own column names, the fleet a bound parameter
    f"SELECT {', '.join(_SQLITE_NODE_COLUMNS)} FROM sending_nodes "  # noqa: S608
    "WHERE fleet = ? AND closed_at IS NULL ORDER BY name"
)
_LOWER_HEX_32 = re.compile(r"[0-9a-f]{32}")
_NODE_STATUS_OF = {status.value: status for status in NodeStatus}
#: stored amount (SQLite REAL or INTEGER, as SQLAlchemy's Numeric(12, 4) formats it) -> the
#: amount as read back; a fleet holds few distinct amounts
_SQLITE_MONEY: dict[str, Decimal | None] = {}
_HoldRow = namedtuple(
    "_HoldRow",
    (
        "maintenance_reason",
        "maintenance_by",
        "maintenance_since",
        "maintenance_ended_at",
        "maintenance_kind",
    ),
)


class _UnusualValueError(Exception):
    """A stored value outside the forms this store writes: the typed path reads the rows."""


def _sqlite_uuid(value: object) -> str:
    if type(value) is str and _LOWER_HEX_32.fullmatch(value):
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
    raise _UnusualValueError


def _sqlite_time(value: object) -> datetime | None:
    """A stored datetime as SQLAlchemy reads it (``fromisoformat``, then UTC): the offset
    put in the text makes it aware at once (``.replace(tzinfo=UTC)`` costs ~0.8 us)."""
    if value is None:
        return None
    if type(value) is str and len(value) == 26:  # SQLAlchemy's storage format
        try:
            parsed = datetime.fromisoformat(value + "+00:00")
        except ValueError:
            raise _UnusualValueError from None
        if parsed.tzinfo is UTC:
            return parsed
    raise _UnusualValueError


def _sqlite_money(value: object) -> Decimal | None:
    if value is None:
        return None
    if type(value) is not float and type(value) is not int:
        raise _UnusualValueError
    text = f"{value:.4f}"  # SQLAlchemy's Numeric(12, 4) result processor on SQLite
    try:
        return _SQLITE_MONEY[text]
    except KeyError:
        amount = _SQLITE_MONEY[text] = _money_out(Decimal(text))
        return amount


def _sqlite_json(value: object) -> object:
    if value is None:
        return None
    if type(value) is str:
        return json.loads(value)
    raise _UnusualValueError


def _sqlite_node(
    id_: object,
    fleet: str,
    name: str,
    region: str,
    plan: str,
    status: str,
    provider_id: int | None,
    ip_address: str | None,
    hostname: str | None,
    pool: str | None,
    protected: object,
    reputation_score: int,
    current_load: object,
    created_at: object,
    last_heartbeat: object,
    rdns_done: object,
    warmup_started_at: object,
    approximate_cost: object,
    observed_generation: str | None,
    status_changed_at: object,
    steps: object,
    host_key: object,
    bundle_version: str | None,
    agent_url: str | None,
    quarantine: str | None,
    maintenance_reason: str | None,
    maintenance_by: str | None,
    maintenance_since: object,
    maintenance_ended_at: object,
    maintenance_kind: str | None,
    paused_by: str | None,
    slot_failures: int | None,
) -> RecordedNode:
    """One row of ``_SQLITE_OPEN_NODES`` as the driver gives it -> what :func:`_node_out`
    makes of the typed row (a property test pins the two equal)."""
    node_status = _NODE_STATUS_OF.get(status)
    if node_status is None:
        raise _UnusualValueError
    since = _sqlite_time(maintenance_since)
    ended = _sqlite_time(maintenance_ended_at)
    return RecordedNode(
        id=_sqlite_uuid(id_),
        fleet=fleet,
        name=name,
        region=region,
        plan=plan,
        status=node_status,
        service_id=provider_id,
        ip_address=ip_address,
        hostname=hostname,
        pool=pool,
        protected=bool(protected),
        reputation_score=int(reputation_score),
        current_load=_sqlite_money(current_load) or Decimal(0),
        created_at=_sqlite_time(created_at),
        last_heartbeat=_sqlite_time(last_heartbeat),
        rdns_done=bool(rdns_done),
        warmup_started_at=_sqlite_time(warmup_started_at),
        approximate_cost=_sqlite_money(approximate_cost),
        observed_generation=observed_generation,
        status_changed_at=_sqlite_time(status_changed_at),
        steps=_steps_out(_sqlite_json(steps)),
        host_key=_host_key_out(_sqlite_json(host_key)),
        bundle_version=bundle_version,
        agent_url=agent_url,
        quarantine=quarantine,
        maintenance=None
        if maintenance_reason is None
        else _maintenance_out(
            _HoldRow(maintenance_reason, maintenance_by, since, ended, maintenance_kind)
        ),
        paused_by=_paused_by_out(paused_by),
        slot_failures=int(slot_failures or 0),
    )


def _node_out(node: Any) -> RecordedNode:
    """A ``sending_nodes`` row (selected on a Connection: plain columns) as a value."""
    return RecordedNode(
        id=str(node.id),
        fleet=node.fleet,
        name=node.name,
        region=node.region,
        plan=node.plan,
        status=NodeStatus(node.status),
        service_id=node.provider_id,
        ip_address=node.ip_address,
        hostname=node.hostname,
        pool=node.pool,
        protected=bool(node.protected),
        reputation_score=int(node.reputation_score),
        current_load=_money_out(node.current_load) or Decimal(0),
        created_at=node.created_at,
        last_heartbeat=node.last_heartbeat,
        rdns_done=bool(node.rdns_done),
        warmup_started_at=node.warmup_started_at,
        approximate_cost=_money_out(node.approximate_cost),
        observed_generation=node.observed_generation,
        status_changed_at=node.status_changed_at,
        steps=_steps_out(node.steps),
        host_key=_host_key_out(node.host_key),
        bundle_version=node.bundle_version,
        agent_url=getattr(node, "agent_url", None),
        quarantine=node.quarantine,
        maintenance=_maintenance_out(node),
        paused_by=_paused_by_out(getattr(node, "paused_by", None)),
        slot_failures=int(node.slot_failures or 0),
    )


def _paused_by_out(raw: object) -> PausedBy | None:
    try:
        return PausedBy(str(raw)) if raw is not None else None
    except ValueError:
        return None


def _intent_out(intent: Any) -> RecordedIntent:
    return RecordedIntent(
        id=int(intent.id),
        fleet=intent.fleet,
        kind=intent.kind,
        target=intent.target,
        params={str(k): str(v) for k, v in (intent.params or {}).items()},
        status=IntentStatus(intent.status),
        attempts=int(intent.attempts),
        created_at=intent.created_at,
        updated_at=intent.updated_at,
        error=intent.error,
        epoch=None if intent.epoch is None else int(intent.epoch),
    )


def _cost_out(cost: Any) -> CostConstant:
    return CostConstant(
        key=cost.key,
        scope=cost.scope,
        value=_money_out(cost.value) or Decimal(0),
        set_by=cost.set_by,
        set_at=cost.set_at,
    )


# --- opening -------------------------------------------------------------------------------


def open_store(
    url: str | None = None,
    *,
    upgrade: bool | None = None,
    environ: Mapping[str, str] = os.environ,
    metrics_window: int = DEFAULT_METRICS_WINDOW,
    clock: Callable[[], datetime] = utc_now,
) -> SqlStore:
    """Open the state store.

    The URL is ``url``, else ``RECONCILER_DATABASE_URL``, else ``sqlite:///.reconciler/state.db``
    in the working directory. An empty embedded SQLite database is migrated by itself
    (``upgrade=None``); any other database must be at the migrations' head or
    ``SchemaOutOfDateError`` says to run ``reconcile db upgrade``. ``upgrade=True`` always
    migrates, ``upgrade=False`` never does.
    """
    resolved = resolve_url(url, environ)
    engine = make_engine(resolved)
    try:
        ensure_schema(engine, resolved, upgrade=upgrade)
    except BaseException:
        engine.dispose()
        raise
    return SqlStore(engine, url=resolved, metrics_window=metrics_window, clock=clock)


_PG_PROBES_ONLY_SQL = _psycopg_sql(_PG_PROBES_ONLY)
_PG_TOUCH_NODES_SQL = _psycopg_sql(_PG_TOUCH_NODES, binary=True)
_PG_METRICS_UPSERT_SQL = _psycopg_sql(_PG_METRICS_UPSERT, binary=True)
_PG_SEND_COUNTS_UPSERT_SQL = _psycopg_sql(_PG_SEND_COUNTS_UPSERT, binary=True)
_PG_RECORD_SINGLES_SQL = _psycopg_sql(_PG_RECORD_SINGLES, binary=True)
