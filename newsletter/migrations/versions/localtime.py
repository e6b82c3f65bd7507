"""local-time delivery: a time zone per subscriber, a local-time slot per bulletin

Revision ID: localtime
Revises: name_search
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "localtime"
down_revision = "name_search"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Nullable columns with no default: a plain ADD COLUMN on both databases, no table rewrite.
    op.add_column("subscriber", sa.Column("timezone", sa.String(length=64), nullable=True))
    op.add_column("bulletin", sa.Column("local_send_at", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("bulletin") as batch:
        batch.drop_column("local_send_at")
    with op.batch_alter_table("subscriber") as batch:
        batch.drop_column("timezone")
