"""bulk references: on PostgreSQL, the references of the two bulk-written tables checked per statement

Revision ID: bulk_references
Revises: send_safety

`delivery` (planning writes a million rows in one INSERT … SELECT) and `subscription` (an import COPYs
hundreds of thousands) lose their foreign-key constraints on PostgreSQL, and triggers keep the same
integrity set by set (`core/dialect.py`, `SET_CHECKED_REFERENCES`, says why). SQLite keeps its foreign
keys: it checks them far more cheaply, and this revision changes nothing there.
"""

from __future__ import annotations

from alembic import op

from newsletter.core.dialect import SET_CHECKED_REFERENCES

revision = "bulk_references"
down_revision = "send_safety"
branch_labels = None
depends_on = None

# (child table, column, parent table, what deleting the parent does to the child: "delete" or "null")
_REFERENCES = (
    ("delivery", "bulletin_id", "bulletin", "delete"),
    ("delivery", "subscriber_id", "subscriber", "null"),
    ("subscription", "subscriber_id", "subscriber", "delete"),
    ("subscription", "region_id", "region", "delete"),
)
_CHILDREN = ("delivery", "subscription")
_PARENTS = ("bulletin", "subscriber", "region")


def _child_functions(child: str) -> str:
    refs = [(column, parent) for c, column, parent, _ in _REFERENCES if c == child]
    missing = "\n".join(
        f"""  IF EXISTS (SELECT 1 FROM added a WHERE a.{column} IS NOT NULL
               AND NOT EXISTS (SELECT 1 FROM {parent} p WHERE p.id = a.{column})) THEN
    RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
      MESSAGE = '{child}.{column} names a {parent} that does not exist';
  END IF;"""
        for column, parent in refs
    )
    one_row = "\n".join(
        f"""  IF NEW.{column} IS NOT NULL AND NEW.{column} IS DISTINCT FROM OLD.{column} THEN
    PERFORM 1 FROM {parent} WHERE id = NEW.{column} FOR KEY SHARE;
    IF NOT FOUND THEN
      RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation',
        MESSAGE = '{child}.{column} names a {parent} that does not exist';
    END IF;
  END IF;"""
        for column, parent in refs
    )
    return f"""
CREATE FUNCTION {child}_parents_exist() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
{missing}
  RETURN NULL;
END $$;
CREATE TRIGGER {child}_parents_exist AFTER INSERT ON {child}
  REFERENCING NEW TABLE AS added FOR EACH STATEMENT EXECUTE FUNCTION {child}_parents_exist();

CREATE FUNCTION {child}_parent_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
{one_row}
  RETURN NEW;
END $$;
CREATE TRIGGER {child}_parent_changed BEFORE UPDATE OF {", ".join(c for c, _ in refs)} ON {child}
  FOR EACH ROW EXECUTE FUNCTION {child}_parent_changed();
"""


def _parent_functions(parent: str) -> str:
    refs = [(child, column, action) for child, column, p, action in _REFERENCES if p == parent]
    children = sorted({child for child, _, _ in refs})
    actions = "\n".join(
        f"  DELETE FROM {child} WHERE {column} = OLD.id;"
        if action == "delete"
        else f"  UPDATE {child} SET {column} = NULL WHERE {column} = OLD.id;"
        for child, column, action in refs
    )
    return f"""
CREATE FUNCTION {parent}_children_follow() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'UPDATE' THEN
    IF NEW.id IS DISTINCT FROM OLD.id THEN
      RAISE EXCEPTION USING ERRCODE = 'foreign_key_violation', MESSAGE = '{parent} ids never change';
    END IF;
    RETURN NEW;
  END IF;
  -- Waits for every transaction still writing these tables (a plan, an import) and keeps new ones out
  -- until this one ends, so that no row naming OLD.id can appear unseen by what follows.
  LOCK TABLE {", ".join(children)} IN SHARE ROW EXCLUSIVE MODE;
{actions}
  RETURN OLD;
END $$;
CREATE TRIGGER {parent}_children_follow BEFORE DELETE OR UPDATE OF id ON {parent}
  FOR EACH ROW EXECUTE FUNCTION {parent}_children_follow();
"""


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for name in sorted(SET_CHECKED_REFERENCES):
        table = name.split("_", 1)[0]
        op.drop_constraint(name, table, type_="foreignkey")
    for child in _CHILDREN:
        op.execute(_child_functions(child))
    for parent in _PARENTS:
        op.execute(_parent_functions(parent))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for parent in _PARENTS:
        op.execute(
            f"DROP TRIGGER {parent}_children_follow ON {parent}; DROP FUNCTION {parent}_children_follow();"
        )
    for child in _CHILDREN:
        op.execute(
            f"DROP TRIGGER {child}_parents_exist ON {child}; DROP FUNCTION {child}_parents_exist();"
            f" DROP TRIGGER {child}_parent_changed ON {child}; DROP FUNCTION {child}_parent_changed();"
        )
    ondelete = {"delete": "CASCADE", "null": "SET NULL"}
    for child, column, parent, action in _REFERENCES:
        op.create_foreign_key(
            f"{child}_{column}_fkey", child, parent, [column], ["id"], ondelete=ondelete[action]
        )
