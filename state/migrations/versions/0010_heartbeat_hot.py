"""Heartbeats update in place (HOT): no index on ``node_metrics.at`` (a column every beat
rewrites, and no query scans it: the sweep reads a node's ring through the primary key, the
pruning is a periodic sequential scan of a table bounded by nodes x window), and free room on
every page of the two tables a beat updates (fillfactor 70, PostgreSQL only), so that the new
row version fits next to the old one. Rows written before this migration keep their pages
until they are updated or the table is rewritten (VACUUM FULL); new and updated rows use it.

Revision ID: 0010_heartbeat_hot
Revises: 0009_cost_history
Create Date: 2026-12-01 06:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010_heartbeat_hot"
down_revision: str | None = "0009_cost_history"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: the tables a heartbeat updates, and the room left free on each page for in-place updates
HOT_TABLES = ("sending_nodes", "node_metrics", "node_send_counts")
FILLFACTOR = 50


def upgrade() -> None:
    op.drop_index("ix_node_metrics_at", table_name="node_metrics")
    if op.get_bind().dialect.name == "postgresql":
        for table in HOT_TABLES:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in HOT_TABLES:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
    op.create_index("ix_node_metrics_at", "node_metrics", ["at"], unique=False)
