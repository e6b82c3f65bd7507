"""Editing a bulletin by hand: its header (title, subject, verse, intro) and its items (add, edit, move,
delete), and the rule that a bulletin without items cannot be sent.

Both doors (the admin and the CLI) call these functions, so a rule holds whichever door a person uses:
only a bulletin in `EDITABLE_BULLETIN` changes, an item has text, a known kind and a known region, and
every change is audited in the caller's transaction (the caller commits).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sqlmodel import Session

from newsletter.content import queries
from newsletter.content.bulletins import change_status, get_bulletin
from newsletter.core import audit
from newsletter.core.errors import InvalidTransition, NewsletterError, NotFound
from newsletter.core.models import Bulletin, Item, utcnow
from newsletter.core.status import EDITABLE_BULLETIN, BulletinStatus, ItemKind

Direction = Literal["up", "down"]
MAX_TITLE = 200
MAX_REFERENCE = 120
AUDITED_BODY = 200
"""How much of a deleted item's text the audit entry keeps (enough to recognise it)."""


@dataclass(frozen=True)
class HeaderEdit:
    """A bulletin header as typed; blank title or subject keep the current one."""

    title: str = ""
    subject: str = ""
    scripture_text: str = ""
    scripture_reference: str = ""
    intro: str = ""


def _line(text: str, limit: int) -> str:
    """One line of at most `limit` characters: runs of whitespace, line breaks included, become one space."""
    return " ".join(text.split())[:limit]


def ensure_sendable(session: Session, bulletin_id: int) -> None:
    """Raise unless the bulletin has at least one item: an empty bulletin is never sent or scheduled."""
    if not queries.has_items(session, bulletin_id):
        raise NewsletterError(f"bulletin {bulletin_id} has no items; a bulletin without items cannot be sent")


def editable_bulletin(session: Session, bulletin_id: int) -> Bulletin:
    """The bulletin, or InvalidTransition once sending has started (all recipients get the same text)."""
    bulletin = get_bulletin(session, bulletin_id)
    if bulletin.status not in EDITABLE_BULLETIN:
        raise InvalidTransition(f"a {bulletin.status} bulletin can no longer be edited")
    return bulletin


def _item(session: Session, bulletin_id: int, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None or item.bulletin_id != bulletin_id:
        raise NotFound(f"bulletin {bulletin_id} has no item {item_id}")
    return item


def _kind(kind: str) -> ItemKind:
    try:
        return ItemKind(kind.strip().lower())
    except ValueError as exc:
        raise NewsletterError(
            f"unknown kind {kind!r} (one of {', '.join(k.value for k in ItemKind)})"
        ) from exc


def _region_id(session: Session, code: str) -> int:
    found = queries.region_ids(session, [code.strip()])
    if not found:
        raise NotFound(f"unknown region {code!r}")
    return next(iter(found.values()))


def _body(body: str) -> str:
    text = body.strip()
    if not text:
        raise NewsletterError("an item needs some text")
    return text


def _touch(session: Session, bulletin: Bulletin) -> None:
    bulletin.updated_at = utcnow()
    session.add(bulletin)
    session.flush()


def edit_header(session: Session, bulletin_id: int, edit: HeaderEdit, *, actor: str) -> bool:
    """Set the header fields; True when anything changed (then audited as `bulletin.edit`)."""
    bulletin = editable_bulletin(session, bulletin_id)
    new: dict[str, Any] = {
        "title": _line(edit.title, MAX_TITLE) or bulletin.title,
        "subject": _line(edit.subject, MAX_TITLE) or bulletin.subject,
        "scripture_text": edit.scripture_text.strip(),
        "scripture_reference": _line(edit.scripture_reference, MAX_REFERENCE),
        "intro": edit.intro.strip(),
    }
    changes = audit.diff({k: getattr(bulletin, k) for k in new}, new)
    if not changes:
        return False
    for key, value in new.items():
        setattr(bulletin, key, value)
    audit.record(session, actor, "bulletin.edit", "bulletin", bulletin.id, changes)
    _touch(session, bulletin)
    return True


def add_item(
    session: Session, bulletin_id: int, region: str, body: str, kind: str = ItemKind.PRAY, *, actor: str
) -> Item:
    """Append an item to the bulletin (after every other item; it shows last in its region)."""
    bulletin = editable_bulletin(session, bulletin_id)
    item = Item(
        bulletin_id=bulletin_id,
        region_id=_region_id(session, region),
        kind=_kind(kind),
        position=queries.last_item_position(session, bulletin_id) + 1,
        body=_body(body),
    )
    session.add(item)
    session.flush()
    audit.record(
        session,
        actor,
        "bulletin.item.add",
        "bulletin",
        bulletin_id,
        {"item": item.id, "region": region, "kind": str(item.kind)},
    )
    _touch(session, bulletin)
    return item


def edit_item(
    session: Session,
    bulletin_id: int,
    item_id: int,
    *,
    body: str,
    kind: str = ItemKind.PRAY,
    region: str = "",
    actor: str,
) -> bool:
    """Change an item's text, kind and (when given) region; True when anything changed.

    The audit entry says that the text changed, not what it became: the text stays in the bulletin."""
    bulletin = editable_bulletin(session, bulletin_id)
    item = _item(session, bulletin_id, item_id)
    new_body, new_kind = _body(body), _kind(kind)
    new_region = _region_id(session, region) if region.strip() else item.region_id
    before: Mapping[str, Any] = {"body": item.body, "kind": item.kind, "region_id": item.region_id}
    changes = audit.diff(before, {"body": new_body, "kind": new_kind, "region_id": new_region})
    if not changes:
        return False
    item.body, item.kind, item.region_id = new_body, new_kind, new_region
    session.add(item)
    if "body" in changes:
        changes["body"] = ["…", "changed"]
    audit.record(session, actor, "bulletin.item.edit", "bulletin", bulletin_id, {"item": item_id, **changes})
    _touch(session, bulletin)
    return True


def move_item(session: Session, bulletin_id: int, item_id: int, direction: Direction, *, actor: str) -> bool:
    """Swap an item with its neighbour in the same region (items are ordered per region); False at an end."""
    if direction not in ("up", "down"):
        raise NewsletterError(f"unknown direction {direction!r} (up or down)")
    bulletin = editable_bulletin(session, bulletin_id)
    item = _item(session, bulletin_id, item_id)
    siblings = queries.items_of_region(session, bulletin_id, item.region_id)
    index = next(i for i, s in enumerate(siblings) if s.id == item.id)
    other = index - 1 if direction == "up" else index + 1
    if not 0 <= other < len(siblings):
        return False
    siblings[index], siblings[other] = siblings[other], siblings[index]
    positions = sorted(s.position for s in siblings)
    if len(set(positions)) < len(positions):  # repair ties so that a swap is visible
        positions = list(range(positions[0], positions[0] + len(siblings)))
    for sibling, position in zip(siblings, positions, strict=True):
        sibling.position = position
        session.add(sibling)
    audit.record(
        session,
        actor,
        "bulletin.item.move",
        "bulletin",
        bulletin_id,
        {"item": item_id, "direction": direction},
    )
    _touch(session, bulletin)
    return True


def delete_item(session: Session, bulletin_id: int, item_id: int, *, actor: str) -> None:
    """Remove an item; the audit entry keeps the start of its text."""
    bulletin = editable_bulletin(session, bulletin_id)
    item = _item(session, bulletin_id, item_id)
    audit.record(
        session,
        actor,
        "bulletin.item.delete",
        "bulletin",
        bulletin_id,
        {"item": item_id, "body": item.body[:AUDITED_BODY]},
    )
    session.delete(item)
    _touch(session, bulletin)


# --- readiness: the steps before the send path takes over -----------------------------------------------


def mark_ready(session: Session, bulletin_id: int, *, actor: str) -> Bulletin:
    """Draft → ready (it goes out at the next slot of the weekly schedule); refused when it has no items."""
    bulletin = get_bulletin(session, bulletin_id)
    ensure_sendable(session, bulletin_id)
    return change_status(session, bulletin, BulletinStatus.READY, actor=actor)


def back_to_draft(session: Session, bulletin_id: int, *, actor: str) -> Bulletin:
    return change_status(session, get_bulletin(session, bulletin_id), BulletinStatus.DRAFT, actor=actor)


def unschedule(session: Session, bulletin_id: int, *, actor: str) -> Bulletin:
    """Forget the bulletin's own send time: it goes out at the next weekly slot instead."""
    bulletin = get_bulletin(session, bulletin_id)
    status = BulletinStatus(bulletin.status)
    return change_status(session, bulletin, status, actor=actor, send_at=None, set_send_at=True)
