"""What the ESP reports about messages, applied to the delivery ledger, subscribers and suppressions.

    events = parse_events(body)              # pure: the whole batch, or MalformedEvents (store nothing)
    report = apply_events(session, events)   # a handful of set-based statements per batch

Rules (the last step of the send path in `docs/architecture.md`):
- each event is stored once, by its ESP event id (`INSERT … ON CONFLICT DO NOTHING`); an event seen
  before (a replayed or retried batch) is not applied again;
- an event finds its delivery through `custom_args.delivery_id`, which SendGrid copies into the event;
- a delivery only moves forward (`status.delivery_moves_forward`): processed < deferred < delivered,
  bounce, dropped and spamreport are final, so events arriving out of order end in the same state;
- a hard bounce (type `bounce`, not `blocked`) and a spam report suppress the address and mark the
  subscriber bounced / complained; `unsubscribe` and `group_unsubscribe` unsubscribe it;
- the stronger report wins whatever the order: a bounce or complaint after an unsubscribe raises the
  suppression's reason (`suppressions.add_many`) and moves the unsubscribed subscriber to bounced /
  complained, so the address can never come back by confirming again; a later unsubscribe weakens
  nothing;
- the address an event names is normalised as the subscribers' are, and an internationalised domain
  is looked up in both spellings (`subscribers.spellings`): SendGrid reports the ASCII one it was
  given, the subscriber is stored as typed; the suppression holds both;
- opens, clicks and the rest are stored for the dashboard and change nothing else;
- every new event is also counted into the engagement report's rollups (`newsletter.sending.engagement`).

Work per batch is one SELECT of deliveries, one INSERT of events, one UPDATE per target status, one
SELECT and at most three UPDATEs of subscribers, one INSERT of suppressions: never a statement per event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from newsletter.audience import suppressions
from newsletter.audience.subscribers import spellings
from newsletter.core import audit
from newsletter.core.dialect import insert_ignoring_duplicates, is_pg, one_of
from newsletter.core.models import (
    DELIVERY,
    DELIVERY_EVENT,
    SUBSCRIBER,
    utcnow,
)
from newsletter.core.status import (
    DELIVERY_RANK,
    SUBSCRIBER_TRANSITIONS,
    SUPPRESSION_FOR_STATUS,
    DeliveryStatus,
    SubscriberStatus,
    delivery_moves_forward,
)
from newsletter.esp.sendgrid.events import DELIVERY_STATUS_OF, Event
from newsletter.sending import engagement

ESP_ACTOR = "sendgrid"

# PostgreSQL: the whole batch as one JSON parameter. A short query text that psycopg parses once and
# one string to send, where a multi-row VALUES list would be a new 6,000-parameter query for every
# batch (and text arrays cost psycopg a regex pass over every payload).
_PG_INSERT_EVENTS = sa.text(
    """
    INSERT INTO delivery_event (esp_event_id, delivery_id, event, occurred_at, received_at, payload)
    SELECT e.esp_event_id, e.delivery_id, e.event, to_timestamp(e.ts), :received_at, e.payload
    FROM json_to_recordset(CAST(:rows AS json))
         AS e(esp_event_id varchar, delivery_id bigint, event varchar, ts double precision, payload text)
    ON CONFLICT (esp_event_id) DO NOTHING
    RETURNING esp_event_id
    """
)

# What an event does to the subscriber, strongest first: one batch may carry several for one address.
_SUBSCRIBER_EFFECTS = tuple(SUPPRESSION_FOR_STATUS.items())
_STRENGTH = {status: i for i, (status, _) in enumerate(_SUBSCRIBER_EFFECTS)}
_REASON = dict(_SUBSCRIBER_EFFECTS)


@dataclass
class EventReport:
    received: int = 0
    new: int = 0
    """Events not seen before (the others were replays and were not applied again)."""
    deliveries_updated: int = 0
    subscribers_changed: int = 0
    suppressed: int = 0
    unknown_deliveries: int = 0
    by_event: dict[str, int] = field(default_factory=dict)


def _sources(table: dict[Any, frozenset[Any]], target: Any) -> list[str]:
    """Every status from which `table` allows a move to `target`."""
    return [str(s) for s, allowed in table.items() if target in allowed]


def _delivery_sources(target: DeliveryStatus) -> list[str]:
    return [str(s) for s in DeliveryStatus if delivery_moves_forward(s, target)]


def _store(session: Session, rows: list[dict[str, Any]], now: datetime) -> set[str]:
    """Insert the events not stored before; returns the ids of those that were new."""
    if is_pg(session):
        batch = [
            {
                "esp_event_id": r["esp_event_id"],
                "delivery_id": r["delivery_id"],
                "event": r["event"],
                "ts": r["occurred_at"].timestamp(),
                "payload": r["payload"],
            }
            for r in rows
        ]
        result = session.execute(_PG_INSERT_EVENTS, {"received_at": now, "rows": json.dumps(batch)})
        return set(result.scalars())
    # One cached statement over all rows: SQLAlchemy's "insertmanyvalues" sends them as multi-row
    # INSERTs without compiling a new statement per batch, as `.values([...])` would.
    table = DELIVERY_EVENT
    stmt = insert_ignoring_duplicates(session, table).returning(table.c.esp_event_id)
    return set(session.execute(stmt, [{**r, "received_at": now} for r in rows]).scalars())


def apply_events(
    session: Session, events: Sequence[Event], *, actor: str = ESP_ACTOR, now: datetime | None = None
) -> EventReport:
    """Store and apply a batch of events in the session's transaction (the caller commits)."""
    now = now or utcnow()
    report = EventReport(received=len(events))
    unique: dict[str, Event] = {}
    for event in events:
        unique.setdefault(event.esp_event_id, event)
    if not unique:
        return report
    wanted = {e.delivery_id for e in unique.values() if e.delivery_id is not None}
    known = _known_deliveries(session, wanted)
    report.unknown_deliveries = len(wanted) - len(known)
    fresh = _store_new(session, list(unique.values()), known, now)
    report.new = len(fresh)
    for e in fresh:
        report.by_event[e.event] = report.by_event.get(e.event, 0) + 1
    engagement.record(session, fresh)  # the report's rollups, in this same transaction
    report.deliveries_updated = _advance_deliveries(session, fresh, known, now)
    _apply_subscriber_effects(session, fresh, report, actor, now)
    return report


def _known_deliveries(session: Session, wanted_ids: set[int]) -> dict[int, int | None]:
    """delivery id → subscriber id, for the ids that exist (an event may name mail we never sent)."""
    if not wanted_ids:
        return {}
    d = DELIVERY.c
    rows = session.execute(sa.select(d.id, d.subscriber_id).where(one_of(session, d.id, wanted_ids)))
    return {did: sid for did, sid in rows}


def _store_new(
    session: Session, events: list[Event], known: dict[int, int | None], now: datetime
) -> list[Event]:
    """Store every event once; returns the ones not seen before (the others are not applied again)."""
    new_ids = _store(
        session,
        [
            {
                "esp_event_id": e.esp_event_id,
                "delivery_id": e.delivery_id if e.delivery_id in known else None,
                "event": e.event,
                "occurred_at": e.occurred_at,
                "payload": e.payload,
            }
            for e in events
        ],
        now,
    )
    return [e for e in events if e.esp_event_id in new_ids]


def _advance_deliveries(
    session: Session, fresh: list[Event], known: dict[int, int | None], now: datetime
) -> int:
    """Move each delivery to the furthest status it reached in this batch: one UPDATE per target status,
    whose WHERE on the current status keeps the only-forward rule even against a concurrent batch."""
    furthest: dict[int, DeliveryStatus] = {}
    for e in fresh:
        status = DELIVERY_STATUS_OF.get(e.event)
        if status is None or e.delivery_id is None or e.delivery_id not in known:
            continue
        current = furthest.get(e.delivery_id)
        if current is None or DELIVERY_RANK[status] > DELIVERY_RANK[current]:
            furthest[e.delivery_id] = status
    by_target: dict[DeliveryStatus, list[int]] = {}
    for did, status in furthest.items():
        by_target.setdefault(status, []).append(did)
    updated = 0
    d = DELIVERY.c
    for target, ids in by_target.items():
        result = session.execute(
            sa.update(DELIVERY)
            .where(one_of(session, d.id, ids), d.status.in_(_delivery_sources(target)))
            .values(status=target, updated_at=now)
        )
        updated += result.rowcount  # type: ignore[attr-defined]
    return updated


def _apply_subscriber_effects(
    session: Session, fresh: list[Event], report: EventReport, actor: str, now: datetime
) -> None:
    """Suppress and update subscribers: the strongest effect per address in this batch, audited.

    An event names the address the ESP was given, which for an internationalised domain is its ASCII
    spelling, while the subscriber is stored with the Unicode one (`subscribers.spellings`): the effect
    reaches the subscriber under either, and the suppression holds both the reported spelling and the
    stored one, which is the one the send path and the sign-up form check."""
    effects: dict[str, tuple[SubscriberStatus, Event]] = {}
    reported: set[str] = set()
    for e in fresh:
        effect = e.subscriber_effect()
        if effect is None or not e.email:
            continue
        forms = spellings(e.email)
        reported.add(forms[0])
        for email in forms:
            held = effects.get(email)
            if held is None or _STRENGTH[effect] < _STRENGTH[held[0]]:
                effects[email] = (effect, e)
    if not effects:
        return
    s = SUBSCRIBER.c
    found = session.execute(sa.select(s.id, s.email, s.status).where(one_of(session, s.email, effects))).all()
    stored = {email for _, email, _ in found}
    report.suppressed = suppressions.add_many(
        session,
        [
            (email, _REASON[status], f"{e.event} {e.esp_event_id}")
            for email, (status, e) in effects.items()
            if email in stored or email in reported
        ],
    )
    email_of = {sid: email for sid, email, _ in found}
    by_status: dict[SubscriberStatus, dict[int, str]] = {}
    for sid, email, current in found:
        by_status.setdefault(effects[email][0], {})[sid] = current
    for new_status, before in by_status.items():
        values: dict[str, Any] = {"status": new_status, "updated_at": now}
        if new_status == SubscriberStatus.UNSUBSCRIBED:
            values["unsubscribed_at"] = now
        changed = session.execute(
            sa.update(SUBSCRIBER)
            .where(one_of(session, s.id, before), s.status.in_(_sources(SUBSCRIBER_TRANSITIONS, new_status)))
            .values(**values)
            .returning(s.id)
        ).scalars()
        for sid in changed:
            report.subscribers_changed += 1
            audit.record(
                session,
                actor,
                f"subscriber.{new_status}",
                "subscriber",
                sid,
                {"status": [before[sid], str(new_status)], "event": effects[email_of[sid]][1].event},
            )
