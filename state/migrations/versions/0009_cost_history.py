"""Cost history and invoice checks (docs/costs.md): node cost periods (what each billed node
cost, when) and the findings of `reconcile costs reconcile --invoices FILE`, kept with its run.

Revision ID: 0009_cost_history
Revises: 0008_slot_failures
Create Date: 2026-12-01 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_cost_history"
down_revision: str | None = "0008_slot_failures"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "node_cost_periods",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("fleet", sa.String(length=100), nullable=False),
        sa.Column("node_id", sa.Uuid(), nullable=False),
        sa.Column("node", sa.String(length=255), nullable=False),
        sa.Column("provider_id", sa.BigInteger(), nullable=True),
        sa.Column("region", sa.String(length=100), nullable=False),
        sa.Column("pool", sa.String(length=100), nullable=True),
        sa.Column("plan", sa.String(length=100), nullable=False),
        sa.Column("monthly_cost", sa.Numeric(precision=12, scale=4), nullable=False),
        sa.Column("ip_cost", sa.Numeric(precision=12, scale=4), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["sending_nodes.id"],
            name=op.f("fk_node_cost_periods_node_id_sending_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_cost_periods")),
    )
    op.create_index(
        "ix_node_cost_periods_fleet_started_at",
        "node_cost_periods",
        ["fleet", "started_at"],
        unique=False,
    )
    op.create_index("ix_node_cost_periods_node_id", "node_cost_periods", ["node_id"], unique=False)
    op.create_table(
        "invoice_findings",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("run_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("month", sa.String(length=7), nullable=False),
        sa.Column("service_id", sa.BigInteger(), nullable=True),
        sa.Column("node", sa.String(length=255), nullable=True),
        sa.Column("invoiced", sa.Numeric(precision=12, scale=4), nullable=True),
        sa.Column("expected", sa.Numeric(precision=12, scale=4), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('drift', 'unknown_service', 'no_invoice', 'ok')",
            name=op.f("ck_invoice_findings_kind"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["reconcile_runs.id"],
            name=op.f("fk_invoice_findings_run_id_reconcile_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_invoice_findings")),
    )
    op.create_index("ix_invoice_findings_run_id", "invoice_findings", ["run_id"], unique=False)
    # the history starts with what is recorded: each billed node (with a service id and a
    # cost) from its creation to its closing, at its current cost
    op.execute(
        "INSERT INTO node_cost_periods (fleet, node_id, node, provider_id, region, pool, plan, "
        "monthly_cost, ip_cost, started_at, ended_at) "
        "SELECT fleet, id, name, provider_id, region, pool, plan, approximate_cost, NULL, "
        "created_at, closed_at FROM sending_nodes "
        "WHERE provider_id IS NOT NULL AND approximate_cost IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_invoice_findings_run_id", table_name="invoice_findings")
    op.drop_table("invoice_findings")
    op.drop_index("ix_node_cost_periods_node_id", table_name="node_cost_periods")
    op.drop_index("ix_node_cost_periods_fleet_started_at", table_name="node_cost_periods")
    op.drop_table("node_cost_periods")
