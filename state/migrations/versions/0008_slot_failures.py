"""A node's slot failures: how many nodes of its slot missed their provisioning deadline
before it (``provisioning.replacements`` bounds the replacements per slot).

Revision ID: 0008_slot_failures
Revises: 0007_heartbeat_replay
Create Date: 2026-12-01 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_slot_failures"
down_revision: str | None = "0007_heartbeat_replay"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sending_nodes") as batch:
        batch.add_column(
            sa.Column("slot_failures", sa.Integer(), nullable=False, server_default=sa.text("0"))
        )


def downgrade() -> None:
    with op.batch_alter_table("sending_nodes") as batch:
        batch.drop_column("slot_failures")
