"""Reputation: listing details and hysteresis on ip_blocklist_events; node_reputation,
node_send_counts (hourly delivered / bounces / complaints) and dnsbl_query_counts.

Revision ID: 0003_reputation
Revises: 0002_node_steps
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_reputation"
down_revision: str | None = "0002_node_steps"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("ip_blocklist_events") as batch:
        batch.add_column(sa.Column("codes", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("listing", sa.String(length=60), nullable=True))
        batch.add_column(sa.Column("severity", sa.String(length=10), nullable=True))
        batch.add_column(sa.Column("action", sa.String(length=10), nullable=True))
        batch.add_column(
            sa.Column("clean_checks", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch.add_column(sa.Column("first_clean_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table(
        "node_reputation",
        sa.Column("node_id", sa.Uuid(), nullable=False),
        sa.Column("ip_state", sa.String(length=16), nullable=False),
        sa.Column("quarantine", sa.Text(), nullable=True),
        sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rates_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("warmup_held_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reasons", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "ip_state IN ('warming', 'warmed', 'degraded', 'listed', 'quarantined')",
            name=op.f("ck_node_reputation_ip_state"),
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["sending_nodes.id"],
            name=op.f("fk_node_reputation_node_id_sending_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("node_id", name=op.f("pk_node_reputation")),
    )
    op.create_table(
        "node_send_counts",
        sa.Column("node_id", sa.Uuid(), nullable=False),
        sa.Column("hour", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("hard_bounces", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("soft_bounces", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("complaints", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["sending_nodes.id"],
            name=op.f("fk_node_send_counts_node_id_sending_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("node_id", "hour", name=op.f("pk_node_send_counts")),
    )
    op.create_index("ix_node_send_counts_hour", "node_send_counts", ["hour"], unique=False)
    op.create_table(
        "dnsbl_query_counts",
        sa.Column("zone", sa.String(length=200), nullable=False),
        sa.Column("day", sa.String(length=10), nullable=False),
        sa.Column("queries", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("zone", "day", name=op.f("pk_dnsbl_query_counts")),
    )


def downgrade() -> None:
    op.drop_table("dnsbl_query_counts")
    op.drop_index("ix_node_send_counts_hour", table_name="node_send_counts")
    op.drop_table("node_send_counts")
    op.drop_table("node_reputation")
    with op.batch_alter_table("ip_blocklist_events") as batch:
        batch.drop_column("first_clean_at")
        batch.drop_column("clean_checks")
        batch.drop_column("action")
        batch.drop_column("severity")
        batch.drop_column("listing")
        batch.drop_column("codes")
