"""The heartbeat URL a node's agent was bootstrapped with (``sending_nodes.agent_url``): a run
that knows no agent URL renders the node's bundle with it, so a changed spec still rolls
through the fleet and a changed URL is seen as a changed bundle. No secret: a URL with user
info, a query or a fragment is refused before it is recorded.

Revision ID: 0011_node_agent_url
Revises: 0010_heartbeat_hot
Create Date: 2026-12-01 11:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011_node_agent_url"
down_revision: str | None = "0010_heartbeat_hot"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("sending_nodes") as batch:
        batch.add_column(sa.Column("agent_url", sa.String(500), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("sending_nodes") as batch:
        batch.drop_column("agent_url")
