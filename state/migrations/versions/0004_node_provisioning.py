"""Provisioning state of a node: pinned SSH host key, bundle version, quarantine, and an
operator's maintenance (docs/provisioning.md).

Revision ID: 0004_node_provisioning
Revises: 0003_reputation
Create Date: 2026-12-01 03:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_node_provisioning"
down_revision: str | None = "0003_reputation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sending_nodes") as batch:
        batch.add_column(sa.Column("host_key", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("bundle_version", sa.String(64), nullable=True))
        batch.add_column(sa.Column("quarantine", sa.Text(), nullable=True))
        batch.add_column(sa.Column("maintenance_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("maintenance_by", sa.String(100), nullable=True))
        batch.add_column(sa.Column("maintenance_since", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("maintenance_ended_at", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("sending_nodes") as batch:
        for column in (
            "maintenance_ended_at",
            "maintenance_since",
            "maintenance_by",
            "maintenance_reason",
            "quarantine",
            "bundle_version",
            "host_key",
        ):
            batch.drop_column(column)
