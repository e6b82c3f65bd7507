"""Finding subscribers in a list of a million: filters, search and keyset pages; and the CSV export.

A page is fetched by position in an index, never by OFFSET, so page 1,000 costs what page 1 costs:

    no search        newest first, by id                      (primary key; `ix_subscriber_status_id`)
    "…@…" search     addresses starting with the text, by address          (unique index on `email`)
    other search     names with a word starting with each word typed, ignoring case and accents,
                     newest first ("nair" finds "Priya Nair", "muller" finds "Müller"; SQLite FTS5 or
                     PostgreSQL full text: `newsletter.core.dialect.with_name_words`)

A name search that finds nothing is retried as an address search, so "ada" finds ada@example.org too.
Address prefixes are matched with a range (`>= text AND < text-with-last-character-bumped`, see
`_prefix_range`) rather than LIKE, which both databases answer from a plain b-tree whatever their
collation settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from newsletter.audience.queries import subscriber_regions
from newsletter.audience.subscribers import COLUMNS
from newsletter.core.dialect import rows_with_name_words, search_words
from newsletter.core.models import REGION, SUBSCRIBER, SUBSCRIPTION

PAGE_SIZE = 50

_sub: sa.Table = SUBSCRIBER
_subscription: sa.Table = SUBSCRIPTION
_region: sa.Table = REGION


@dataclass(frozen=True)
class Filters:
    q: str = ""
    region: str = ""
    """A region code (already resolved), or empty for all."""
    status: str = ""

    @property
    def mode(self) -> str:
        text = self.q.strip()
        if not text:
            return "browse"
        return "email" if "@" in text else "name"


@dataclass
class Page:
    rows: list[Any]
    regions: dict[int, list[str]]
    mode: str
    next_cursor: str | None
    searched: str = ""
    notes: list[str] = field(default_factory=list)


def _prefix_range(column: Any, prefix: str) -> Any:
    """Values starting with `prefix`, as an index range: from it to the prefix with its last character
    raised to the next code point. Trailing U+10FFFF (the last code point) cannot be raised: it is
    dropped and the character before it raised; a prefix of nothing but those has no upper bound. The
    next code point after U+D7FF is U+E000: U+D800 to U+DFFF are surrogates, which no database driver
    can encode. A prefix that cannot be stored itself (a NUL, which PostgreSQL text refuses, or a lone
    surrogate) starts no stored address: it matches nothing, and is never handed to the driver."""
    if "\x00" in prefix or not _encodable(prefix):
        return sa.false()
    stem = prefix.rstrip("\U0010ffff")
    if not stem:
        return column >= prefix
    upper = stem[:-1] + _next_code_point(stem[-1])
    return sa.and_(column >= prefix, column < upper)


def _next_code_point(char: str) -> str:
    """The character after `char` (not U+10FFFF) in code point order, surrogates skipped."""
    following = ord(char) + 1
    return chr(0xE000 if 0xD800 <= following <= 0xDFFF else following)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def filtered(query: sa.Select[Any], region: str, status: str) -> sa.Select[Any]:
    """`query` on subscriber restricted to a status and to subscribers of a region code."""
    if status:
        query = query.where(_sub.c.status == status)
    if region:
        region_id = sa.select(_region.c.id).where(_region.c.code == region).scalar_subquery()
        query = query.where(
            sa.exists().where(
                _subscription.c.subscriber_id == _sub.c.id, _subscription.c.region_id == region_id
            )
        )
    return query


def _base_query(filters: Filters) -> sa.Select[Any]:
    return filtered(
        sa.select(_sub.c.id, _sub.c.email, _sub.c.name, _sub.c.status, _sub.c.created_at),
        filters.region,
        filters.status,
    )


def _rows(conn: sa.Connection, filters: Filters, mode: str, cursor: str | None, limit: int) -> list[Any]:
    if mode == "name":
        before = int(cursor) if cursor else None
        return rows_with_name_words(conn, _base_query(filters), _sub, search_words(filters.q), before, limit)
    return list(conn.execute(_page_query(filters, mode, cursor, limit)))


def _page_query(filters: Filters, mode: str, cursor: str | None, limit: int) -> sa.Select[Any]:
    query = _base_query(filters)
    text = filters.q.strip().lower()
    if mode == "browse":
        if cursor:
            query = query.where(_sub.c.id < int(cursor))
        return query.order_by(_sub.c.id.desc()).limit(limit)
    if mode == "email":
        query = query.where(_prefix_range(_sub.c.email, text))
        if cursor:
            query = query.where(_sub.c.email > cursor)
        return query.order_by(_sub.c.email).limit(limit)
    raise RuntimeError(f"mode {mode!r} has no single query (see _rows)")


def _cursor(mode: str, row: Any) -> str:
    return str(row.email) if mode == "email" else str(row.id)


def search_page(
    conn: sa.Connection,
    filters: Filters,
    cursor: str | None = None,
    *,
    mode: str = "",
    limit: int = PAGE_SIZE,
) -> Page:
    """One page of subscribers matching `filters`, after `cursor` (from the previous page's
    `next_cursor`), with their region codes. `mode` pins the search kind for later pages."""
    mode = mode if mode in {"browse", "email", "name"} else filters.mode
    if mode != "browse" and not filters.q.strip():
        mode = "browse"
    if mode == "name" and not search_words(filters.q):
        mode = "email"  # punctuation only: no word to look for
    try:
        rows = _rows(conn, filters, mode, cursor, limit + 1)
    except ValueError:  # a forged cursor
        rows, cursor = _rows(conn, filters, mode, None, limit + 1), None
    notes = []
    if not rows and mode == "name" and cursor is None:
        mode = "email"
        rows = _rows(conn, filters, mode, None, limit + 1)
        notes.append("No name has those words; showing addresses that start with it.")
    more = len(rows) > limit
    rows = rows[:limit]
    return Page(
        rows=rows,
        regions=subscriber_regions(conn, [r.id for r in rows]),
        mode=mode,
        next_cursor=_cursor(mode, rows[-1]) if more and rows else None,
        searched=filters.q.strip(),
        notes=notes,
    )


def export_query(region: str | None, status: str | None) -> sa.Select[tuple[int, str, str, str, str | None]]:
    """Subscribers for export or listing, oldest first, optionally of one region code and status."""
    query = sa.select(_sub.c.id, _sub.c.email, _sub.c.name, _sub.c.status, _sub.c.timezone).order_by(
        _sub.c.id
    )
    return filtered(query, region or "", status or "")


def export_rows(conn: sa.Connection, region: str | None, status: str | None) -> Iterator[list[str]]:
    """The CSV rows of an export in the import format, header first, streamed in chunks of 2,000:
    an export imports back unchanged."""
    yield list(COLUMNS)
    result = conn.execution_options(yield_per=2000).execute(export_query(region, status))
    for chunk in result.partitions():
        regions = subscriber_regions(conn, [r.id for r in chunk])
        for row in chunk:
            yield [row.email, row.name, ";".join(regions.get(row.id, [])), row.status, row.timezone or ""]


@dataclass(frozen=True)
class Listing:
    """The first `limit` subscribers of an export-style filter, how many match in all, and their regions."""

    rows: list[Any]
    total: int
    regions: dict[int, list[str]]


def listing(conn: sa.Connection, region: str | None, status: str | None, limit: int = 0) -> Listing:
    """Subscribers oldest first (at most `limit`, 0 for all), as `newsletter subscribers list` shows them."""
    query = export_query(region, status)
    rows = list(conn.execute(query.limit(limit) if limit else query))
    total = conn.execute(sa.select(sa.func.count()).select_from(query.subquery())).scalar_one()
    return Listing(rows, int(total), subscriber_regions(conn, [r.id for r in rows]))
