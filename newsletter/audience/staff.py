"""What staff and volunteers do to one subscriber: look them up, see their history, and change their
name, regions and status.

A status change follows `status.SUBSCRIBER_TRANSITIONS` (a lost address is never re-activated) and adds
the suppression `status.SUPPRESSION_FOR_STATUS` names, the same rule the ESP's events follow: a subscriber
marked bounced here is suppressed exactly as if SendGrid had reported the bounce. Unsubscribing goes
through `suppressions.unsubscribe`, like every other way of leaving. The admin and the CLI both call
`update_subscriber`; it works in the caller's transaction (the caller commits).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session

from newsletter.audience import queries, suppressions
from newsletter.audience.subscribers import normalize_email, validate_name
from newsletter.audience.timezones import change_timezone
from newsletter.content.queries import regions_in_order
from newsletter.core import audit, zones
from newsletter.core.errors import InvalidTransition, NewsletterError, NotFound
from newsletter.core.models import AuditEntry, Bulletin, Delivery, DeliveryEvent, Subscriber, utcnow
from newsletter.core.status import (
    SUBSCRIBER_TRANSITIONS,
    SUPPRESSION_FOR_STATUS,
    SubscriberStatus,
    check_subscriber,
)

HISTORY_ENTRIES = 200
HISTORY_DELIVERIES = 100
HISTORY_EVENTS = 500


@dataclass(frozen=True)
class SubscriberEdit:
    """What a person asked to change; None keeps the current value."""

    name: str | None = None
    status: str | None = None
    regions: Sequence[str] | None = None
    """Region codes; order does not matter (they are kept in display order)."""
    timezone: str | None = None
    """An IANA zone name (`core.zones`); deliveries not yet due move to it (`audience.timezones`)."""


class NoRegions(NewsletterError):
    """An edit that would leave a subscriber in no region. Refused, as the preference centre refuses it:
    no region stores nothing, the export writes an empty cell, and an empty cell imports as *all*
    regions, so an export and re-import would give the person every section."""


@dataclass
class History:
    entries: list[tuple[AuditEntry, dict[str, Any]]] = field(default_factory=list)
    deliveries: list[tuple[Delivery, Bulletin]] = field(default_factory=list)
    events: list[DeliveryEvent] = field(default_factory=list)

    @property
    def bulletin_of(self) -> dict[int | None, Bulletin]:
        """The bulletin of each delivery, for showing an event's bulletin."""
        return {d.id: b for d, b in self.deliveries}


def get_subscriber(session: Session, key: int | str) -> Subscriber:
    """A subscriber by id, or by address (any case); NotFound otherwise."""
    if isinstance(key, int) or key.strip().isdigit():
        found = session.get(Subscriber, int(key))
    else:
        try:
            email = normalize_email(key)
        except ValueError as exc:
            raise NotFound(f"no subscriber {key!r}: {exc}") from exc
        found = queries.subscriber_by_email(session, email)
    if found is None:
        raise NotFound(f"no subscriber {key}")
    return found


def allowed_statuses(subscriber: Subscriber) -> list[str]:
    """The current status first, then every status the lifecycle lets a person move it to."""
    current = SubscriberStatus(subscriber.status)
    return [current, *sorted(SUBSCRIBER_TRANSITIONS[current])]


def regions_of(session: Session, subscriber: Subscriber) -> list[str]:
    assert subscriber.id is not None
    return queries.subscriber_regions(session, [subscriber.id])[subscriber.id]


def history(session: Session, subscriber: Subscriber) -> History:
    """The subscriber's audit entries, latest deliveries and the ESP's events about them, newest first."""
    assert subscriber.id is not None
    entries = audit.entries(session, entity_type="subscriber", entity_id=subscriber.id, limit=HISTORY_ENTRIES)
    deliveries = queries.recent_deliveries(session, subscriber.id, HISTORY_DELIVERIES)
    ids = [d.id for d, _ in deliveries if d.id is not None]
    return History(
        entries=[(e, audit.changes_of(e)) for e in entries],
        deliveries=deliveries,
        events=queries.events_of_deliveries(session, ids, HISTORY_EVENTS),
    )


def _checked(subscriber: Subscriber, edit: SubscriberEdit) -> tuple[str, SubscriberStatus]:
    """The new name and status, or NewsletterError saying why not (nothing has changed yet)."""
    try:
        name = validate_name(edit.name) if edit.name is not None else subscriber.name
    except ValueError as exc:
        raise NewsletterError(str(exc)) from exc
    wanted = (edit.status or subscriber.status).strip().lower()
    try:
        status = SubscriberStatus(wanted)
    except ValueError as exc:
        known = ", ".join(s.value for s in SubscriberStatus)
        raise InvalidTransition(f"unknown status {wanted!r} (one of {known})") from exc
    check_subscriber(subscriber.status, status)
    return name, status


def _wanted_regions(session: Session, codes: Sequence[str]) -> dict[str, int]:
    """Region id by code for `codes`, in display order; NotFound names an unknown code, NoRegions
    refuses none at all."""
    if not codes:
        raise NoRegions("a subscriber needs at least one region")
    ordered = {r.code: r.id for r in regions_in_order(session) if r.id is not None}
    unknown = [c for c in codes if c not in ordered]
    if unknown:
        raise NotFound(f"unknown region {unknown[0]!r} (known: {', '.join(ordered)})")
    return {code: rid for code, rid in ordered.items() if code in set(codes)}


def _change_status(
    session: Session, subscriber: Subscriber, new: SubscriberStatus, actor: str, now: datetime
) -> list[Any] | None:
    """Apply a status change and its suppression; returns [old, new] for the audit entry, or None when
    `suppressions.unsubscribe` already audited it."""
    if new == SubscriberStatus.UNSUBSCRIBED:
        suppressions.unsubscribe(session, subscriber, actor=actor, how="admin", now=now)
        return None
    old = subscriber.status
    subscriber.status = new
    if new == SubscriberStatus.ACTIVE and subscriber.confirmed_at is None:
        subscriber.confirmed_at = now
    reason = SUPPRESSION_FOR_STATUS.get(new)
    if reason is not None:
        suppressions.add_many(session, [(subscriber.email, reason, f"set by {actor}")])
    return [old, str(new)]


def update_subscriber(session: Session, subscriber_id: int, edit: SubscriberEdit, *, actor: str) -> bool:
    """Change name, regions, time zone and status as `edit` asks; True when anything changed.

    Everything is checked before anything changes: a bad name, an unknown region or time zone, an empty
    region list (`NoRegions`), or a status the lifecycle forbids raises a NewsletterError and the
    subscriber stays as they were.
    """
    subscriber = get_subscriber(session, subscriber_id)
    assert subscriber.id is not None
    name, status = _checked(subscriber, edit)
    try:
        zone = zones.check_zone(edit.timezone) if edit.timezone is not None else None
    except ValueError as exc:
        raise NewsletterError(str(exc)) from exc
    wanted = _wanted_regions(session, edit.regions) if edit.regions is not None else None
    before_regions = regions_of(session, subscriber)
    changes: dict[str, Any] = {}
    now = utcnow()
    if name != subscriber.name:
        changes["name"] = [subscriber.name, name]
        subscriber.name = name
    if wanted is not None and list(wanted) != before_regions:
        changes["regions"] = [";".join(before_regions), ";".join(wanted)]
        queries.replace_regions(session, {subscriber.id: list(wanted.values())})
    status_changed = status != subscriber.status
    if status_changed and (change := _change_status(session, subscriber, status, actor, now)):
        changes["status"] = change
    moved = zone is not None and change_timezone(session, subscriber, zone, actor=actor, now=now)
    if changes:
        subscriber.updated_at = now
        session.add(subscriber)
        audit.record(session, actor, "subscriber.update", "subscriber", subscriber.id, changes)
    session.flush()
    return bool(changes) or status_changed or moved
