"""Every difference between SQLite and PostgreSQL, in one module.

The rest of the package writes portable SQLAlchemy and asks here when the two databases need different
statements:

    is_pg(bind)                     PostgreSQL?  (a Connection, Session or Engine)
    insert(bind, table)             an INSERT that can take `.on_conflict_do_nothing()` / `do_update()`
    one_of(bind, column, values)    `column IN (…)`, or `= ANY(:array)` on PostgreSQL (one parameter)
    insert_ignoring_duplicates(bind, table)   `INSERT … ON CONFLICT DO NOTHING`
    skip_locked(bind, select)       `FOR UPDATE SKIP LOCKED` on PostgreSQL; SQLite's BEGIN IMMEDIATE
                                    already serialises writers (see `newsletter.core.db`)
    hash_grouping(conn)             around a GROUP BY of many rows into few groups: PostgreSQL hashes
                                    them rather than sorting (its statistics may be stale)
    insert_many(conn, table, rows)  bulk rows: COPY on PostgreSQL, a DB-API executemany on SQLite
    bulk_subscriber_insert(conn)    around a bulk insert of subscribers: SQLite's name index is fed
                                    in one statement instead of by its row trigger
    with_name_words(bind, query, subscriber, words)   names containing words, case and accents ignored:
                                    FTS5 on SQLite, a GIN full-text index on PostgreSQL
    lock_key(session, key)          serialise transactions on one key until commit: an advisory lock on
                                    PostgreSQL; nothing on SQLite, whose BEGIN IMMEDIATE already does
    random_secret()                 a column default of 32 random hex characters, per row

Why one place: a dialect branch hidden in a service is a rule that only one database tests.
"""

from __future__ import annotations

import hashlib
import operator
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
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


@contextmanager
def hash_grouping(conn: sa.Connection) -> Iterator[None]:
    """Around a statement that groups many rows into few groups (cutting a million planned deliveries
    into a thousand batches): PostgreSQL hashes the groups instead of sorting every row. Right after a
    bulk insert its statistics are stale, and it would sort on disk: 0.76 s against 0.38 s at a million.
    SQLite has no such choice."""
    if not is_pg(conn):
        yield
        return
    was = conn.execute(sa.text("SELECT current_setting('enable_sort')")).scalar()
    conn.execute(sa.text("SELECT set_config('enable_sort', 'off', true)"))
    yield  # an error dooms the transaction, and the setting ends with it
    conn.execute(sa.text("SELECT set_config('enable_sort', :was, true)"), {"was": was})


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


NAME_WORDS_FTS = "subscriber_name_words"
"""SQLite's FTS5 index of subscriber names (built by the `name_search` migration, kept by triggers)."""
NAME_WORDS_INSERT_TRIGGER = (
    f"CREATE TRIGGER IF NOT EXISTS {NAME_WORDS_FTS}_insert AFTER INSERT ON subscriber BEGIN "
    f"INSERT INTO {NAME_WORDS_FTS}(rowid, name) VALUES (new.id, new.name); END"
)
"""The trigger that indexes each new subscriber's name (SQLite)."""
NAME_WORDS_COLUMN = "name_words"
"""PostgreSQL's generated tsvector column of `subscriber` (same migration), with a GIN index."""
SEARCH_OBJECTS = frozenset(
    {
        NAME_WORDS_FTS,
        *(f"{NAME_WORDS_FTS}_{shadow}" for shadow in ("data", "idx", "docsize", "config", "content")),
    }
    | {NAME_WORDS_COLUMN, "ix_subscriber_name_words"}
)
"""Schema objects of the name search that the models cannot describe (a virtual table, a column and an
index that exist on one database only): the schema comparison leaves them out."""

SET_CHECKED_REFERENCES = frozenset(
    {
        "delivery_bulletin_id_fkey",
        "delivery_subscriber_id_fkey",
        "subscription_region_id_fkey",
        "subscription_subscriber_id_fkey",
    }
)
"""The foreign keys that PostgreSQL enforces per statement instead (the `bulk_references` migration).

PostgreSQL checks a foreign key row by row, taking a FOR KEY SHARE lock on the parent row for every
child row it inserts, and logging each lock: planning a million deliveries spent 40% of its time there,
and an import's subscriptions most of theirs. On PostgreSQL these four references are kept by triggers
instead, with the same guarantees:

- an INSERT (or COPY) is checked once per statement, by one anti-join of the new rows (a transition
  table) against the parent table, and fails with `foreign_key_violation` if any row names a missing
  parent; a change of the column itself is checked row by row (it never happens in bulk);
- deleting a parent first takes SHARE ROW EXCLUSIVE on the child tables, which waits for every
  transaction still inserting children and keeps new ones out until it ends, then does what ON DELETE
  did (delete the children, or set `delivery.subscriber_id` to NULL: the anonymous ledger stays).
  Parents are deleted rarely (erasing a subscriber), so the lock costs nothing in practice; a parent's
  id never changes.

SQLite keeps these as foreign keys: it checks them without locks, cheaply. The models declare them for
both; the schema comparison leaves them out."""


@contextmanager
def bulk_subscriber_insert(conn: sa.Connection) -> Iterator[None]:
    """Around an insert of many subscribers in one transaction.

    On SQLite the name index (FTS5) is fed by one `INSERT … SELECT` of the new rows instead of its
    trigger, row by row: 0.2 s instead of 3.3 s for 100,000 names, most of an import's time. The trigger
    is dropped and created again inside this transaction (SQLite's DDL is transactional), so no other
    connection ever sees the table without it, and it comes back even if the insert fails. Nothing on
    PostgreSQL, where the index is a generated column.
    """
    if is_pg(conn):
        yield
        return
    before = conn.exec_driver_sql("SELECT coalesce(max(id), 0) FROM subscriber").scalar()
    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {NAME_WORDS_FTS}_insert")
    try:
        yield
    finally:
        # New ids are above every id the table holds (AUTOINCREMENT), and this transaction holds the lock.
        conn.exec_driver_sql(
            f"INSERT INTO {NAME_WORDS_FTS}(rowid, name) SELECT id, name FROM subscriber WHERE id > ?",
            (before,),
        )
        conn.exec_driver_sql(NAME_WORDS_INSERT_TRIGGER)


def compared_with_models(obj: object, name: str | None) -> bool:
    """Whether the schema comparison (migrations against models) looks at this object: not the name
    search's objects (`SEARCH_OBJECTS`), nor the references PostgreSQL checks by triggers (a model's
    foreign key has no name: it is known by PostgreSQL's default one)."""
    if isinstance(obj, sa.ForeignKeyConstraint) and name is None and obj.table is not None:
        name = f"{obj.table.name}_{'_'.join(obj.column_keys)}_fkey"
    return name not in SEARCH_OBJECTS and name not in SET_CHECKED_REFERENCES


RECENT_WINDOW = 5_000
"""PostgreSQL's name search first looks among this many newest rows (see `rows_with_name_words`)."""
_WORD = re.compile(r"\w+")


def search_words(text: str) -> list[str]:
    """The words of a search box, lower-cased: letters and digits only, so no query syntax gets through."""
    return _WORD.findall(text.casefold())


def rows_with_name_words(
    conn: sa.Connection,
    query: sa.Select[Any],
    subscriber: sa.Table,
    words: list[str],
    before: int | None,
    limit: int,
) -> list[Any]:
    """Rows of `query` (over `subscriber`) whose name has each of `words`, ignoring case and accents,
    newest first, ids below `before`. The last word may be the start of a word, as typed so far
    ("muller pri" finds "Priya Müller"); the others are whole words, which both indexes intersect
    quickly (a prefix of a common word is a long list to read). On SQLite, a last word that matches
    whole words enough to fill the page is not also read as a prefix (see `_fts_rows`).

    SQLite drives the query from the FTS5 index in rowid order, so it stops after `limit` matches however
    common the word. PostgreSQL's planner cannot tell a rare word from a common one (a prefix query has
    no statistics), and its wrong guess costs seconds either way, so the plan is fixed here: first the
    `RECENT_WINDOW` newest rows one by one (a common word fills the page there), then, only if the page is
    not full, the GIN index for the older rows (a word rare enough to get there has few matches).
    """
    order = subscriber.c.id
    if not is_pg(conn):
        return _fts_rows(conn, query, subscriber, words, before, limit)

    simple: sa.ColumnElement[Any] = sa.literal_column("'simple'::regconfig")
    terms = " & ".join([*words[:-1], f"{words[-1]}:*"])
    tsquery = sa.func.to_tsquery(simple, sa.func.newsletter_unaccent(terms))
    column: sa.ColumnElement[Any] = sa.literal_column(f"{subscriber.name}.{NAME_WORDS_COLUMN}")
    if before is not None:
        query = query.where(order < before)
    ids = sa.select(order).order_by(order.desc()).limit(RECENT_WINDOW)
    if before is not None:
        ids = ids.where(order < before)
    window = ids.subquery()
    # Values, not subqueries: with an unknown bound the planner guesses "a third of the table".
    lowest, size = conn.execute(sa.select(sa.func.min(window.c.id), sa.func.count())).one()
    if not size:
        return []
    # `|| ''` hides the column from its GIN index: the newest rows are read one by one, always.
    one_by_one = (column.op("||")(sa.literal_column("''::tsvector"))).op("@@")(tsquery)
    recent = list(conn.execute(query.where(one_by_one, order >= lowest).order_by(order.desc()).limit(limit)))
    if len(recent) >= limit or size < RECENT_WINDOW:
        return recent
    # MATERIALIZED: the older matches come from the GIN index, never from scanning the older rows.
    older = query.where(column.op("@@")(tsquery), order < lowest).cte("older").prefix_with("MATERIALIZED")
    rest = sa.select(older).order_by(older.c.id.desc()).limit(limit - len(recent))
    return recent + list(conn.execute(rest))


def _fts_rows(
    conn: sa.Connection,
    query: sa.Select[Any],
    subscriber: sa.Table,
    words: list[str],
    before: int | None,
    limit: int,
) -> list[Any]:
    """SQLite's half of `rows_with_name_words`: whole words first, then the last word as a prefix.

    FTS5 streams a whole word's list newest first and stops at `limit` (0.1 ms for a word every
    subscriber has), but answers a prefix by merging every matching list in memory first (165 ms for
    the same word at 1M). So when the whole words already fill the page, that page is the answer.
    """
    fts = sa.table(NAME_WORDS_FTS, sa.column("rowid"))
    order = fts.c.rowid
    matched = query.join_from(subscriber, fts, order == subscriber.c.id)
    if before is not None:
        matched = matched.where(order < before)
    whole = " ".join(f'"{w}"' for w in words)
    rows: list[Any] = []
    for terms in (whole, whole + "*"):
        match = sa.literal_column(NAME_WORDS_FTS).op("MATCH")(terms)
        rows = list(conn.execute(matched.where(match).order_by(order.desc()).limit(limit)))
        if len(rows) >= limit:
            break
    return rows


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
