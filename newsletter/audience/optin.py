"""Double opt-in: a request to subscribe, the confirmation email, and the confirmation itself.

    result = request_subscription(session, settings, email, name, regions, client_ip=ip)
    session.commit()
    if result.outcome is Outcome.SEND:
        background.add_task(send_confirmation, settings, renderer, result.recipient)

The answer a visitor sees never tells whether an address was already known: an active address, a
suppressed one and a new one all get "check your inbox" (`Outcome.QUIET` sends nothing and changes
nothing). Only the per-IP limit is visible (`Outcome.TOO_MANY`), because it concerns the visitor.

Status changes follow `status.SUBSCRIBER_TRANSITIONS`: an unsubscribed address becomes `active` again
only through the confirm link (by way of `pending`); bounced and complained addresses never return.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import sqlalchemy as sa
from sqlmodel import Session

from newsletter.audience import ratelimit_store, suppressions
from newsletter.audience.queries import insert_pending, replace_regions, subscriber_by_email
from newsletter.content.queries import region_ids
from newsletter.content.render import Renderer
from newsletter.content.types import Recipient
from newsletter.core import audit
from newsletter.core.config import Settings
from newsletter.core.errors import InvalidTransition
from newsletter.core.models import SUBSCRIBER, Subscriber, email_hash, utcnow
from newsletter.core.status import SubscriberStatus, check_subscriber
from newsletter.esp import EspError, backend_for

log = logging.getLogger(__name__)

SOURCE = "web"


class Outcome(StrEnum):
    SEND = "send"
    """Send the confirmation email to `recipient` (after committing)."""
    QUIET = "quiet"
    """Nothing to send; show the same page as for SEND."""
    TOO_MANY = "too-many"
    """This client asked for too many confirmation emails recently; nothing was stored."""


@dataclass(frozen=True)
class SubscribeResult:
    outcome: Outcome
    recipient: Recipient | None = None


def _keys(email: str, client_ip: str) -> tuple[str, str]:
    return ratelimit_store.window_key("confirm-address", email), ratelimit_store.window_key(
        "confirm-ip", client_ip
    )


def set_regions(session: Session, subscriber_id: int, codes: Sequence[str]) -> None:
    """Replace a subscriber's regions with `codes` (known codes; the caller checks there is one)."""
    replace_regions(session, {subscriber_id: list(region_ids(session, codes).values())})


def _new_pending(
    session: Session, email: str, name: str, regions: Sequence[str], now: datetime, timezone: str
) -> Subscriber | None:
    """Insert a pending subscriber for a new address, in `timezone` (None if another request just
    inserted it)."""
    new_id = insert_pending(
        session,
        {
            "email": email, "email_hash": email_hash(email), "name": name, "status": SubscriberStatus.PENDING,
            "source": SOURCE, "created_at": now, "updated_at": now, "link_secret": secrets.token_hex(16),
            "timezone": timezone,
        },
    )  # fmt: skip
    if new_id is None:
        return None
    set_regions(session, new_id, regions)
    audit.record(
        session, audit.SUBSCRIBER_ACTOR, "subscriber.subscribe", "subscriber", new_id,
        {"status": [None, SubscriberStatus.PENDING], "regions": [None, list(regions)], "source": SOURCE},
    )  # fmt: skip
    return session.get(Subscriber, new_id)


def request_subscription(
    session: Session,
    settings: Settings,
    email: str,
    name: str,
    regions: Sequence[str],
    *,
    client_ip: str,
    now: datetime | None = None,
    timezone: str | None = None,
) -> SubscribeResult:
    """Record a request to subscribe a normalised `email` with a clean `name` to region `regions`.

    The limits come first, atomically (a per-key lock, then count and count-in): a refused request
    writes nothing else. A new address becomes a `pending` subscriber with `name` and `regions`. A known
    address is left exactly as it is (name, regions, status): whoever typed it may not be its owner,
    so only the confirm link, which reaches the owner, changes anything; it then reactivates the
    stored subscription. The caller commits, then sends (`send_confirmation`) outside the request.
    `timezone` is a checked IANA name (`zones.check_zone`), usually the browser's own; a new subscriber
    without one gets `TIMEZONE` (a known address keeps its own, like everything else).
    """
    now = now or utcnow()
    window = timedelta(seconds=settings.SUBSCRIBE_LIMIT_WINDOW_SECONDS)
    address_key, ip_key = _keys(email, client_ip)
    if not ratelimit_store.take(session, ip_key, settings.SUBSCRIBE_LIMIT_PER_IP, window, now=now):
        return SubscribeResult(Outcome.TOO_MANY)
    if suppressions.blocks_subscription(suppressions.find(session, email)):
        return SubscribeResult(Outcome.QUIET)
    if not ratelimit_store.take(session, address_key, settings.SUBSCRIBE_LIMIT_PER_ADDRESS, window, now=now):
        return SubscribeResult(Outcome.QUIET)
    subscriber = subscriber_by_email(session, email)
    if subscriber is None:
        subscriber = _new_pending(session, email, name, regions, now, timezone or settings.TIMEZONE)
        if subscriber is None:  # a concurrent request for the same address won: it sends
            return SubscribeResult(Outcome.QUIET)
    elif subscriber.status == SubscriberStatus.ACTIVE or not _may_confirm(subscriber.status):
        return SubscribeResult(Outcome.QUIET)  # bounced or complained: never again
    assert subscriber.id is not None
    # No name in the email: the typed name may be an attacker's words, sent to someone else.
    recipient = Recipient(
        email=email, name="", subscriber_id=subscriber.id, link_secret=subscriber.link_secret
    )
    return SubscribeResult(Outcome.SEND, recipient)


def send_confirmation(settings: Settings, renderer: Renderer, recipient: Recipient) -> bool:
    """Send the confirmation email, retrying up to `CONFIRM_SEND_ATTEMPTS` times with a growing pause.

    Runs after the page is answered (a background task), so the answer takes as long for a known address
    as for a new one. False, logged as an error, when the ESP never accepted it.
    """
    variant = renderer.confirmation(recipient.email, recipient.name)
    for attempt in range(1, settings.CONFIRM_SEND_ATTEMPTS + 1):
        backend = backend_for(settings)
        try:
            results = backend.send(variant, [recipient])
            if results and all(r.accepted for r in results):
                return True
            problem = str(results)
            if results and any(r.permanent for r in results):
                break
        except EspError as exc:
            problem = str(exc)
        finally:
            backend.close()
        log.warning(
            "confirmation for subscriber %s, attempt %d: %s", recipient.subscriber_id, attempt, problem
        )
        if attempt < settings.CONFIRM_SEND_ATTEMPTS:
            time.sleep(min(30.0, 0.5 * 2**attempt))
    log.error("confirmation email for subscriber %s not sent: %s", recipient.subscriber_id, problem)
    return False


def _may_confirm(status: str) -> bool:
    """Pending, or unsubscribed (which comes back through pending): never bounced or complained."""
    try:
        if status != SubscriberStatus.PENDING:
            check_subscriber(status, SubscriberStatus.PENDING)
        check_subscriber(SubscriberStatus.PENDING, SubscriberStatus.ACTIVE)
    except InvalidTransition:
        return False
    return True


class Confirmation(StrEnum):
    CONFIRMED = "confirmed"
    ALREADY = "already"
    REFUSED = "refused"
    """The address left, bounced or complained since, or is suppressed for good: subscribe again."""


def confirm(
    session: Session, subscriber: Subscriber, *, issued_at: datetime, now: datetime | None = None
) -> Confirmation:
    """Make a pending (or unsubscribed) subscriber active (idempotent); lifts their own earlier
    unsubscribe suppression. A link issued before the subscriber last left confirms nothing: leaving
    must not be undone by an old email.

    The ESP may report a bounce or a complaint while this runs: it raises the suppression, then marks
    the subscriber (`sending.events`). So the lift deletes only an `unsubscribe` suppression, and the
    subscriber becomes active only if their status is still the one read here; a confirmation that lost
    that race changes nothing (both happen in one savepoint) and is refused, so a bounced address never
    comes back. Locks are taken in the webhook's order, suppression first, so the two wait for each
    other rather than deadlock."""
    now = now or utcnow()
    if subscriber.status == SubscriberStatus.ACTIVE:
        return Confirmation.ALREADY
    if not _may_confirm(subscriber.status):
        return Confirmation.REFUSED
    if subscriber.unsubscribed_at is not None and issued_at < subscriber.unsubscribed_at.replace(
        microsecond=0
    ):
        return Confirmation.REFUSED
    assert subscriber.id is not None
    before = subscriber.status
    attempt = session.begin_nested()
    confirmed = suppressions.lift_for_confirmation(session, subscriber.email) and _activate(
        session, subscriber.id, before, now
    )
    if not confirmed:
        attempt.rollback()
        session.expire(subscriber)  # what the race left, read again when next used
        current = session.execute(sa.select(SUBSCRIBER.c.status).where(SUBSCRIBER.c.id == subscriber.id))
        # The one race to win is a second click on the same link: it finds the address active.
        return Confirmation.ALREADY if current.scalar() == SubscriberStatus.ACTIVE else Confirmation.REFUSED
    attempt.commit()
    session.expire(subscriber)  # the row was changed in SQL, not through this object
    audit.record(
        session,
        audit.SUBSCRIBER_ACTOR,
        "subscriber.confirm",
        "subscriber",
        subscriber.id,
        {"status": [before, SubscriberStatus.ACTIVE]},
    )
    return Confirmation.CONFIRMED


def _activate(session: Session, subscriber_id: int, before: str, now: datetime) -> bool:
    """Status `active`, confirmed now, if the status is still `before`; False when it changed since."""
    s = SUBSCRIBER.c
    changed = session.execute(
        sa.update(SUBSCRIBER)
        .where(s.id == subscriber_id, s.status == before)
        .values(status=SubscriberStatus.ACTIVE, confirmed_at=now, unsubscribed_at=None, updated_at=now)
        .returning(s.id)
    )
    return changed.first() is not None
