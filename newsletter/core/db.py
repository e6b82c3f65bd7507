"""Engines, sessions and migrations.

SQLite is the embedded default: WAL journal (readers never block the writer), a busy timeout (a second
process waits for the lock instead of failing), foreign keys on (SQLite leaves them off by default) and
`synchronous=NORMAL` (safe with WAL). PostgreSQL is used through psycopg 3.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

SQLITE_BUSY_TIMEOUT_MS = 30_000


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    # Let SQLAlchemy's BEGIN, not the sqlite3 module, start transactions (so BEGIN IMMEDIATE works).
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def _sqlite_begin(conn: sa.Connection) -> None:
    # IMMEDIATE takes the write lock at BEGIN: two writers queue on the busy timeout instead of one of
    # them failing with "database is locked" when it upgrades a read transaction.
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine for `url` with the SQLite settings above applied to every connection."""
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        sa.event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return sa.create_engine(url, **kwargs)


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits when the block ends normally and rolls back when it raises."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str) -> Any:
    # Alembic loads only when migrating or checking the revision: every other command starts faster.
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).resolve().parent.parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest migration (idempotent)."""
    from alembic import command  # loaded only when migrating (see alembic_config)

    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.connect() as conn:
        sqlite = conn.dialect.name == "sqlite"
        raw: Any = conn.connection.dbapi_connection
        if sqlite:  # rebuilding a table must not cascade into its children (only settable outside BEGIN)
            raw.execute("PRAGMA foreign_keys=OFF")
        with conn.begin():
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first() is not None:
                raise RuntimeError("migration left rows whose parent is missing; nothing was changed")
        if sqlite:
            raw.execute("PRAGMA foreign_keys=ON")


def current_revision(engine: Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext  # see alembic_config

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
