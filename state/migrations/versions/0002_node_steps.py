"""Per-node pipeline step state: ``sending_nodes.steps`` (design §3b).

Revision ID: 0002_node_steps
Revises: 0001_initial
Create Date: 2026-11-24 02:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_node_steps"
down_revision: str | None = "0001_initial"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sending_nodes") as batch:
        batch.add_column(sa.Column("steps", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sending_nodes") as batch:
        batch.drop_column("steps")
