"""reference scan: the per-statement reference checks count missing parents instead of asking EXISTS

Revision ID: reference_scan
Revises: send_batch

`IF EXISTS (…)` makes PostgreSQL plan for the first row: a nested loop probing the parent's key once per
new row (2.4 s of planning a million deliveries). Counting makes it plan for all rows, a hash anti-join
(1.0 s). The rule is unchanged: a statement that adds a child whose parent does not exist fails whole
with `foreign_key_violation`. SQLite is untouched.
"""

from __future__ import annotations

from alembic import op

revision = "reference_scan"
down_revision = "send_batch"
branch_labels = None
depends_on = None

_REFERENCES = {
    "delivery": (("bulletin_id", "bulletin"), ("subscriber_id", "subscriber")),
    "subscription": (("subscriber_id", "subscriber"), ("region_id", "region")),
}


def _function(child: str, test: str) -> str:
    checks = "\n".join(
        f"""  IF {test.format(child=child, column=column, parent=parent)} THEN
    RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
      MESSAGE = '{child}.{column} names a {parent} that does not exist';
  END IF;"""
        for column, parent in _REFERENCES[child]
    )
    return f"""
CREATE OR REPLACE FUNCTION {child}_parents_exist() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
{checks}
  RETURN NULL;
END $$;
"""


_MISSING = (
    "SELECT 1 FROM added a WHERE a.{column} IS NOT NULL"
    " AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.id = a.{column})"
)
_COUNTED = f"(SELECT count(*) FROM ({_MISSING}) missing) > 0"
_FIRST_ROW = f"EXISTS ({_MISSING})"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for child in _REFERENCES:
            op.execute(_function(child, _COUNTED))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for child in _REFERENCES:
            op.execute(_function(child, _FIRST_ROW))
