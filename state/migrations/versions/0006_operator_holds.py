"""The kind of an operator's hold on a node: maintenance (NULL, as before), cordon or drain
(``reconcile node cordon|drain``; docs/production.md).

Revision ID: 0006_operator_holds
Revises: 0005_paused_by_complaints
Create Date: 2026-12-01 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_operator_holds"
down_revision: str | None = "0005_paused_by_complaints"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sending_nodes") as batch:
        batch.add_column(sa.Column("maintenance_kind", sa.String(16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sending_nodes") as batch:
        batch.drop_column("maintenance_kind")
