"""Suppressions: addresses never to be mailed again, keyed by the hash of the normalised address.

The hash is the key so that a suppression outlives the erasure of the address itself (`reason` `erased`,
`email` NULL): the erased address can still be recognised when someone types it again, and is refused.
An address has one suppression, whose reason only rises (`status.SUPPRESSION_RANK`): a complaint after
an unsubscribe must not be lost, because only an unsubscribe may be undone by confirming again.
Planning and batch claims (newsletter.sending.dispatcher) read the table; this module writes it.

`unsubscribe` is the one way a subscriber leaves: the web page, RFC 8058 one-click, the preference
centre and the ESP's unsubscribe events all go through it, so the status change, the suppression and
the audit entry always come together.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from newsletter.core import audit
from newsletter.core.dialect import insert
from newsletter.core.errors import InvalidTransition, NotFound
from newsletter.core.models import SUPPRESSION, DeliveryEvent, Subscriber, Suppression, email_hash, utcnow
from newsletter.core.status import (
    SUPPRESSION_RANK,
    SubscriberStatus,
    SuppressionReason,
    check_subscriber,
    suppression_rises,
)
from newsletter.esp.sendgrid.events import reason_of

LIFTED_BY_CONFIRMATION = frozenset({SuppressionReason.UNSUBSCRIBE})
"""Reasons a person may undo by subscribing again and confirming: their own choice, nothing else.
A bounce, a complaint, an erasure or a staff decision keeps the address suppressed for good."""


def find(session: Session, email: str) -> Suppression | None:
    """The suppression of a normalised address, if any (erased ones too: they are found by hash)."""
    return session.exec(select(Suppression).where(Suppression.email_hash == email_hash(email))).first()


def is_suppressed(session: Session, email: str) -> bool:
    return find(session, email) is not None


def add(
    session: Session,
    email: str,
    reason: SuppressionReason,
    *,
    note: str = "",
    actor: str = audit.CLI_ACTOR,
) -> bool:
    """Suppress a normalised address; False when it already was, for a reason at least as strong
    (`status.SUPPRESSION_RANK`). A stronger reason replaces a weaker one and counts as added."""
    added = add_many(session, [(email, reason, note)])
    if added:
        audit.record(
            session, actor, "suppression.add", "suppression", None, {"email": email, "reason": reason}
        )
    return bool(added)


def _rank(reason: Any) -> sa.ColumnElement[int]:
    """`SUPPRESSION_RANK` of a reason column, in SQL; an unknown reason ranks above all (never replaced)."""
    return sa.case(
        {str(r): rank for r, rank in SUPPRESSION_RANK.items()}, value=reason, else_=len(SUPPRESSION_RANK)
    )


def add_many(session: Session, entries: Iterable[tuple[str, SuppressionReason, str]]) -> int:
    """Suppress many (email, reason, note) at once, in one statement; returns how many rows were added
    or given a stronger reason.

    An address has one suppression, whose reason only rises (`status.SUPPRESSION_RANK`): a bounce or a
    complaint the ESP reports after the person unsubscribed replaces the `unsubscribe` (and its note),
    so confirming again can no longer bring the address back; a weaker or equal reason changes nothing;
    an erased suppression is never touched. The rank is compared in the statement itself, so a
    concurrent writer cannot make it fall. Callers audit (the webhook audits per subscriber, not per
    suppression row).
    """
    now = utcnow()
    rows: dict[str, dict[str, Any]] = {}
    for email, reason, note in entries:
        digest = email_hash(email)
        held = rows.get(digest)
        if held is None or suppression_rises(held["reason"], reason):
            # An erased suppression never holds the address, however it was added.
            kept = None if reason == SuppressionReason.ERASED else email
            rows[digest] = {
                "email_hash": digest, "email": kept, "reason": reason, "note": note[:500], "created_at": now,
            }  # fmt: skip
    if not rows:
        return 0
    table = SUPPRESSION
    upsert = insert(session, table)
    statement = upsert.on_conflict_do_update(
        index_elements=[table.c.email_hash],
        set_={
            "reason": upsert.excluded.reason,
            "note": upsert.excluded.note,
            "email": sa.case(
                (upsert.excluded.reason == SuppressionReason.ERASED, sa.null()), else_=table.c.email
            ),
        },
        where=_rank(table.c.reason) < _rank(upsert.excluded.reason),
    ).returning(table.c.id)
    return len(session.execute(statement, list(rows.values())).all())


def remove(session: Session, email: str, *, actor: str = audit.CLI_ACTOR) -> Suppression:
    """Lift the suppression of a normalised address (NotFound when there is none); returns what was lifted."""
    found = find(session, email)
    if found is None:
        raise NotFound(f"{email} is not suppressed")
    session.delete(found)
    audit.record(
        session,
        actor,
        "suppression.remove",
        "suppression",
        found.id,
        {"email": email, "reason": found.reason},
    )
    return found


def lift_for_confirmation(session: Session, email: str) -> bool:
    """Lift a suppression the address's owner may undo (their own unsubscribe) when they confirm again.
    True when nothing holds the address any longer; False when a suppression confirming cannot lift
    does (and it is left as it is).

    The liftable reason is a condition of the DELETE itself, not of a read before it: a bounce or a
    complaint the ESP reports meanwhile raises that same row (`add_many`), and a DELETE by row id would
    take the stronger reason away with it. A DELETE that waits for such a raise to commit (PostgreSQL)
    checks the reason again on the raised row, and skips it. What is there afterwards is read in SQL,
    not from the session, whose copy of the row may predate the raise."""
    digest = email_hash(email)
    table = SUPPRESSION
    lifted = session.execute(
        sa.delete(table)
        .where(table.c.email_hash == digest, table.c.reason.in_(sorted(LIFTED_BY_CONFIRMATION)))
        .returning(table.c.id)
    ).first()
    if lifted is not None:
        return True
    return session.execute(sa.select(table.c.id).where(table.c.email_hash == digest)).first() is None


def blocks_subscription(suppression: Suppression | None) -> bool:
    """True when a suppression means: never subscribe this address again, not even with confirmation."""
    return suppression is not None and suppression.reason not in LIFTED_BY_CONFIRMATION


@dataclass(frozen=True)
class Listed:
    email: str | None
    reason: str
    note: str
    created_at: datetime


def list_all(session: Session, *, reason: str | None = None, limit: int = 0) -> Sequence[Listed]:
    """Suppressions, newest first; an erased address shows as email None."""
    query = select(Suppression).order_by(col(Suppression.created_at).desc(), col(Suppression.id).desc())
    if reason:
        query = query.where(Suppression.reason == reason)
    if limit:
        query = query.limit(limit)
    return [Listed(s.email, s.reason, s.note, s.created_at) for s in session.exec(query).all()]


def unsubscribe(
    session: Session,
    subscriber: Subscriber,
    *,
    actor: str = audit.SUBSCRIBER_ACTOR,
    how: str = "web",
    now: datetime | None = None,
) -> bool:
    """Unsubscribe `subscriber` now: status `unsubscribed` and a suppression, audited. Idempotent.

    A bounced or complained subscriber keeps that (stronger) status; the suppression is added either
    way. Returns True when anything changed.

    The suppression is written before the subscriber row, the order the webhook and `optin.confirm`
    take their locks in, so an unsubscribe racing either waits for it instead of deadlocking.
    """
    now = now or utcnow()
    changed = bool(add_many(session, [(subscriber.email, SuppressionReason.UNSUBSCRIBE, how)]))
    before = subscriber.status
    try:
        check_subscriber(before, SubscriberStatus.UNSUBSCRIBED)
    except InvalidTransition:
        pass
    else:
        if before != SubscriberStatus.UNSUBSCRIBED:
            subscriber.status = SubscriberStatus.UNSUBSCRIBED
            subscriber.unsubscribed_at = now
            subscriber.updated_at = now
            session.add(subscriber)
            changed = True
    if changed:
        audit.record(
            session,
            actor,
            "subscriber.unsubscribe",
            "subscriber",
            subscriber.id,
            {"status": [before, subscriber.status], "how": how},
        )
    return changed


# --- the staff page: search, with what the ESP said ------------------------------------------------
@dataclass(frozen=True)
class SuppressionRow:
    """A suppression as the admin lists it. For a bounce or complaint reported by the ESP, `esp_reason`
    is what the ESP said (e.g. "550 5.1.1 user unknown") and `esp_at` when it happened."""

    id: int
    email: str | None
    reason: str
    note: str
    created_at: datetime
    esp_event: str = ""
    esp_reason: str = ""
    esp_at: datetime | None = None


@dataclass(frozen=True)
class SuppressionPage:
    rows: list[SuppressionRow]
    next_before: int | None


def _esp_details(session: Session, found: Sequence[Suppression]) -> dict[str, tuple[str, str, datetime]]:
    """ESP event id → (event, reason, when), for the suppressions the webhook added (note "event id")."""
    ids = {s.note.split(" ", 1)[1] for s in found if " " in s.note and s.note.split(" ", 1)[0] in _ESP_EVENTS}
    if not ids:
        return {}
    rows = session.exec(select(DeliveryEvent).where(col(DeliveryEvent.esp_event_id).in_(ids))).all()
    return {e.esp_event_id: (e.event, reason_of(e.payload), e.occurred_at) for e in rows}


_ESP_EVENTS = frozenset({"bounce", "spamreport", "unsubscribe", "group_unsubscribe", "dropped"})


def search(
    session: Session,
    query: str = "",
    *,
    reason: str | None = None,
    before: int | None = None,
    limit: int = 50,
) -> SuppressionPage:
    """Suppressions newest first (by id, in keyset pages after `before`), optionally only those whose
    address starts with `query` (case-insensitive) and only one reason. Erased addresses match no query."""
    statement = select(Suppression).order_by(col(Suppression.id).desc()).limit(limit + 1)
    if query.strip():
        prefix = query.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        statement = statement.where(col(Suppression.email).like(prefix + "%", escape="\\"))
    if reason:
        statement = statement.where(Suppression.reason == reason)
    if before is not None:
        statement = statement.where(col(Suppression.id) < before)
    found = list(session.exec(statement).all())
    more = len(found) > limit
    found = found[:limit]
    details = _esp_details(session, found)
    rows = []
    for s in found:
        assert s.id is not None
        event, said, at = details.get(s.note.split(" ", 1)[-1], ("", "", None))
        rows.append(SuppressionRow(s.id, s.email, s.reason, s.note, s.created_at, event, said, at))
    return SuppressionPage(rows, rows[-1].id if more and rows else None)


def remove_by_id(session: Session, suppression_id: int, *, actor: str) -> Suppression:
    """Lift one suppression by id (NotFound if none). An erased address stays suppressed: whoever asked
    to be forgotten must never be mailed again, and nobody knows the address to ask otherwise."""
    found = session.get(Suppression, suppression_id)
    if found is None:
        raise NotFound(f"no suppression {suppression_id}")
    if found.email is None or found.reason == SuppressionReason.ERASED:
        raise InvalidTransition("an erased address stays suppressed for good")
    return remove(session, found.email, actor=actor)
