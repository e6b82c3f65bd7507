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

from newsletter.core.errors import ConfigError, NotInitialised

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


def open_engine(url: str, **kwargs: Any) -> Engine:
    """An engine on a database that `newsletter init` (or the demo) created; never creates one.

    Raises `NotInitialised` ("run `newsletter init`") for a missing SQLite file or a database without
    the schema, and `ConfigError` naming DATABASE_URL when the URL is malformed or the server is not
    reachable: each a single line for the person at the keyboard.
    """
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ConfigError(f"DATABASE_URL {url!r} is not a database URL: {exc}") from None
    shown = parsed.render_as_string(hide_password=True)
    database = (parsed.database or "").removeprefix("file:").split("?", 1)[0]  # also `file:…?mode=ro`
    if url.startswith("sqlite") and database not in ("", ":memory:") and not Path(database).exists():
        raise NotInitialised(f"there is no database at {parsed.database}: run `newsletter init` first")
    try:
        engine = make_engine(url, **kwargs)
        with engine.connect() as conn:
            initialised = sa.inspect(conn).has_table("alembic_version") and (
                conn.exec_driver_sql("SELECT count(*) FROM alembic_version").scalar() or 0
            )
    except (sa.exc.NoSuchModuleError, sa.exc.ArgumentError) as exc:
        raise ConfigError(f"DATABASE_URL {shown!r} names no database driver we have: {exc}") from None
    except sa.exc.DBAPIError as exc:
        first = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        raise ConfigError(f"DATABASE_URL {shown}: cannot open the database: {first}") from None
    if not initialised:
        engine.dispose()
        raise NotInitialised(f"the database at {shown} has no schema: run `newsletter init` first")
    return engine


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
