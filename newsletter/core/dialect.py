"""Every difference between SQLite and PostgreSQL, in one module.

The rest of the package writes portable SQLAlchemy and asks here when the two databases need different
statements:

    is_pg(bind)                     PostgreSQL?  (a Connection, Session or Engine)
    insert(bind, table)             an INSERT that can take `.on_conflict_do_nothing()` / `do_update()`
    one_of(bind, column, values)    `column IN (…)`, or `= ANY(:array)` on PostgreSQL (one parameter)
    insert_ignoring_duplicates(bind, table)   `INSERT … ON CONFLICT DO NOTHING`
    skip_locked(bind, select)       `FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's BEGIN IMMEDIATE
                                    already serialises writers (see `newsletter.core.db`)
    insert_many(conn, table, rows)  bulk rows: COPY on PostgreSQL, a DB-API executemany on SQLite
    lock_key(session, key)          serialise transactions on one key until commit: an advisory lock on
                                    PostgreSQL; nothing on SQLite, whose BEGIN IMMEDIATE already does
    random_secret()                 a column default of 32 random hex characters, per row

Why one place: a dialect branch hidden in a service is a rule that only one database tests.
"""

from __future__ import annotations

import hashlib
import operator
import sqlite3
from collections.abc import Iterable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session

Bind = sa.Connection | Session | Engine
"""Anything that knows which database it talks to."""


def dialect_name(bind: Bind | str) -> str:
    """`"sqlite"` or `"postgresql"` for a connection, session, engine, or a dialect name itself."""
    if isinstance(bind, str):
        return bind
    if isinstance(bind, Session):
        return bind.get_bind().dialect.name
    return bind.dialect.name


def is_pg(bind: Bind | str) -> bool:
    return dialect_name(bind) == "postgresql"


def insert(bind: Bind | str, table: sa.Table) -> Any:
    """The dialect's own INSERT, which knows `ON CONFLICT` (both dialects spell it the same way)."""
    return (postgresql.insert if is_pg(bind) else sqlite.insert)(table)


def bind_time(value: Any, column: sa.Column[Any]) -> Any:
    """A datetime bound through `column`'s type (UTCDateTime) rather than the driver's own adaptation, so
    both databases store, and compare against, one format."""
    return sa.literal(value, type_=column.type)


def insert_ignoring_duplicates(bind: Bind | str, table: sa.Table) -> Any:
    """`INSERT … ON CONFLICT DO NOTHING` on `table`."""
    return insert(bind, table).on_conflict_do_nothing()


def one_of(bind: Bind | str, column: sa.ColumnElement[Any], values: Iterable[Any]) -> sa.ColumnElement[bool]:
    """`column IN (values)`, or on PostgreSQL `column = ANY(:array)`: one parameter instead of thousands,
    which psycopg would otherwise spend most of a bulk lookup's time parsing and binding."""
    values = list(values)
    if is_pg(bind):
        return column == sa.any_(sa.bindparam(None, values, type_=postgresql.ARRAY(column.type)))
    return column.in_(values)


def skip_locked(bind: Bind | str, select: sa.Select[Any]) -> sa.Select[Any]:
    """`select … FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent workers take disjoint rows."""
    return select.with_for_update(skip_locked=True) if is_pg(bind) else select


def _driver_value(value: Any, dialect_name: str) -> Any:
    """What the sqlite3 module itself would make of `value` (a datetime becomes its ISO string), done
    once instead of once per row."""
    if dialect_name == "sqlite":
        adapter = sqlite3.adapters.get((type(value), sqlite3.PrepareProtocol))
        if adapter is not None:
            return adapter(value)
    return value


def insert_many(conn: sa.Connection, table: sa.Table, rows: list[dict[str, Any]]) -> None:
    """A plain DB-API `executemany` (COPY on PostgreSQL) of `rows` (dicts with the same keys) into `table`.

    SQLAlchemy's bulk insert runs every value of every row through its type processors, which made
    most of an import's time; here only columns whose type needs it are processed, each distinct value
    once (the timestamps of a chunk are all the same `now`), and the driver gets ready tuples.
    """
    dialect = conn.dialect
    columns = list(rows[0])
    getter = operator.itemgetter(*columns)
    processed = [
        (i, proc) for i, c in enumerate(columns) if (proc := table.c[c].type.bind_processor(dialect))
    ]
    cache: dict[tuple[int, Any], Any] = {}
    params: list[Any] = []
    for row in rows:
        values = getter(row)
        if processed:
            values = list(values) if len(columns) > 1 else [values]
            for i, proc in processed:
                v = values[i]
                if v is not None:
                    key = (i, v)
                    if key not in cache:
                        cache[key] = _driver_value(proc(v), dialect.name)
                    values[i] = cache[key]
        params.append(tuple(values) if len(columns) > 1 or processed else (values,))
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in columns)
    if dialect.name == "postgresql":
        # COPY, in the same transaction: psycopg's executemany cost ~100 µs of client CPU per row.
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(f"COPY {quote(table.name)} ({names}) FROM STDIN") as copy:  # type: ignore[union-attr]
            for row in params:
                copy.write_row(row)
        return
    marks = ", ".join(["?" if dialect.paramstyle == "qmark" else "%s"] * len(columns))
    conn.exec_driver_sql(f"INSERT INTO {quote(table.name)} ({names}) VALUES ({marks})", params)


def lock_key(session: Session, key: str) -> None:
    """Hold a transaction-scoped lock named by `key` until this transaction ends (PostgreSQL).

    Used where a check and a write must not interleave across requests (rate limits, one subscriber per
    address). SQLite needs nothing: every transaction takes the database's write lock at BEGIN.
    """
    if is_pg(session):
        number = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big", signed=True)
        session.execute(sa.text("SELECT pg_advisory_xact_lock(:n)"), {"n": number})


class random_secret(sa.sql.functions.FunctionElement[str]):
    """A server default: 128 random bits as 32 hex characters, evaluated for each inserted row."""

    type = sa.String()
    inherit_cache = True


@compiles(random_secret, "sqlite")
def _random_secret_sqlite(element: random_secret, compiler: Any, **kw: Any) -> str:
    return "lower(hex(randomblob(16)))"


@compiles(random_secret, "postgresql")
def _random_secret_pg(element: random_secret, compiler: Any, **kw: Any) -> str:
    return "replace(CAST(gen_random_uuid() AS TEXT), '-', '')"
