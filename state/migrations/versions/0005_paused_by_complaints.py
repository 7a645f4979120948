"""Who took a node out of rotation (``sending_nodes.paused_by``), and the complaint event ids
the daemons have counted (``complaint_events``: an id is counted once across replicas).

Revision ID: 0005_paused_by_complaints
Revises: 0004_node_provisioning
Create Date: 2026-12-01 06:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_paused_by_complaints"
down_revision: str | None = "0004_node_provisioning"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PAUSED_BY = "paused_by IN ('reputation', 'health', 'operator', 'quarantine')"


def upgrade() -> None:
    with op.batch_alter_table("sending_nodes") as batch:
        batch.add_column(sa.Column("paused_by", sa.String(20), nullable=True))
        batch.create_check_constraint(op.f("ck_sending_nodes_paused_by"), _PAUSED_BY)
    # the owners of the pauses recorded before: maintenance is the operator's, unhealthy the
    # health rule's, a paused node with a host-key quarantine the quarantine's, any other
    # paused node reputation's (the only other rule that paused nodes)
    op.execute(
        "UPDATE sending_nodes SET paused_by = CASE "
        "WHEN status = 'maintenance' THEN 'operator' "
        "WHEN status = 'unhealthy' THEN 'health' "
        "WHEN status = 'paused' AND quarantine IS NOT NULL THEN 'quarantine' "
        "WHEN status = 'paused' THEN 'reputation' END "
        "WHERE status IN ('maintenance', 'unhealthy', 'paused')"
    )
    op.create_table(
        "complaint_events",
        sa.Column("fleet", sa.String(100), nullable=False),
        sa.Column("event_id", sa.String(200), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("fleet", "event_id", name=op.f("pk_complaint_events")),
    )
    op.create_index("ix_complaint_events_seen_at", "complaint_events", ["seen_at"])


def downgrade() -> None:
    op.drop_index("ix_complaint_events_seen_at", table_name="complaint_events")
    op.drop_table("complaint_events")
    with op.batch_alter_table("sending_nodes") as batch:
        batch.drop_constraint(op.f("ck_sending_nodes_paused_by"), type_="check")
        batch.drop_column("paused_by")
