"""delivery hot: recording an outcome writes no index

Revision ID: delivery_hot
Revises: reference_scan

The claim index (bulletin, status, variant, id) served the per-delivery claim; batches now find their
rows by id range on the primary key. It was the one index holding a column that recording changes
(`status`), which made every recorded outcome a new entry in all four indexes. Without it, and with
room left on each page (`fillfactor`, PostgreSQL only), PostgreSQL records an outcome as a heap-only
update. The fillfactor applies to pages written from now on; existing rows keep their pages.
"""

from __future__ import annotations

from alembic import op

revision = "delivery_hot"
down_revision = "reference_scan"
branch_labels = None
depends_on = None

_FILLFACTOR = 30  # `core.models.DELIVERY_FILLFACTOR` says why


def upgrade() -> None:
    op.drop_index("ix_delivery_claim", table_name="delivery")
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"ALTER TABLE delivery SET (fillfactor = {_FILLFACTOR})")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE delivery RESET (fillfactor)")
    op.create_index("ix_delivery_claim", "delivery", ["bulletin_id", "status", "variant", "id"])
