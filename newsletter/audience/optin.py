"""Double opt-in: a request to subscribe, the confirmation email, and the confirmation itself.

    result = request_subscription(session, settings, email, name, regions, client_ip=ip)
    session.commit()
    if result.outcome is Outcome.SEND:
        send_confirmation(settings, renderer, result.recipient)

The answer a visitor sees never tells whether an address was already known: an active address, a
suppressed one and a new one all get "check your inbox" (`Outcome.QUIET` sends nothing and changes
nothing). Only the per-IP limit is visible (`Outcome.TOO_MANY`), because it concerns the visitor.

Status changes follow `status.SUBSCRIBER_TRANSITIONS`: an unsubscribed address goes back to `pending`
and becomes `active` only through the confirm link; bounced and complained addresses never return.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from sqlmodel import Session

from newsletter.audience import ratelimit_store, suppressions
from newsletter.audience.queries import replace_regions, subscriber_by_email
from newsletter.content.queries import region_ids
from newsletter.content.render import Renderer
from newsletter.content.types import Recipient
from newsletter.core import audit
from newsletter.core.config import Settings
from newsletter.core.errors import InvalidTransition
from newsletter.core.models import Subscriber, email_hash, utcnow
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


def _to_pending(
    session: Session, email: str, name: str, now: datetime
) -> tuple[Subscriber, str | None, dict[str, object]] | None:
    """The subscriber for `email`, new or back to `pending` (with its status before and what to audit
    besides); None when the address must not be asked again (active already, or bounced/complained)."""
    subscriber = subscriber_by_email(session, email)
    if subscriber is None:
        subscriber = Subscriber(
            email=email,
            email_hash=email_hash(email),
            name=name,
            status=SubscriberStatus.PENDING,
            source=SOURCE,
            created_at=now,
            updated_at=now,
        )
        session.add(subscriber)
        session.flush()
        return subscriber, None, {"source": SOURCE}
    if subscriber.status == SubscriberStatus.ACTIVE:
        return None
    try:
        check_subscriber(subscriber.status, SubscriberStatus.PENDING)
    except InvalidTransition:
        return None  # bounced or complained: never again
    before = subscriber.status
    subscriber.status = SubscriberStatus.PENDING
    subscriber.name = name
    subscriber.updated_at = now
    session.add(subscriber)
    return subscriber, before, {}


def request_subscription(
    session: Session,
    settings: Settings,
    email: str,
    name: str,
    regions: Sequence[str],
    *,
    client_ip: str,
    now: datetime | None = None,
) -> SubscribeResult:
    """Record a request to subscribe a normalised `email` with a clean `name` to region `regions`.

    Creates or updates a `pending` subscriber (audited) unless the address is active, suppressed for
    good, bounced or complained. Counts the confirmation email against the per-address and per-IP
    limits when one is to be sent. The caller commits, then sends.
    """
    now = now or utcnow()
    window = timedelta(seconds=settings.SUBSCRIBE_LIMIT_WINDOW_SECONDS)
    address_key, ip_key = _keys(email, client_ip)
    if not ratelimit_store.allowed(session, ip_key, settings.SUBSCRIBE_LIMIT_PER_IP, window, now=now):
        return SubscribeResult(Outcome.TOO_MANY)
    if suppressions.blocks_subscription(suppressions.find(session, email)):
        return SubscribeResult(Outcome.QUIET)

    pending = _to_pending(session, email, name, now)
    if pending is None:
        return SubscribeResult(Outcome.QUIET)
    subscriber, before, changes = pending
    assert subscriber.id is not None
    set_regions(session, subscriber.id, regions)
    audit.record(
        session,
        audit.SUBSCRIBER_ACTOR,
        "subscriber.subscribe",
        "subscriber",
        subscriber.id,
        {"status": [before, SubscriberStatus.PENDING], "regions": [None, list(regions)], **changes},
    )

    if not ratelimit_store.allowed(
        session, address_key, settings.SUBSCRIBE_LIMIT_PER_ADDRESS, window, now=now
    ):
        return SubscribeResult(Outcome.QUIET)
    ratelimit_store.hit(session, address_key, window, now=now)
    ratelimit_store.hit(session, ip_key, window, now=now)
    assert subscriber.id is not None
    return SubscribeResult(Outcome.SEND, Recipient(email=email, name=name, subscriber_id=subscriber.id))


def send_confirmation(settings: Settings, renderer: Renderer, recipient: Recipient) -> bool:
    """Send the confirmation email through the configured ESP; False (logged) when it was not accepted."""
    variant = renderer.confirmation(recipient.email, recipient.name)
    backend = backend_for(settings)
    try:
        results = backend.send(variant, [recipient])
    except EspError as exc:
        log.error("confirmation email for subscriber %s not sent: %s", recipient.subscriber_id, exc)
        return False
    finally:
        backend.close()
    ok = bool(results) and all(r.accepted for r in results)
    if not ok:
        log.error("confirmation email for subscriber %s refused: %s", recipient.subscriber_id, results)
    return ok


class Confirmation(StrEnum):
    CONFIRMED = "confirmed"
    ALREADY = "already"
    REFUSED = "refused"
    """The address left, bounced or complained since, or is suppressed for good: subscribe again."""


def confirm(session: Session, subscriber: Subscriber, *, now: datetime | None = None) -> Confirmation:
    """Make a pending subscriber active (idempotent); lifts their own earlier unsubscribe suppression."""
    now = now or utcnow()
    if subscriber.status == SubscriberStatus.ACTIVE:
        return Confirmation.ALREADY
    try:
        check_subscriber(subscriber.status, SubscriberStatus.ACTIVE)
    except InvalidTransition:
        return Confirmation.REFUSED
    if suppressions.blocks_subscription(suppressions.find(session, subscriber.email)):
        return Confirmation.REFUSED
    suppressions.lift_for_confirmation(session, subscriber.email)
    before = subscriber.status
    subscriber.status = SubscriberStatus.ACTIVE
    subscriber.confirmed_at = now
    subscriber.unsubscribed_at = None
    subscriber.updated_at = now
    session.add(subscriber)
    audit.record(
        session,
        audit.SUBSCRIBER_ACTOR,
        "subscriber.confirm",
        "subscriber",
        subscriber.id,
        {"status": [before, SubscriberStatus.ACTIVE]},
    )
    return Confirmation.CONFIRMED
