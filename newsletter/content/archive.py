"""The public archive's reads: published bulletins only, newest first, in keyset pages.

    latest(session, n)                    the newest n, for the home page and the feeds
    archive_page(session, before, size)   one page of /archive; `next_before` continues it
    published(session, bulletin_id)       one bulletin with its content, or NotFound
    published_entry(session, bulletin_id) the same without the content (a cached page needs no more)
    contents(session, entries)            the content of many bulletins in one query (the feeds)
    version(session)                      what changes whenever the archive does (cache keys, ETags)

"Published" is `PUBLISHED_BULLETIN` (sending or sent): a draft, a scheduled, a paused or a cancelled
bulletin is never returned, and a bulletin that is not published is NotFound exactly like one that
does not exist. Order: when the bulletin went out, then id, both descending; pages continue after the
last id shown (a keyset, so a page costs the same however deep it is).

URLs of archive pages (`path`) are built here too, since the web pages, the feeds and the emails'
"view online" link must agree on them.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import sqlalchemy as sa
from sqlmodel import Session

from newsletter.content.types import BulletinContent, ItemContent, Section
from newsletter.core.errors import NotFound
from newsletter.core.models import BULLETIN, ITEM, REGION
from newsletter.core.status import PUBLISHED_BULLETIN, ItemKind

_NOT_SLUG = re.compile(r"[^a-z0-9]+")
SLUG_CHARS = 60


@dataclass(frozen=True)
class ArchiveEntry:
    id: int
    title: str
    scripture_text: str
    scripture_reference: str
    intro: str
    published_at: datetime
    updated_at: datetime

    @property
    def path(self) -> str:
        return path(self.id, self.title)


@dataclass(frozen=True)
class ArchivePage:
    entries: list[ArchiveEntry]
    next_before: int | None
    """The id to continue after (`?before=`), None on the last page."""


def slug(title: str) -> str:
    """A readable URL fragment of a title: ASCII letters and digits joined by hyphens ("" if none)."""
    ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
    return _NOT_SLUG.sub("-", ascii_title.lower()).strip("-")[:SLUG_CHARS].rstrip("-")


def path(bulletin_id: int, title: str = "", regions: Sequence[str] = ()) -> str:
    """`/archive/{id}-{slug}`, with `?regions=a,b` when only some regions are wanted."""
    tail = slug(title)
    url = f"/archive/{bulletin_id}-{tail}" if tail else f"/archive/{bulletin_id}"
    if regions:
        url += "?regions=" + quote(",".join(regions), safe=",")
    return url


def published_at_column() -> sa.ColumnElement[Any]:
    b = BULLETIN
    return sa.func.coalesce(b.c.started_at, b.c.send_at, b.c.created_at)


def _entries_query() -> sa.Select[Any]:
    b = BULLETIN
    published = published_at_column().label("published_at")
    return (
        sa.select(
            b.c.id,
            b.c.title,
            b.c.scripture_text,
            b.c.scripture_reference,
            b.c.intro,
            published,
            b.c.updated_at,
        )
        .where(b.c.status.in_([str(s) for s in PUBLISHED_BULLETIN]))
        .order_by(published.desc(), b.c.id.desc())
    )


def _entry(row: Any) -> ArchiveEntry:
    return ArchiveEntry(
        id=int(row.id),
        title=row.title,
        scripture_text=row.scripture_text,
        scripture_reference=row.scripture_reference,
        intro=row.intro,
        published_at=row.published_at,
        updated_at=max(row.updated_at, row.published_at),
    )


def latest(session: Session, limit: int) -> list[ArchiveEntry]:
    return [_entry(r) for r in session.execute(_entries_query().limit(limit))]


def archive_page(session: Session, before: int | None, size: int) -> ArchivePage:
    """The `size` published bulletins after bulletin `before` in archive order (the newest without it)."""
    query = _entries_query()
    if before is not None:
        b = BULLETIN
        anchor = sa.select(published_at_column()).where(b.c.id == before).scalar_subquery()
        query = query.where(sa.tuple_(published_at_column(), b.c.id) < sa.tuple_(anchor, before))
    rows = [_entry(r) for r in session.execute(query.limit(size + 1))]
    more = len(rows) > size
    rows = rows[:size]
    return ArchivePage(rows, rows[-1].id if more and rows else None)


def contents(session: Session, entries: Sequence[ArchiveEntry]) -> dict[int, BulletinContent]:
    """Each entry's content (sections in region order), from one query over all their items."""
    i, r = ITEM, REGION
    sections: dict[int, list[Section]] = {e.id: [] for e in entries}
    if not entries:
        return {}
    rows = session.execute(
        sa.select(i.c.bulletin_id, i.c.kind, i.c.body, r.c.code, r.c.name)
        .join(r, r.c.id == i.c.region_id)
        .where(i.c.bulletin_id.in_(list(sections)))
        .order_by(i.c.bulletin_id, r.c.position, r.c.id, i.c.position, i.c.id)
    )
    for bulletin_id, kind, body, code, name in rows:
        own = sections[int(bulletin_id)]
        if not own or own[-1].region_code != code:
            own.append(Section(code, name, ()))
        last = own[-1]
        own[-1] = Section(code, name, (*last.items, ItemContent(ItemKind(kind), body)))
    return {
        e.id: BulletinContent(
            id=e.id,
            title=e.title,
            subject=e.title,
            scripture_text=e.scripture_text,
            scripture_reference=e.scripture_reference,
            intro=e.intro,
            sections=tuple(sections[e.id]),
        )
        for e in entries
    }


def published_entry(session: Session, bulletin_id: int) -> ArchiveEntry:
    """A published bulletin; NotFound for any other (a draft looks exactly like no bulletin)."""
    row = session.execute(_entries_query().where(BULLETIN.c.id == bulletin_id)).first()
    if row is None:
        raise NotFound(f"no published bulletin {bulletin_id}")
    return _entry(row)


def published(session: Session, bulletin_id: int) -> tuple[ArchiveEntry, BulletinContent]:
    """A published bulletin and its content; NotFound for any other."""
    entry = published_entry(session, bulletin_id)
    return entry, contents(session, [entry])[entry.id]


def version(session: Session) -> tuple[int, int, datetime | None]:
    """(how many, highest id, latest change) of the published bulletins: changes whenever the archive does."""
    b = BULLETIN
    count, top, changed = session.execute(
        sa.select(sa.func.count(), sa.func.max(b.c.id), sa.func.max(b.c.updated_at)).where(
            b.c.status.in_([str(s) for s in PUBLISHED_BULLETIN])
        )
    ).one()
    return int(count), int(top or 0), changed
