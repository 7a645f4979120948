"""Initial schema: every table of the state store (downgrade drops everything).

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-23 18:16:06.020174
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001_initial"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "cost_constant_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("old_value", sa.Numeric(precision=12, scale=4), nullable=True),
        sa.Column("new_value", sa.Numeric(precision=12, scale=4), nullable=False),
        sa.Column("set_by", sa.String(length=200), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cost_constant_history")),
    )
    op.create_index(
        "ix_cost_constant_history_key_set_at",
        "cost_constant_history",
        ["key", "set_at"],
        unique=False,
    )
    op.create_table(
        "cost_constants",
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("scope", sa.String(length=200), nullable=False),
        sa.Column("value", sa.Numeric(precision=12, scale=4), nullable=False),
        sa.Column("set_by", sa.String(length=200), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("key", "scope", name=op.f("pk_cost_constants")),
    )
    op.create_table(
        "intents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fleet", sa.String(length=100), nullable=False),
        sa.Column("kind", sa.String(length=50), nullable=False),
        sa.Column("target", sa.String(length=255), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("epoch", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'done', 'failed')", name=op.f("ck_intents_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_intents")),
    )
    op.create_index("ix_intents_fleet_status", "intents", ["fleet", "status"], unique=False)
    op.create_table(
        "leadership",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("holder", sa.String(length=255), nullable=True),
        sa.Column("epoch", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_leadership")),
    )
    op.create_table(
        "locks",
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("owner", sa.String(length=255), nullable=True),
        sa.Column("epoch", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_locks")),
    )
    op.create_table(
        "reconcile_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fleet", sa.String(length=100), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("spec_hash", sa.String(length=128), nullable=False),
        sa.Column("mode", sa.String(length=20), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reconcile_runs")),
    )
    op.create_index(
        "ix_reconcile_runs_fleet_started_at",
        "reconcile_runs",
        ["fleet", "started_at"],
        unique=False,
    )
    op.create_table(
        "sending_nodes",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("fleet", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("provider_id", sa.BigInteger(), nullable=True),
        sa.Column("ip_address", sa.String(length=45), nullable=True),
        sa.Column("hostname", sa.String(length=255), nullable=True),
        sa.Column("region", sa.String(length=100), nullable=False),
        sa.Column("plan", sa.String(length=100), nullable=False),
        sa.Column("pool", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("reputation_score", sa.Integer(), server_default=sa.text("100"), nullable=False),
        sa.Column(
            "current_load",
            sa.Numeric(precision=12, scale=4),
            server_default=sa.text("0"),
            nullable=False,
        ),
        sa.Column("approximate_cost", sa.Numeric(precision=12, scale=4), nullable=True),
        sa.Column("protected", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("rdns_done", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("warmup_started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("observed_generation", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_heartbeat", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_seq", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("status_changed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('provisioning', 'warming', 'active', 'paused', 'maintenance', "
            "'draining', 'decommissioned', 'unhealthy')",
            name=op.f("ck_sending_nodes_status"),
        ),
        sa.CheckConstraint(
            "reputation_score BETWEEN 0 AND 100", name=op.f("ck_sending_nodes_reputation_score")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sending_nodes")),
    )
    op.create_index(
        "ix_sending_nodes_fleet_status", "sending_nodes", ["fleet", "status"], unique=False
    )
    op.create_index(
        "uq_sending_nodes_open_name",
        "sending_nodes",
        ["fleet", "name"],
        unique=True,
        sqlite_where=sa.text("closed_at IS NULL"),
        postgresql_where=sa.text("closed_at IS NULL"),
    )
    op.create_index(
        "uq_sending_nodes_open_provider_id",
        "sending_nodes",
        ["provider_id"],
        unique=True,
        sqlite_where=sa.text("provider_id IS NOT NULL AND closed_at IS NULL"),
        postgresql_where=sa.text("provider_id IS NOT NULL AND closed_at IS NULL"),
    )
    op.create_table(
        "ip_blocklist_events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("node_id", sa.Uuid(), nullable=True),
        sa.Column("ip_address", sa.String(length=45), nullable=False),
        sa.Column("zone", sa.String(length=255), nullable=False),
        sa.Column("listed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delisted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("details", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["sending_nodes.id"],
            name=op.f("fk_ip_blocklist_events_node_id_sending_nodes"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ip_blocklist_events")),
    )
    op.create_index(
        "ix_ip_blocklist_events_ip_address_zone",
        "ip_blocklist_events",
        ["ip_address", "zone"],
        unique=False,
    )
    op.create_table(
        "node_metrics",
        sa.Column("node_id", sa.Uuid(), nullable=False),
        sa.Column("slot", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("queue_length", sa.Integer(), nullable=False),
        sa.Column("cpu", sa.Float(), nullable=False),
        sa.Column("memory", sa.Float(), nullable=False),
        sa.Column("disk", sa.Float(), nullable=False),
        sa.Column("bounces", sa.Integer(), nullable=False),
        sa.Column("complaints", sa.Integer(), nullable=False),
        sa.Column("interval_seconds", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["sending_nodes.id"],
            name=op.f("fk_node_metrics_node_id_sending_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("node_id", "slot", name=op.f("pk_node_metrics")),
    )
    op.create_index("ix_node_metrics_at", "node_metrics", ["at"], unique=False)
    op.create_table(
        "smtp_ip_addresses",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("node_id", sa.Uuid(), nullable=True),
        sa.Column("ip_address", sa.String(length=45), nullable=False),
        sa.Column("pool", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column(
            "reputation_state",
            sa.String(length=16),
            server_default=sa.text("'good'"),
            nullable=False,
        ),
        sa.Column("approximate_cost", sa.Numeric(precision=12, scale=4), nullable=True),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "reputation_state IN ('good', 'fair', 'poor', 'critical')",
            name=op.f("ck_smtp_ip_addresses_reputation_state"),
        ),
        sa.CheckConstraint(
            "status IN ('available', 'assigned', 'warming', 'warmed', 'degraded', 'burned', "
            "'quarantined')",
            name=op.f("ck_smtp_ip_addresses_status"),
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["sending_nodes.id"],
            name=op.f("fk_smtp_ip_addresses_node_id_sending_nodes"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_smtp_ip_addresses")),
        sa.UniqueConstraint(
            "node_id", "ip_address", name=op.f("uq_smtp_ip_addresses_node_id_ip_address")
        ),
    )
    op.create_index(
        "ix_smtp_ip_addresses_ip_address", "smtp_ip_addresses", ["ip_address"], unique=False
    )
    op.create_table(
        "vps_instances",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("node_id", sa.Uuid(), nullable=False),
        sa.Column("provider_id", sa.BigInteger(), nullable=True),
        sa.Column("plan", sa.String(length=100), nullable=False),
        sa.Column("approximate_cost", sa.Numeric(precision=12, scale=4), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["sending_nodes.id"],
            name=op.f("fk_vps_instances_node_id_sending_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_vps_instances")),
        sa.UniqueConstraint("node_id", name=op.f("uq_vps_instances_node_id")),
    )


def downgrade() -> None:

    op.drop_table("vps_instances")
    op.drop_index("ix_smtp_ip_addresses_ip_address", table_name="smtp_ip_addresses")
    op.drop_table("smtp_ip_addresses")
    op.drop_index("ix_node_metrics_at", table_name="node_metrics")
    op.drop_table("node_metrics")
    op.drop_index("ix_ip_blocklist_events_ip_address_zone", table_name="ip_blocklist_events")
    op.drop_table("ip_blocklist_events")
    op.drop_index(
        "uq_sending_nodes_open_provider_id",
        table_name="sending_nodes",
        sqlite_where=sa.text("provider_id IS NOT NULL AND closed_at IS NULL"),
        postgresql_where=sa.text("provider_id IS NOT NULL AND closed_at IS NULL"),
    )
    op.drop_index(
        "uq_sending_nodes_open_name",
        table_name="sending_nodes",
        sqlite_where=sa.text("closed_at IS NULL"),
        postgresql_where=sa.text("closed_at IS NULL"),
    )
    op.drop_index("ix_sending_nodes_fleet_status", table_name="sending_nodes")
    op.drop_table("sending_nodes")
    op.drop_index("ix_reconcile_runs_fleet_started_at", table_name="reconcile_runs")
    op.drop_table("reconcile_runs")
    op.drop_table("locks")
    op.drop_table("leadership")
    op.drop_index("ix_intents_fleet_status", table_name="intents")
    op.drop_table("intents")
    op.drop_table("cost_constants")
    op.drop_index("ix_cost_constant_history_key_set_at", table_name="cost_constant_history")
    op.drop_table("cost_constant_history")
