"""Bulletins in the database: import, load as content, describe, and move through their lifecycle."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlmodel import Session

from newsletter.content import queries
from newsletter.content.parse import parse_bulletin as _parse
from newsletter.content.regions import RegionIndex
from newsletter.content.types import BulletinContent, ItemContent, Section
from newsletter.core import audit
from newsletter.core.config import Settings
from newsletter.core.errors import ImportFailed, NewsletterError, NotFound, Problem
from newsletter.core.models import Bulletin, Item, utcnow
from newsletter.core.status import BulletinStatus, ItemKind, check_bulletin


def parse_bulletin(text: str, settings: Settings, *, source: str = "bulletin") -> BulletinContent:
    """Parse the text or Markdown bulletin format with the configured regions and aliases."""
    return _parse(text, RegionIndex.from_settings(settings), settings.DEFAULT_REGION, source=source)


def read_bulletin_file(path: Path, settings: Settings) -> BulletinContent:
    """Parse a bulletin file; undecodable bytes are reported with their line number."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImportFailed(str(path), [Problem(0, f"cannot read the file: {exc.strerror or exc}")]) from exc
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ImportFailed(
            str(path), [Problem(line, "not valid UTF-8 text; save the file as UTF-8")]
        ) from exc
    return _parse(text, RegionIndex.from_settings(settings), settings.DEFAULT_REGION, source=str(path))


def store_bulletin(
    session: Session,
    content: BulletinContent,
    *,
    status: BulletinStatus = BulletinStatus.DRAFT,
    send_at: datetime | None = None,
    actor: str = audit.CLI_ACTOR,
) -> Bulletin:
    """Insert a bulletin and its items in the session's transaction; regions must exist (`init`)."""
    ids = queries.region_ids(session)
    missing = [s.region_code for s in content.sections if s.region_code not in ids]
    if missing:
        raise NotFound(f"regions {', '.join(missing)} are not in the database; run `newsletter init`")
    bulletin = Bulletin(
        title=content.title,
        subject=content.subject,
        scripture_text=content.scripture_text,
        scripture_reference=content.scripture_reference,
        intro=content.intro,
        status=status,
        send_at=send_at,
    )
    session.add(bulletin)
    session.flush()
    assert bulletin.id is not None
    position = 0
    for section in content.sections:
        for item in section.items:
            session.add(
                Item(
                    bulletin_id=bulletin.id,
                    region_id=ids[section.region_code],
                    kind=item.kind,
                    position=position,
                    body=item.body,
                )
            )
            position += 1
    audit.record(
        session, actor, "bulletin.create", "bulletin", bulletin.id, {"title": content.title, "status": status}
    )
    session.flush()
    return bulletin


def get_bulletin(session: Session, bulletin_id: int) -> Bulletin:
    bulletin = session.get(Bulletin, bulletin_id)
    if bulletin is None:
        raise NotFound(f"no bulletin {bulletin_id}")
    return bulletin


def load_content(session: Session, bulletin_id: int) -> BulletinContent:
    """The bulletin as render-ready content: sections in region order, items in their order."""
    bulletin = get_bulletin(session, bulletin_id)
    rows = queries.items_with_regions(session, bulletin_id)
    sections: list[Section] = []
    for item, region in rows:
        if not sections or sections[-1].region_code != region.code:
            sections.append(Section(region.code, region.name, ()))
        last = sections[-1]
        sections[-1] = Section(
            last.region_code, last.region_name, (*last.items, ItemContent(ItemKind(item.kind), item.body))
        )
    return BulletinContent(
        id=bulletin.id,
        title=bulletin.title,
        subject=bulletin.subject,
        scripture_text=bulletin.scripture_text,
        scripture_reference=bulletin.scripture_reference,
        intro=bulletin.intro,
        sections=tuple(sections),
    )


def describe(session: Session, bulletin_id: int) -> dict[str, Any]:
    """The JSON shape of `bulletins show --json` (a contract: scripts rely on it)."""
    bulletin = get_bulletin(session, bulletin_id)
    content = load_content(session, bulletin_id)
    return {
        "id": bulletin.id,
        "title": bulletin.title,
        "subject": bulletin.subject,
        "status": bulletin.status,
        "send_at": bulletin.send_at.isoformat() if bulletin.send_at else None,
        "scripture": {"text": bulletin.scripture_text, "reference": bulletin.scripture_reference},
        "sections": [
            {
                "region": s.region_code,
                "name": s.region_name,
                "items": [{"kind": str(i.kind), "body": i.body} for i in s.items],
            }
            for s in content.sections
        ],
    }


def list_bulletins(session: Session, limit: int = 100) -> list[tuple[Bulletin, int]]:
    """Newest first, each with its item count."""
    return queries.bulletins_with_item_counts(session, limit)


def change_status(
    session: Session,
    bulletin: Bulletin,
    new: BulletinStatus,
    *,
    actor: str = audit.CLI_ACTOR,
    reason: str = "",
    send_at: datetime | None = None,
    set_send_at: bool = False,
) -> Bulletin:
    """Move a bulletin through its lifecycle (rules in `newsletter.core.status`), audited."""
    old = bulletin.status
    if new != old:
        check_bulletin(old, new)
    changes: dict[str, Any] = {"status": [old, str(new)]}
    bulletin.status = new
    if set_send_at:
        changes["send_at"] = [bulletin.send_at, send_at]
        bulletin.send_at = send_at
    if reason:
        bulletin.last_error = reason
        changes["reason"] = reason
    bulletin.updated_at = utcnow()
    session.add(bulletin)
    audit.record(session, actor, f"bulletin.{new}", "bulletin", bulletin.id, changes)
    session.flush()
    return bulletin


def parse_send_at(text: str, settings: Settings) -> datetime:
    """An ISO-8601 time; without an offset it is read in `TIMEZONE`. Returned in UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise NewsletterError(f"not an ISO-8601 time: {text!r} (e.g. 2026-11-30T07:00)") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=settings.tz)
    return when.astimezone(UTC)
