"""The node's signed timestamp of its newest recorded heartbeat: replays are refused by every
daemon, across replicas and restarts (docs/daemon.md "Heartbeats are durable or refused").

Revision ID: 0007_heartbeat_replay
Revises: 0006_operator_holds
Create Date: 2026-12-01 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_heartbeat_replay"
down_revision: str | None = "0006_operator_holds"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sending_nodes") as batch:
        batch.add_column(sa.Column("last_beat_sent_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sending_nodes") as batch:
        batch.drop_column("last_beat_sent_at")
