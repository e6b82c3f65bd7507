"""The migrations are the schema: they must build exactly what the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

from newsletter.core.db import current_revision, migrate
from newsletter.core.dialect import compared_with_models


def test_migrations_match_the_models(engine):
    def include(obj, name, type_, reflected, compare_to):
        return compared_with_models(
            obj, name
        )  # not the name search's objects, nor trigger-checked references

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"include_object": include})
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == []


def test_migrate_is_idempotent(engine):
    migrate(engine)
    migrate(engine)
    assert current_revision(engine) is not None


def test_sqlite_runs_in_wal_with_foreign_keys(engine):
    if engine.dialect.name != "sqlite":
        return
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 5000
