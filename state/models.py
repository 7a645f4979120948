"""SQLAlchemy 2 typed models of the state store.

These rows never leave ``state/``: the store maps them to ``reconciler.core.fleet`` value types.
Types are portable between SQLite and PostgreSQL: ``Uuid``, ``JSON``, ``Numeric``, timezone-aware
datetimes (stored as UTC), IP addresses as ``String(45)`` validated with :mod:`ipaddress`.

The schema changes only through the Alembic migrations in ``state/migrations``; a test checks that
the migrated schema matches these models on both engines.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

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


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: dict[Any, Any] = {  # noqa: RUF012 - SQLAlchemy's documented idiom
        datetime: UtcDateTime(),
        Decimal: Money,
        uuid.UUID: sa.Uuid(),
        dict[str, Any]: sa.JSON(),
    }


class SendingNode(Base):
    """A sending node (one Hostwinds VPS). ``name`` is the srvrname, unique per fleet among
    open records; closed (decommissioned) records are kept for audit."""

    __tablename__ = "sending_nodes"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    fleet: Mapped[str] = mapped_column(sa.String(100))
    name: Mapped[str] = mapped_column(sa.String(255))
    provider_id: Mapped[int | None] = mapped_column(sa.BigInteger())
    ip_address: Mapped[str | None] = mapped_column(sa.String(45))
    hostname: Mapped[str | None] = mapped_column(sa.String(255))
    region: Mapped[str] = mapped_column(sa.String(100))
    plan: Mapped[str] = mapped_column(sa.String(100))
    pool: Mapped[str | None] = mapped_column(sa.String(100))
    status: Mapped[str] = mapped_column(sa.String(20))
    reputation_score: Mapped[int] = mapped_column(default=100, server_default=sa.text("100"))
    current_load: Mapped[Decimal] = mapped_column(default=Decimal(0), server_default=sa.text("0"))
    #: monthly USD, plan + IPs (the breakdown is in vps_instances / smtp_ip_addresses)
    approximate_cost: Mapped[Decimal | None]
    protected: Mapped[bool] = mapped_column(default=False, server_default=sa.text("false"))
    rdns_done: Mapped[bool] = mapped_column(default=False, server_default=sa.text("false"))
    warmup_started_at: Mapped[datetime | None]
    observed_generation: Mapped[str | None] = mapped_column(sa.String(128))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    last_heartbeat: Mapped[datetime | None]
    #: count of heartbeats recorded; the next metrics slot is ``heartbeat_seq % window``
    heartbeat_seq: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    #: the node's own signed timestamp of its newest recorded beat (Unix seconds): a beat not
    #: newer than this is a replay, refused by every daemon (across replicas and restarts)
    last_beat_sent_at: Mapped[int | None] = mapped_column(sa.BigInteger())
    status_changed_at: Mapped[datetime | None]
    closed_at: Mapped[datetime | None]
    #: recorded state of the node's pipeline steps (design §3b): step name ->
    #: {"status": "done"|"failed", "attempts": n, "at": ISO time, "error": text or null};
    #: NULL when no step was recorded yet
    steps: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))
    #: the SSH host key pinned on first contact: {"algorithm", "public", "fingerprint"}
    host_key: Mapped[dict[str, Any] | None] = mapped_column(sa.JSON(none_as_null=True))
    #: the bootstrap bundle version (sha256 hex) the node finished
    bundle_version: Mapped[str | None] = mapped_column(sa.String(64))
    #: why the node is quarantined (changed host key, drift); NULL when it is not
    quarantine: Mapped[str | None] = mapped_column(sa.Text())
    #: an operator's maintenance (reconcile node maintenance/resume); never written by upserts
    maintenance_reason: Mapped[str | None] = mapped_column(sa.Text())
    maintenance_by: Mapped[str | None] = mapped_column(sa.String(100))
    maintenance_since: Mapped[datetime | None]
    maintenance_ended_at: Mapped[datetime | None]
    #: who took the node out of rotation (reputation, health, operator, quarantine): each
    #: rule brings back only what it took out; NULL while in rotation
    paused_by: Mapped[str | None] = mapped_column(sa.String(20))
    #: the hold's kind: NULL (maintenance), "cordon" or "drain" (reconcile node cordon/drain)
    maintenance_kind: Mapped[str | None] = mapped_column(sa.String(16))
    #: nodes of this node's slot that missed their provisioning deadline before it (written
    #: when the record is created, reset by an operator's release; never by upserts)
    slot_failures: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    # the heartbeat URL the node's agent was bootstrapped with (its bundle's; no secret:
    # user info and query strings are refused before anything is recorded)
    agent_url: Mapped[str | None] = mapped_column(sa.String(500))

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

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    node_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("sending_nodes.id", ondelete="CASCADE"), unique=True
    )
    provider_id: Mapped[int | None] = mapped_column(sa.BigInteger())
    plan: Mapped[str] = mapped_column(sa.String(100))
    approximate_cost: Mapped[Decimal | None]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SmtpIpAddress(Base):
    """A sending IP with its status, reputation state and monthly ``approximate_cost``."""

    __tablename__ = "smtp_ip_addresses"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    node_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("sending_nodes.id", ondelete="SET NULL")
    )
    ip_address: Mapped[str] = mapped_column(sa.String(45))
    pool: Mapped[str | None] = mapped_column(sa.String(100))
    status: Mapped[str] = mapped_column(sa.String(20))
    reputation_state: Mapped[str] = mapped_column(
        sa.String(16), default="good", server_default=sa.text("'good'")
    )
    approximate_cost: Mapped[Decimal | None]
    assigned_at: Mapped[datetime | None]
    released_at: Mapped[datetime | None]
    updated_at: Mapped[datetime]

    __table_args__ = (
        sa.CheckConstraint(_in("status", IP_STATUSES), name="status"),
        sa.CheckConstraint(_in("reputation_state", REPUTATION_STATES), name="reputation_state"),
        sa.UniqueConstraint("node_id", "ip_address"),
        sa.Index("ix_smtp_ip_addresses_ip_address", "ip_address"),
    )


class CostConstant(Base):
    """A finance-owned cost value (the table wins over the spec's defaults)."""

    __tablename__ = "cost_constants"

    key: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    #: 'global', 'pool:<name>', 'plan:<name>' or 'contract:<name>'
    scope: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    value: Mapped[Decimal]
    set_by: Mapped[str] = mapped_column(sa.String(200))
    set_at: Mapped[datetime]


class CostConstantHistory(Base):
    """Every change of a cost constant: who, when, old, new."""

    __tablename__ = "cost_constant_history"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(sa.String(100))
    scope: Mapped[str] = mapped_column(sa.String(200))
    old_value: Mapped[Decimal | None]
    new_value: Mapped[Decimal]
    set_by: Mapped[str] = mapped_column(sa.String(200))
    set_at: Mapped[datetime]

    __table_args__ = (sa.Index("ix_cost_constant_history_key_set_at", "key", "set_at"),)


class IpBlocklistEvent(Base):
    """A listing of a node's IP on a DNS blocklist zone (and its delisting)."""

    __tablename__ = "ip_blocklist_events"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    node_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("sending_nodes.id", ondelete="SET NULL")
    )
    ip_address: Mapped[str] = mapped_column(sa.String(45))
    zone: Mapped[str] = mapped_column(sa.String(255))
    listed_at: Mapped[datetime]
    delisted_at: Mapped[datetime | None]
    details: Mapped[str | None] = mapped_column(sa.Text())
    #: the answer codes, comma-separated (127.0.0.2,127.0.0.10)
    codes: Mapped[str | None] = mapped_column(sa.String(200))
    #: what the listing is (SBL, XBL, PBL...), its severity and action from the spec's map
    listing: Mapped[str | None] = mapped_column(sa.String(60))
    severity: Mapped[str | None] = mapped_column(sa.String(10))
    action: Mapped[str | None] = mapped_column(sa.String(10))
    #: hysteresis: consecutive clean checks so far, and when the first of them was
    clean_checks: Mapped[int] = mapped_column(default=0, server_default=sa.text("0"))
    first_clean_at: Mapped[datetime | None]

    __table_args__ = (sa.Index("ix_ip_blocklist_events_ip_address_zone", "ip_address", "zone"),)


class NodeReputation(Base):
    """A node's reputation state: its IP's life-cycle state, a quarantine (bounces or
    complaints over the pause level, until resumed), a reputation pause, a held warmup."""

    __tablename__ = "node_reputation"

    node_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("sending_nodes.id", ondelete="CASCADE"), primary_key=True
    )
    ip_state: Mapped[str] = mapped_column(sa.String(16))
    quarantine: Mapped[str | None] = mapped_column(sa.Text())
    quarantined_at: Mapped[datetime | None]
    #: out of the sending rotation for reputation since
    paused_at: Mapped[datetime | None]
    #: rates count only what was sent from here (an operator's resume)
    rates_since: Mapped[datetime | None]
    #: the warmup day stopped advancing here
    warmup_held_since: Mapped[datetime | None]
    reasons: Mapped[str | None] = mapped_column(sa.Text())
    updated_at: Mapped[datetime]

    __table_args__ = (sa.CheckConstraint(_in("ip_state", IP_STATES), name="ip_state"),)


class NodeSendCount(Base):
    """Per node and hour: delivered, hard and soft bounces, complaints (the rate windows and
    today's warmup allowance)."""

    __tablename__ = "node_send_counts"

    node_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("sending_nodes.id", ondelete="CASCADE"), primary_key=True
    )
    hour: Mapped[datetime] = mapped_column(primary_key=True)
    sent: Mapped[int] = mapped_column(sa.BigInteger(), default=0, server_default=sa.text("0"))
    hard_bounces: Mapped[int] = mapped_column(
        sa.BigInteger(), default=0, server_default=sa.text("0")
    )
    soft_bounces: Mapped[int] = mapped_column(
        sa.BigInteger(), default=0, server_default=sa.text("0")
    )
    complaints: Mapped[int] = mapped_column(sa.BigInteger(), default=0, server_default=sa.text("0"))

    __table_args__ = (sa.Index("ix_node_send_counts_hour", "hour"),)


class DnsblQueryCount(Base):
    """DNSBL queries sent per zone and UTC day (``YYYY-MM-DD``): the daily budget survives
    restarts and is shared by the daemons of one store."""

    __tablename__ = "dnsbl_query_counts"

    zone: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    day: Mapped[str] = mapped_column(sa.String(10), primary_key=True)
    queries: Mapped[int] = mapped_column(sa.BigInteger(), default=0, server_default=sa.text("0"))


class ComplaintEvent(Base):
    """A complaint event id the sending platform sent (``POST /v1/complaints``): an id seen by
    any daemon of the store is counted once (kept for ``reputation.max_window``)."""

    __tablename__ = "complaint_events"

    fleet: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    event_id: Mapped[str] = mapped_column(sa.String(200), primary_key=True)
    seen_at: Mapped[datetime]

    __table_args__ = (sa.Index("ix_complaint_events_seen_at", "seen_at"),)


class Intent(Base):
    """The action journal: a row written before each mutating call. Params never hold secrets."""

    __tablename__ = "intents"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    fleet: Mapped[str] = mapped_column(sa.String(100))
    kind: Mapped[str] = mapped_column(sa.String(50))
    target: Mapped[str] = mapped_column(sa.String(255))
    params: Mapped[dict[str, Any]]
    status: Mapped[str] = mapped_column(sa.String(20))
    attempts: Mapped[int] = mapped_column(default=1, server_default=sa.text("1"))
    error: Mapped[str | None] = mapped_column(sa.Text())
    epoch: Mapped[int | None] = mapped_column(sa.BigInteger())
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]

    __table_args__ = (
        sa.CheckConstraint(_in("status", INTENT_STATUSES), name="status"),
        sa.Index("ix_intents_fleet_status", "fleet", "status"),
    )


class ReconcileRun(Base):
    """One reconcile run: when, which spec (hash), mode, plan summary, outcome, duration."""

    __tablename__ = "reconcile_runs"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    fleet: Mapped[str] = mapped_column(sa.String(100))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    spec_hash: Mapped[str] = mapped_column(sa.String(128))
    mode: Mapped[str] = mapped_column(sa.String(20))
    summary: Mapped[dict[str, Any]]
    outcome: Mapped[str] = mapped_column(sa.String(20))
    error: Mapped[str | None] = mapped_column(sa.Text())
    duration_seconds: Mapped[float | None] = mapped_column(sa.Float())

    __table_args__ = (sa.Index("ix_reconcile_runs_fleet_started_at", "fleet", "started_at"),)


class NodeCostPeriod(Base):
    """A stretch of time during which a billed node (one with a service id) had one monthly
    cost, plan and pool: the recorded history cost reports and invoice checks prorate
    (docs/costs.md). A new row opens when the recorded cost, plan or pool changes; the open
    row (``ended_at`` NULL) ends then, or when the node is closed."""

    __tablename__ = "node_cost_periods"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    fleet: Mapped[str] = mapped_column(sa.String(100))
    node_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("sending_nodes.id", ondelete="CASCADE")
    )
    node: Mapped[str] = mapped_column(sa.String(255))
    provider_id: Mapped[int | None] = mapped_column(sa.BigInteger())
    region: Mapped[str] = mapped_column(sa.String(100))
    pool: Mapped[str | None] = mapped_column(sa.String(100))
    plan: Mapped[str] = mapped_column(sa.String(100))
    #: monthly USD, plan + IPs, and the IP part of it
    monthly_cost: Mapped[Decimal]
    ip_cost: Mapped[Decimal | None]
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime | None]

    __table_args__ = (
        sa.Index("ix_node_cost_periods_fleet_started_at", "fleet", "started_at"),
        sa.Index("ix_node_cost_periods_node_id", "node_id"),
    )


class InvoiceFinding(Base):
    """One result of ``reconcile costs reconcile --invoices FILE``, kept with its run
    (``reconcile_runs``, mode ``invoices``): drift, an invoice for a server the store does not
    know, or a node without an invoice."""

    __tablename__ = "invoice_findings"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(sa.ForeignKey("reconcile_runs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(sa.String(20))
    month: Mapped[str] = mapped_column(sa.String(7))
    service_id: Mapped[int | None] = mapped_column(sa.BigInteger())
    node: Mapped[str | None] = mapped_column(sa.String(255))
    invoiced: Mapped[Decimal | None]
    expected: Mapped[Decimal | None]
    detail: Mapped[str] = mapped_column(sa.Text())

    __table_args__ = (
        sa.CheckConstraint("kind IN ('drift', 'unknown_service', 'no_invoice', 'ok')", name="kind"),
        sa.Index("ix_invoice_findings_run_id", "run_id"),
    )


class NodeMetric(Base):
    """A bounded window of heartbeat figures: ``window`` slots per node, overwritten in place
    (slot = heartbeat number modulo the window), so the table never grows past
    nodes x window rows."""

    __tablename__ = "node_metrics"

    node_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("sending_nodes.id", ondelete="CASCADE"), primary_key=True
    )
    slot: Mapped[int] = mapped_column(sa.SmallInteger(), primary_key=True, autoincrement=False)
    at: Mapped[datetime]
    sent: Mapped[int]
    queue_length: Mapped[int]
    cpu: Mapped[float] = mapped_column(sa.Float())
    memory: Mapped[float] = mapped_column(sa.Float())
    disk: Mapped[float] = mapped_column(sa.Float())
    bounces: Mapped[int]
    complaints: Mapped[int]
    interval_seconds: Mapped[float] = mapped_column(sa.Float())
    # no index on ``at``: every beat rewrites it, and an index on it would make no update
    # in-place (HOT); nothing scans it (migration 0010)


class Leadership(Base):
    """The daemon leadership record per fleet: holder and the fencing epoch."""

    __tablename__ = "leadership"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    holder: Mapped[str | None] = mapped_column(sa.String(255))
    epoch: Mapped[int] = mapped_column(sa.BigInteger(), default=0, server_default=sa.text("0"))
    acquired_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]


class WriterLock(Base):
    """The CLI/engine writer lock: owner, expiry and a monotonically increasing epoch."""

    __tablename__ = "locks"

    name: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    owner: Mapped[str | None] = mapped_column(sa.String(255))
    epoch: Mapped[int] = mapped_column(sa.BigInteger(), default=0, server_default=sa.text("0"))
    acquired_at: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
