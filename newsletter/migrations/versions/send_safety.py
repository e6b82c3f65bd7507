"""send safety: outage pauses, ambiguous outcomes and message ids in the ledger, scheduler heartbeat

Revision ID: send_safety
Revises: localtime
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import UTCDateTime

revision = "send_safety"
down_revision = "localtime"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("bulletin") as batch:
        batch.add_column(sa.Column("esp_down_since", UTCDateTime(), nullable=True))
    with op.batch_alter_table("delivery") as batch:
        batch.add_column(sa.Column("message_ids", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("ambiguous", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("refused", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        "scheduler_heartbeat",
        sa.Column("worker", sa.String(length=80), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("ticked_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("worker"),
    )


def downgrade() -> None:
    op.drop_table("scheduler_heartbeat")
    with op.batch_alter_table("delivery") as batch:
        batch.drop_column("refused")
        batch.drop_column("ambiguous")
        batch.drop_column("message_ids")
    with op.batch_alter_table("bulletin") as batch:
        batch.drop_column("esp_down_since")
