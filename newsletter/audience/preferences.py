"""The preference centre's operations on one subscriber: name, regions, pause, my data, erase me.

Each function works in the caller's transaction and records an audit entry (actor `subscriber`) for
every change. Unsubscribing is `suppressions.unsubscribe`, shared with one-click and the ESP webhook.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from newsletter.audience.optin import set_regions
from newsletter.audience.queries import subscriber_regions
from newsletter.audience.subscribers import validate_name
from newsletter.core import audit
from newsletter.core.dialect import insert_ignoring_duplicates
from newsletter.core.models import (
    BULLETIN,
    DELIVERY,
    DELIVERY_EVENT,
    SUPPRESSION,
    AuditEntry,
    Subscriber,
    utcnow,
)
from newsletter.core.status import SuppressionReason

MAX_PAUSE_WEEKS = 52
ERASED = "[erased]"


def regions_of(session: Session, subscriber: Subscriber) -> list[str]:
    assert subscriber.id is not None
    return subscriber_regions(session, [subscriber.id])[subscriber.id]


def _record(
    session: Session, subscriber: Subscriber, what: str, field: str, before: Any, after: Any, now: datetime
) -> None:
    """Save a change the subscriber made to `field` and audit it (actor `subscriber`, old and new)."""
    subscriber.updated_at = now
    session.add(subscriber)
    audit.record(
        session, audit.SUBSCRIBER_ACTOR, f"subscriber.{what}", "subscriber", subscriber.id,
        {field: [before, after]},
    )  # fmt: skip


def change_name(session: Session, subscriber: Subscriber, raw: str, *, now: datetime | None = None) -> bool:
    """Set the name bulletins greet the subscriber by (empty: "friend"); True when it changed.

    The first request for an address stored whatever name its sender typed, and nothing shows that
    name before confirming (an attacker's words must not be emailed to someone else), so the owner
    must be able to see and replace it here. ValueError, changing nothing, for a name `validate_name`
    refuses.
    """
    name = validate_name(raw)
    if name == subscriber.name:
        return False
    before = subscriber.name
    subscriber.name = name
    _record(session, subscriber, "name", "name", before, name, now or utcnow())
    return True


def change_regions(
    session: Session, subscriber: Subscriber, codes: Sequence[str], *, now: datetime | None = None
) -> bool:
    """Set the subscriber's regions to `codes` (at least one, known codes); True when they changed."""
    if not codes:
        raise ValueError("choose at least one region")
    before = regions_of(session, subscriber)
    if set(before) == set(codes):
        return False
    assert subscriber.id is not None
    set_regions(session, subscriber.id, codes)
    _record(session, subscriber, "regions", "regions", before, list(codes), now or utcnow())
    return True


def pause(session: Session, subscriber: Subscriber, weeks: int, *, now: datetime | None = None) -> datetime:
    """Pause deliveries for `weeks` (1 to MAX_PAUSE_WEEKS) from now; returns the end of the pause."""
    if not 1 <= weeks <= MAX_PAUSE_WEEKS:
        raise ValueError(f"choose between 1 and {MAX_PAUSE_WEEKS} weeks")
    now = now or utcnow()
    before = subscriber.paused_until
    subscriber.paused_until = until = now + timedelta(weeks=weeks)
    _record(session, subscriber, "pause", "paused_until", before, until, now)
    return until


def resume(session: Session, subscriber: Subscriber, *, now: datetime | None = None) -> bool:
    if subscriber.paused_until is None:
        return False
    before = subscriber.paused_until
    subscriber.paused_until = None
    _record(session, subscriber, "resume", "paused_until", before, None, now or utcnow())
    return True


def is_paused(subscriber: Subscriber, now: datetime | None = None) -> bool:
    return subscriber.paused_until is not None and subscriber.paused_until > (now or utcnow())


def personal_data(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    """Everything stored about the subscriber, as JSON-ready values (the "download my data" file)."""
    delivery = DELIVERY
    bulletin = BULLETIN
    event = DELIVERY_EVENT
    deliveries = session.execute(
        sa.select(delivery.c.id, bulletin.c.title, delivery.c.variant, delivery.c.status, delivery.c.sent_at)
        .join(bulletin, bulletin.c.id == delivery.c.bulletin_id)
        .where(delivery.c.subscriber_id == subscriber.id)
        .order_by(delivery.c.id)
    ).all()
    events = session.execute(
        sa.select(event.c.delivery_id, event.c.event, event.c.occurred_at)
        .where(event.c.delivery_id.in_([d.id for d in deliveries]))
        .order_by(event.c.occurred_at)
    ).all() if deliveries else []  # fmt: skip
    by_delivery: dict[int, list[dict[str, str]]] = {}
    for did, name, at in events:
        by_delivery.setdefault(did, []).append({"event": name, "at": at.isoformat()})

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value else None

    return {
        "email": subscriber.email,
        "name": subscriber.name,
        "status": subscriber.status,
        "source": subscriber.source,
        "regions": regions_of(session, subscriber),
        "created_at": iso(subscriber.created_at),
        "confirmed_at": iso(subscriber.confirmed_at),
        "unsubscribed_at": iso(subscriber.unsubscribed_at),
        "paused_until": iso(subscriber.paused_until),
        "deliveries": [
            {
                "bulletin": d.title,
                "regions": d.variant.split(",") if d.variant else [],
                "status": d.status,
                "sent_at": iso(d.sent_at),
                "events": by_delivery.get(d.id, []),
            }
            for d in deliveries
        ],
    }


def _scrub(value: Any, email: str, names: frozenset[str]) -> Any:
    """`value` with every string that holds `email`, or is exactly one of `names`, replaced by ERASED."""
    if isinstance(value, str):
        return ERASED if email in value or value in names else value
    if isinstance(value, list):
        return [_scrub(v, email, names) for v in value]
    if isinstance(value, dict):
        return {k: _scrub(v, email, names) for k, v in value.items()}
    return value


def _names_in(changes: Any) -> set[str]:
    """The names an audit entry's changes recorded (`{"name": [before, after]}`), empty ones left out."""
    recorded = changes.get("name") if isinstance(changes, dict) else None
    values = recorded if isinstance(recorded, list) else [recorded]
    return {v for v in values if isinstance(v, str) and v}


def erase(session: Session, subscriber: Subscriber) -> None:
    """Delete the subscriber's personal data and keep only the hash of the address, suppressed.

    The subscriber row goes (its subscriptions with it); deliveries stay, anonymous, for the send
    statistics; ESP events of those deliveries lose their payload (it holds the address); audit entries
    lose every value that held the address, and their own entries every name the subscriber had (a
    name changed in the preference centre or by staff is in its audit entry). The suppression (reason
    `erased`, no address) makes a later subscription or import of the same address store nothing.
    """
    assert subscriber.id is not None
    sid, email, name = subscriber.id, subscriber.email, subscriber.name
    suppression = SUPPRESSION
    session.execute(
        sa.update(suppression)
        .where(suppression.c.email_hash == subscriber.email_hash)
        .values(email=None, reason=SuppressionReason.ERASED, note="")
    )
    session.execute(
        insert_ignoring_duplicates(session, suppression).values(
            email_hash=subscriber.email_hash, email=None, reason=SuppressionReason.ERASED, note="",
            created_at=utcnow(),
        )
    )  # fmt: skip
    delivery = DELIVERY
    event = DELIVERY_EVENT
    session.execute(
        sa.update(event)
        .where(
            sa.or_(
                event.c.delivery_id.in_(sa.select(delivery.c.id).where(delivery.c.subscriber_id == sid)),
                event.c.payload.contains(email, autoescape=True),
            )
        )
        .values(payload="{}")
    )
    entries = session.exec(
        select(AuditEntry).where(
            sa.or_(
                sa.and_(col(AuditEntry.entity_type) == "subscriber", col(AuditEntry.entity_id) == sid),
                col(AuditEntry.changes).contains(email, autoescape=True),
            )
        )
    ).all()
    own = {e.id for e in entries if e.entity_type == "subscriber" and e.entity_id == sid}
    names = {name} if name else set()
    for entry in entries:
        names |= _names_in(json.loads(entry.changes)) if entry.id in own else set()
    for entry in entries:
        scrubbed = json.dumps(
            _scrub(json.loads(entry.changes), email, frozenset(names if entry.id in own else ()))
        )
        if scrubbed != entry.changes:
            entry.changes = scrubbed
            session.add(entry)
    session.delete(subscriber)
    session.flush()
    audit.record(session, audit.SUBSCRIBER_ACTOR, "subscriber.erase", "subscriber", sid, {})
