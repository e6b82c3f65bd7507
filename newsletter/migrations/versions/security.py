"""ids in links and cookies are never reused; every link bound to a per-subscriber secret; session versions

SQLite gives a new row the id of the deleted newest row unless the table is AUTOINCREMENT, so an old link
could name the next person to subscribe. AUTOINCREMENT cannot be added by ALTER TABLE: the table is
rebuilt. With foreign keys on, dropping the old table would cascade into its children, so the old table
is first renamed with `legacy_alter_table` (the children keep referring to the name `subscriber`, which
the new table then takes) and dropped once it has no children.

Revision ID: security
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import UTCDateTime

from newsletter.core.dialect import is_pg, random_secret

revision = "security"
down_revision = "0001"
branch_labels = None
depends_on = None


def _subscriber_columns() -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("email_hash", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=40), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.Column("confirmed_at", UTCDateTime(), nullable=True),
        sa.Column("unsubscribed_at", UTCDateTime(), nullable=True),
        sa.Column("paused_until", UTCDateTime(), nullable=True),
        sa.Column("link_secret", sa.String(length=32), server_default=random_secret(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    ]


def _user_columns() -> list[sa.schema.SchemaItem]:
    return [
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("password_hash", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("is_active", sa.Boolean(), nullable=False),
        sa.Column("failed_logins", sa.Integer(), nullable=False),
        sa.Column("locked_until", UTCDateTime(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("last_login_at", UTCDateTime(), nullable=True),
        sa.Column("session_version", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("email"),
    ]


def _rebuild_sqlite(name: str, columns: list[sa.schema.SchemaItem], copied: list[str]) -> None:
    op.execute("PRAGMA legacy_alter_table=ON")
    op.execute(f'ALTER TABLE "{name}" RENAME TO "{name}_old"')
    op.create_table(name, *columns, sqlite_autoincrement=True)
    names = ", ".join(f'"{c}"' for c in copied)
    op.execute(f'INSERT INTO "{name}" ({names}) SELECT {names} FROM "{name}_old"')
    op.execute(f'DROP TABLE "{name}_old"')
    op.execute("PRAGMA legacy_alter_table=OFF")


def _subscriber_indexes() -> None:
    op.create_index("ix_subscriber_email_hash", "subscriber", ["email_hash"], unique=False)
    op.create_index("ix_subscriber_status_id", "subscriber", ["status", "id"], unique=False)
    op.create_index("ix_subscriber_lower_name_id", "subscriber", [sa.text("lower(name)"), "id"], unique=False)


def upgrade() -> None:
    if is_pg(op.get_bind()):
        op.add_column(
            "subscriber",
            sa.Column("link_secret", sa.String(length=32), server_default=random_secret(), nullable=False),
        )
        op.add_column(
            "app_user", sa.Column("session_version", sa.Integer(), server_default="0", nullable=False)
        )
        return
    subscriber_copied = [
        c.name for c in _subscriber_columns() if isinstance(c, sa.Column) and c.name != "link_secret"
    ]
    _rebuild_sqlite("subscriber", _subscriber_columns(), subscriber_copied)
    _subscriber_indexes()
    user_copied = [
        c.name for c in _user_columns() if isinstance(c, sa.Column) and c.name != "session_version"
    ]
    _rebuild_sqlite("app_user", _user_columns(), user_copied)


def downgrade() -> None:
    with op.batch_alter_table("app_user") as batch_op:
        batch_op.drop_column("session_version")
    with op.batch_alter_table("subscriber") as batch_op:
        batch_op.drop_column("link_secret")
