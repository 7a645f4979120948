"""SQLAlchemy 2 typed tables of the state store.

These rows never leave ``state/``: the store maps them to ``reconciler.core.fleet`` value types.
Each model is a SQLAlchemy Core ``Table`` (``Model.__table__``) whose columns are the class's
attributes (``m.SendingNode.name``), usable wherever SQLAlchemy takes a table
(``sa.select(m.SendingNode)``): the store never maps rows to objects, so it does not load the
ORM (~0.1 s of a CLI start: issue 14).
Types are portable between SQLite and PostgreSQL: ``Uuid``, ``JSON``, ``Numeric``, timezone-aware
datetimes (stored as UTC), IP addresses as ``String(45)`` validated with :mod:`ipaddress`.

The schema changes only through the Alembic migrations in ``state/migrations``; a test checks that
the migrated schema matches these models on both engines.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, ClassVar, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

#: statuses and states allowed in the text columns (CHECK constraints, mirrored by the enums
#: in ``reconciler.core.fleet``)
NODE_STATUSES = (
    "provisioning",
    "warming",
    "active",
    "paused",
    "maintenance",
    "draining",
    "decommissioned",
    "unhealthy",
)
IP_STATUSES = ("available", "assigned", "warming", "warmed", "degraded", "burned", "quarantined")
REPUTATION_STATES = ("good", "fair", "poor", "critical")
INTENT_STATUSES = ("pending", "done", "failed")
#: the IP life cycle of ``reconciler.core.reputation.IpState``
IP_STATES = ("warming", "warmed", "degraded", "listed", "quarantined")
#: who took a node out of rotation (``reconciler.core.fleet.PausedBy``)
PAUSED_BY = ("reputation", "health", "operator", "quarantine")

NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UtcDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware datetime, always stored as UTC and always read back aware (UTC).

    SQLite has no time zones: values are converted to UTC before they are stored so that
    comparisons in SQL stay correct on both engines. Naive datetimes are refused.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("naive datetime given to the state store; use an aware UTC datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


#: monthly USD amounts: exact decimals (Numeric(12, 4)), never floats
Money = sa.Numeric(12, 4, asdecimal=True)


def _in(column: str, values: tuple[str, ...]) -> str:
    quoted = ", ".join(f"'{v}'" for v in values)
    return f"{column} IN ({quoted})"


class Base:
    """A table declared as a class: its ``sa.Column`` attributes (named after the attribute,
    in their order), then ``__table_args__``, make ``__table__`` in ``metadata``. The class
    stands for its table in SQLAlchemy's constructs (``__clause_element__``)."""

    metadata: ClassVar[sa.MetaData] = sa.MetaData(naming_convention=NAMING_CONVENTION)
    __tablename__: ClassVar[str]
    __table__: ClassVar[sa.Table]
    __table_args__: ClassVar[tuple[Any, ...]] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        columns: list[sa.Column[Any]] = []
        for key, value in vars(cls).items():
            if isinstance(value, sa.Column):
                if value.name is None:
                    value.name = value.key = key
                columns.append(value)
        cls.__table__ = sa.Table(cls.__tablename__, cls.metadata, *columns, *cls.__table_args__)

    @classmethod
    def __clause_element__(cls) -> sa.Table:
        return cls.__table__


_T = TypeVar("_T")


def _column(
    type_: sa.types.TypeEngine[_T], *args: Any, null: bool = False, **kwargs: Any
) -> sa.ColumnClause[_T]:
    """A column named after its attribute: NOT NULL unless ``null`` (what a ``Mapped[X]``
    annotation meant, ``Mapped[X | None]`` for ``null``). Untyped values took the types
    ``datetime`` -> ``UtcDateTime``, ``Decimal`` -> ``Money``, ``uuid.UUID`` -> ``Uuid``,
    ``dict`` -> ``JSON``, ``int`` -> ``Integer``, ``str`` -> ``String``, ``bool`` ->
    ``Boolean``, ``float`` -> ``Float``. Typed as a ``ColumnClause``: SQLAlchemy 2.1 types a
    ``Column`` read off a class as ``Never`` (it is not an ORM mapping), and the store reads
    the columns off the classes."""
    return sa.Column(type_, *args, nullable=null, **kwargs)


class SendingNode(Base):
    """A sending node (one Hostwinds VPS). ``name`` is the srvrname, unique per fleet among
    open records; closed (decommissioned) records are kept for audit."""

    __tablename__ = "sending_nodes"

    id = _column(sa.Uuid(), primary_key=True)
    fleet = _column(sa.String(100))
    name = _column(sa.String(255))
    provider_id = _column(sa.BigInteger(), null=True)
    ip_address = _column(sa.String(45), null=True)
    hostname = _column(sa.String(255), null=True)
    region = _column(sa.String(100))
    plan = _column(sa.String(100))
    pool = _column(sa.String(100), null=True)
    status = _column(sa.String(20))
    reputation_score = _column(sa.Integer(), default=100, server_default=sa.text("100"))
    current_load = _column(Money, default=Decimal(0), server_default=sa.text("0"))
    #: monthly USD, plan + IPs (the breakdown is in vps_instances / smtp_ip_addresses)
    approximate_cost = _column(Money, null=True)
    protected = _column(sa.Boolean(), default=False, server_default=sa.text("false"))
    rdns_done = _column(sa.Boolean(), default=False, server_default=sa.text("false"))
    warmup_started_at = _column(UtcDateTime(), null=True)
    observed_generation = _column(sa.String(128), null=True)
    created_at = _column(UtcDateTime())
    updated_at = _column(UtcDateTime())
    last_heartbeat = _column(UtcDateTime(), null=True)
    #: count of heartbeats recorded; the next metrics slot is ``heartbeat_seq % window``
    heartbeat_seq = _column(sa.Integer(), default=0, server_default=sa.text("0"))
    #: the node's own signed timestamp of its newest recorded beat (Unix seconds): a beat not
    #: newer than this is a replay, refused by every daemon (across replicas and restarts)
    last_beat_sent_at = _column(sa.BigInteger(), null=True)
    status_changed_at = _column(UtcDateTime(), null=True)
    closed_at = _column(UtcDateTime(), null=True)
    #: recorded state of the node's pipeline steps (design §3b): step name ->
    #: {"status": "done"|"failed", "attempts": n, "at": ISO time, "error": text or null};
    #: NULL when no step was recorded yet
    steps = _column(sa.JSON(none_as_null=True), null=True)
    #: the SSH host key pinned on first contact: {"algorithm", "public", "fingerprint"}
    host_key = _column(sa.JSON(none_as_null=True), null=True)
    #: the bootstrap bundle version (sha256 hex) the node finished
    bundle_version = _column(sa.String(64), null=True)
    #: why the node is quarantined (changed host key, drift); NULL when it is not
    quarantine = _column(sa.Text(), null=True)
    #: an operator's maintenance (reconcile node maintenance/resume); never written by upserts
    maintenance_reason = _column(sa.Text(), null=True)
    maintenance_by = _column(sa.String(100), null=True)
    maintenance_since = _column(UtcDateTime(), null=True)
    maintenance_ended_at = _column(UtcDateTime(), null=True)
    #: who took the node out of rotation (reputation, health, operator, quarantine): each
    #: rule brings back only what it took out; NULL while in rotation
    paused_by = _column(sa.String(20), null=True)
    #: the hold's kind: NULL (maintenance), "cordon" or "drain" (reconcile node cordon/drain)
    maintenance_kind = _column(sa.String(16), null=True)
    #: nodes of this node's slot that missed their provisioning deadline before it (written
    #: when the record is created, reset by an operator's release; never by upserts)
    slot_failures = _column(sa.Integer(), default=0, server_default=sa.text("0"))
    # the heartbeat URL the node's agent was bootstrapped with (its bundle's; no secret:
    # user info and query strings are refused before anything is recorded)
    agent_url = _column(sa.String(500), null=True)

    __table_args__ = (
        sa.CheckConstraint(_in("status", NODE_STATUSES), name="status"),
        sa.CheckConstraint(_in("paused_by", PAUSED_BY), name="paused_by"),
        sa.CheckConstraint("reputation_score BETWEEN 0 AND 100", name="reputation_score"),
        # srvrname unique per fleet among open records (closed ones stay for audit)
        sa.Index(
            "uq_sending_nodes_open_name",
            "fleet",
            "name",
            unique=True,
            sqlite_where=sa.text("closed_at IS NULL"),
            postgresql_where=sa.text("closed_at IS NULL"),
        ),
        # Hostwinds serviceid unique when set, among open records
        sa.Index(
            "uq_sending_nodes_open_provider_id",
            "provider_id",
            unique=True,
            sqlite_where=sa.text("provider_id IS NOT NULL AND closed_at IS NULL"),
            postgresql_where=sa.text("provider_id IS NOT NULL AND closed_at IS NULL"),
        ),
        sa.Index("ix_sending_nodes_fleet_status", "fleet", "status"),
    )


class VpsInstance(Base):
    """The VPS behind a node, with its monthly ``approximate_cost`` (plan price)."""

    __tablename__ = "vps_instances"

    id = _column(sa.Uuid(), primary_key=True)
    node_id = _column(
        sa.Uuid(),
        sa.ForeignKey("sending_nodes.id", ondelete="CASCADE"),
        unique=True,
    )
    provider_id = _column(sa.BigInteger(), null=True)
    plan = _column(sa.String(100))
    approximate_cost = _column(Money, null=True)
    created_at = _column(UtcDateTime())
    updated_at = _column(UtcDateTime())


class SmtpIpAddress(Base):
    """A sending IP with its status, reputation state and monthly ``approximate_cost``."""

    __tablename__ = "smtp_ip_addresses"

    id = _column(sa.Uuid(), primary_key=True)
    node_id = _column(sa.Uuid(), sa.ForeignKey("sending_nodes.id", ondelete="SET NULL"), null=True)
    ip_address = _column(sa.String(45))
    pool = _column(sa.String(100), null=True)
    status = _column(sa.String(20))
    reputation_state = _column(sa.String(16), default="good", server_default=sa.text("'good'"))
    approximate_cost = _column(Money, null=True)
    assigned_at = _column(UtcDateTime(), null=True)
    released_at = _column(UtcDateTime(), null=True)
    updated_at = _column(UtcDateTime())

    __table_args__ = (
        sa.CheckConstraint(_in("status", IP_STATUSES), name="status"),
        sa.CheckConstraint(_in("reputation_state", REPUTATION_STATES), name="reputation_state"),
        sa.UniqueConstraint("node_id", "ip_address"),
        sa.Index("ix_smtp_ip_addresses_ip_address", "ip_address"),
    )


class CostConstant(Base):
    """A finance-owned cost value (the table wins over the spec's defaults)."""

    __tablename__ = "cost_constants"

    key = _column(sa.String(100), primary_key=True)
    #: 'global', 'pool:<name>', 'plan:<name>' or 'contract:<name>'
    scope = _column(sa.String(200), primary_key=True)
    value = _column(Money)
    set_by = _column(sa.String(200))
    set_at = _column(UtcDateTime())


class CostConstantHistory(Base):
    """Every change of a cost constant: who, when, old, new."""

    __tablename__ = "cost_constant_history"

    id = _column(sa.Integer(), primary_key=True, autoincrement=True)
    key = _column(sa.String(100))
    scope = _column(sa.String(200))
    old_value = _column(Money, null=True)
    new_value = _column(Money)
    set_by = _column(sa.String(200))
    set_at = _column(UtcDateTime())

    __table_args__ = (sa.Index("ix_cost_constant_history_key_set_at", "key", "set_at"),)


class IpBlocklistEvent(Base):
    """A listing of a node's IP on a DNS blocklist zone (and its delisting)."""

    __tablename__ = "ip_blocklist_events"

    id = _column(sa.Integer(), primary_key=True, autoincrement=True)
    node_id = _column(sa.Uuid(), sa.ForeignKey("sending_nodes.id", ondelete="SET NULL"), null=True)
    ip_address = _column(sa.String(45))
    zone = _column(sa.String(255))
    listed_at = _column(UtcDateTime())
    delisted_at = _column(UtcDateTime(), null=True)
    details = _column(sa.Text(), null=True)
    #: the answer codes, comma-separated (127.0.0.2,127.0.0.10)
    codes = _column(sa.String(200), null=True)
    #: what the listing is (SBL, XBL, PBL...), its severity and action from the spec's map
    listing = _column(sa.String(60), null=True)
    severity = _column(sa.String(10), null=True)
    action = _column(sa.String(10), null=True)
    #: hysteresis: consecutive clean checks so far, and when the first of them was
    clean_checks = _column(sa.Integer(), default=0, server_default=sa.text("0"))
    first_clean_at = _column(UtcDateTime(), null=True)

    __table_args__ = (sa.Index("ix_ip_blocklist_events_ip_address_zone", "ip_address", "zone"),)


class NodeReputation(Base):
    """A node's reputation state: its IP's life-cycle state, a quarantine (bounces or
    complaints over the pause level, until resumed), a reputation pause, a held warmup."""

    __tablename__ = "node_reputation"

    node_id = _column(
        sa.Uuid(),
        sa.ForeignKey("sending_nodes.id", ondelete="CASCADE"),
        primary_key=True,
    )
    ip_state = _column(sa.String(16))
    quarantine = _column(sa.Text(), null=True)
    quarantined_at = _column(UtcDateTime(), null=True)
    #: out of the sending rotation for reputation since
    paused_at = _column(UtcDateTime(), null=True)
    #: rates count only what was sent from here (an operator's resume)
    rates_since = _column(UtcDateTime(), null=True)
    #: the warmup day stopped advancing here
    warmup_held_since = _column(UtcDateTime(), null=True)
    reasons = _column(sa.Text(), null=True)
    updated_at = _column(UtcDateTime())

    __table_args__ = (sa.CheckConstraint(_in("ip_state", IP_STATES), name="ip_state"),)


class NodeSendCount(Base):
    """Per node and hour: delivered, hard and soft bounces, complaints (the rate windows and
    today's warmup allowance)."""

    __tablename__ = "node_send_counts"

    node_id = _column(
        sa.Uuid(),
        sa.ForeignKey("sending_nodes.id", ondelete="CASCADE"),
        primary_key=True,
    )
    hour = _column(UtcDateTime(), primary_key=True)
    sent = _column(sa.BigInteger(), default=0, server_default=sa.text("0"))
    hard_bounces = _column(sa.BigInteger(), default=0, server_default=sa.text("0"))
    soft_bounces = _column(sa.BigInteger(), default=0, server_default=sa.text("0"))
    complaints = _column(sa.BigInteger(), default=0, server_default=sa.text("0"))

    __table_args__ = (sa.Index("ix_node_send_counts_hour", "hour"),)


class DnsblQueryCount(Base):
    """DNSBL queries sent per zone and UTC day (``YYYY-MM-DD``): the daily budget survives
    restarts and is shared by the daemons of one store."""

    __tablename__ = "dnsbl_query_counts"

    zone = _column(sa.String(200), primary_key=True)
    day = _column(sa.String(10), primary_key=True)
    queries = _column(sa.BigInteger(), default=0, server_default=sa.text("0"))


class ComplaintEvent(Base):
    """A complaint event id the sending platform sent (``POST /v1/complaints``): an id seen by
    any daemon of the store is counted once (kept for ``reputation.max_window``)."""

    __tablename__ = "complaint_events"

    fleet = _column(sa.String(100), primary_key=True)
    event_id = _column(sa.String(200), primary_key=True)
    seen_at = _column(UtcDateTime())

    __table_args__ = (sa.Index("ix_complaint_events_seen_at", "seen_at"),)


class Intent(Base):
    """The action journal: a row written before each mutating call. Params never hold secrets."""

    __tablename__ = "intents"

    id = _column(sa.Integer(), primary_key=True, autoincrement=True)
    fleet = _column(sa.String(100))
    kind = _column(sa.String(50))
    target = _column(sa.String(255))
    params = _column(sa.JSON())
    status = _column(sa.String(20))
    attempts = _column(sa.Integer(), default=1, server_default=sa.text("1"))
    error = _column(sa.Text(), null=True)
    epoch = _column(sa.BigInteger(), null=True)
    created_at = _column(UtcDateTime())
    updated_at = _column(UtcDateTime())

    __table_args__ = (
        sa.CheckConstraint(_in("status", INTENT_STATUSES), name="status"),
        sa.Index("ix_intents_fleet_status", "fleet", "status"),
    )


class ReconcileRun(Base):
    """One reconcile run: when, which spec (hash), mode, plan summary, outcome, duration."""

    __tablename__ = "reconcile_runs"

    id = _column(sa.Integer(), primary_key=True, autoincrement=True)
    fleet = _column(sa.String(100))
    started_at = _column(UtcDateTime())
    finished_at = _column(UtcDateTime(), null=True)
    spec_hash = _column(sa.String(128))
    mode = _column(sa.String(20))
    summary = _column(sa.JSON())
    outcome = _column(sa.String(20))
    error = _column(sa.Text(), null=True)
    duration_seconds = _column(sa.Float(), null=True)

    __table_args__ = (sa.Index("ix_reconcile_runs_fleet_started_at", "fleet", "started_at"),)


class NodeCostPeriod(Base):
    """A stretch of time during which a billed node (one with a service id) had one monthly
    cost, plan and pool: the recorded history cost reports and invoice checks prorate
    (docs/costs.md). A new row opens when the recorded cost, plan or pool changes; the open
    row (``ended_at`` NULL) ends then, or when the node is closed."""

    __tablename__ = "node_cost_periods"

    id = _column(sa.Integer(), primary_key=True, autoincrement=True)
    fleet = _column(sa.String(100))
    node_id = _column(sa.Uuid(), sa.ForeignKey("sending_nodes.id", ondelete="CASCADE"))
    node = _column(sa.String(255))
    provider_id = _column(sa.BigInteger(), null=True)
    region = _column(sa.String(100))
    pool = _column(sa.String(100), null=True)
    plan = _column(sa.String(100))
    #: monthly USD, plan + IPs, and the IP part of it
    monthly_cost = _column(Money)
    ip_cost = _column(Money, null=True)
    started_at = _column(UtcDateTime())
    ended_at = _column(UtcDateTime(), null=True)

    __table_args__ = (
        sa.Index("ix_node_cost_periods_fleet_started_at", "fleet", "started_at"),
        sa.Index("ix_node_cost_periods_node_id", "node_id"),
    )


class InvoiceFinding(Base):
    """One result of ``reconcile costs reconcile --invoices FILE``, kept with its run
    (``reconcile_runs``, mode ``invoices``): drift, an invoice for a server the store does not
    know, or a node without an invoice."""

    __tablename__ = "invoice_findings"

    id = _column(sa.Integer(), primary_key=True, autoincrement=True)
    run_id = _column(sa.Integer(), sa.ForeignKey("reconcile_runs.id", ondelete="CASCADE"))
    kind = _column(sa.String(20))
    month = _column(sa.String(7))
    service_id = _column(sa.BigInteger(), null=True)
    node = _column(sa.String(255), null=True)
    invoiced = _column(Money, null=True)
    expected = _column(Money, null=True)
    detail = _column(sa.Text())

    __table_args__ = (
        sa.CheckConstraint("kind IN ('drift', 'unknown_service', 'no_invoice', 'ok')", name="kind"),
        sa.Index("ix_invoice_findings_run_id", "run_id"),
    )


class NodeMetric(Base):
    """A bounded window of heartbeat figures: ``window`` slots per node, overwritten in place
    (slot = heartbeat number modulo the window), so the table never grows past
    nodes x window rows."""

    __tablename__ = "node_metrics"

    node_id = _column(
        sa.Uuid(),
        sa.ForeignKey("sending_nodes.id", ondelete="CASCADE"),
        primary_key=True,
    )
    slot = _column(sa.SmallInteger(), primary_key=True, autoincrement=False)
    at = _column(UtcDateTime())
    sent = _column(sa.Integer())
    queue_length = _column(sa.Integer())
    cpu = _column(sa.Float())
    memory = _column(sa.Float())
    disk = _column(sa.Float())
    bounces = _column(sa.Integer())
    complaints = _column(sa.Integer())
    interval_seconds = _column(sa.Float())
    # no index on ``at``: every beat rewrites it, and an index on it would make no update
    # in-place (HOT); nothing scans it (migration 0010)


class Leadership(Base):
    """The daemon leadership record per fleet: holder and the fencing epoch."""

    __tablename__ = "leadership"

    name = _column(sa.String(100), primary_key=True)
    holder = _column(sa.String(255), null=True)
    epoch = _column(sa.BigInteger(), default=0, server_default=sa.text("0"))
    acquired_at = _column(UtcDateTime(), null=True)
    lease_expires_at = _column(UtcDateTime(), null=True)


class WriterLock(Base):
    """The CLI/engine writer lock: owner, expiry and a monotonically increasing epoch."""

    __tablename__ = "locks"

    name = _column(sa.String(100), primary_key=True)
    owner = _column(sa.String(255), null=True)
    epoch = _column(sa.BigInteger(), default=0, server_default=sa.text("0"))
    acquired_at = _column(UtcDateTime(), null=True)
    expires_at = _column(UtcDateTime(), null=True)
