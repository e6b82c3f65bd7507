"""engagement rollups: first engagement per delivery, counts per bulletin and variant, clicks per link

Revision ID: engagement
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "engagement"
down_revision = "security"
branch_labels = None
depends_on = None

_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "engagement",
        sa.Column("delivery_id", _BIG_ID, nullable=False),
        sa.Column("metric", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["delivery_id"], ["delivery.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("delivery_id", "metric"),
    )
    op.create_table(
        "engagement_count",
        sa.Column("bulletin_id", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(length=200), nullable=False),
        sa.Column("metric", sa.String(length=16), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["bulletin_id"], ["bulletin.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("bulletin_id", "variant", "metric"),
    )
    op.create_table(
        "link_click",
        sa.Column("bulletin_id", sa.Integer(), nullable=False),
        sa.Column("link_key", sa.String(length=40), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("clicks", sa.Integer(), nullable=False),
        sa.Column("clickers", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["bulletin_id"], ["bulletin.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("bulletin_id", "link_key"),
    )


def downgrade() -> None:
    op.drop_table("link_click")
    op.drop_table("engagement_count")
    op.drop_table("engagement")
