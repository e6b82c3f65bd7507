"""send batch: a worker leases one `send_batch` row instead of a thousand deliveries

Revision ID: send_batch
Revises: bulk_references

Every open delivery of an open bulletin is put in a batch, as planning would have (one variant, ids in
one window of 1000). A delivery still `sending` had a lease that no worker holds after the upgrade (the
workers are stopped for it): it goes back to `pending` counted as an ambiguous attempt, as recovery with
the default `RESEND_ON_UNKNOWN=true` would have done.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import UTCDateTime

revision = "send_batch"
down_revision = "bulk_references"
branch_labels = None
depends_on = None

_WINDOW = 1000
_UPGRADED = "in flight when the database was upgraded; sent again"


def upgrade() -> None:
    op.create_table(
        "send_batch",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("bulletin_id", sa.Integer(), nullable=False),
        sa.Column("variant", sa.String(length=200), nullable=False),
        sa.Column("first_id", sa.BigInteger(), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("not_before", UTCDateTime(), nullable=True),
        sa.Column("retrying", sa.Boolean(), nullable=False),
        sa.Column("leased_by", sa.String(length=80), nullable=True),
        sa.Column("leased_at", UTCDateTime(), nullable=True),
        sa.Column("lease_expires_at", UTCDateTime(), nullable=True),
        sa.Column("updated_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["bulletin_id"], ["bulletin.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_send_batch_claim", "send_batch", ["bulletin_id", "status", "id"])
    op.create_index("ix_send_batch_leased_by", "send_batch", ["leased_by"])
    op.execute(
        sa.text(
            "UPDATE delivery SET status = 'pending', lease_expires_at = NULL, ambiguous = ambiguous + 1, "
            "last_error = :error WHERE status = 'sending' AND leased_by IS NOT NULL"
        ).bindparams(error=_UPGRADED)
    )
    op.execute(
        sa.text(
            "INSERT INTO send_batch (bulletin_id, variant, first_id, last_id, status, not_before, retrying) "
            "SELECT d.bulletin_id, d.variant, MIN(d.id), MAX(d.id), 'pending', "
            "CASE WHEN COUNT(d.not_before) < COUNT(*) THEN NULL ELSE MIN(d.not_before) END, "
            "MAX(d.attempts) > 0 "
            "FROM delivery d JOIN bulletin b ON b.id = d.bulletin_id "
            "WHERE d.status = 'pending' AND b.status IN ('draft', 'ready', 'sending', 'paused') "
            f"GROUP BY d.bulletin_id, d.variant, d.id / {_WINDOW} "
            "ORDER BY d.bulletin_id, MIN(d.id)"
        )
    )


def downgrade() -> None:
    op.drop_index("ix_send_batch_leased_by", table_name="send_batch")
    op.drop_index("ix_send_batch_claim", table_name="send_batch")
    op.drop_table("send_batch")
