"""A welcome with the latest bulletin: on confirming, a new supporter gets the most recent sent bulletin
for their regions at once, instead of waiting up to a week for the next one.

Off unless `WELCOME_LATEST_BULLETIN`. The welcome is a delivery in the ledger like any other (one row per
bulletin and subscriber, unique), claimed before it is sent: a second click on the confirm link, or any
later planning of that bulletin, finds the row and sends nothing again. Its outcome (accepted with the
ESP's message id, or failed with the reason) is recorded on the row, so the dashboard counts it and ESP
events apply to it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from newsletter.audience import optin
from newsletter.audience.subscribers import subscriber_regions
from newsletter.content.bulletins import load_content
from newsletter.content.render import Renderer
from newsletter.content.types import BulletinContent, Recipient, variant_key
from newsletter.core.config import Settings
from newsletter.core.dialect import insert_ignoring_duplicates
from newsletter.core.models import DELIVERY, Bulletin, Item, Region, Subscriber, utcnow
from newsletter.core.status import BulletinStatus, DeliveryStatus
from newsletter.esp import EspError, backend_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Welcome:
    """A claimed welcome delivery, ready to send."""

    content: BulletinContent
    regions: tuple[str, ...]
    recipient: Recipient


def latest_bulletin_for(session: Session, codes: list[str]) -> int | None:
    """The id of the most recently finished sent bulletin with an item for one of `codes`."""
    if not codes:
        return None
    has_item = (
        sa.exists()
        .where(col(Item.bulletin_id) == col(Bulletin.id), col(Item.region_id) == col(Region.id))
        .where(col(Region.code).in_(codes))
    )
    return session.exec(
        select(Bulletin.id)
        .where(Bulletin.status == BulletinStatus.SENT, has_item)
        .order_by(col(Bulletin.finished_at).desc(), col(Bulletin.id).desc())
        .limit(1)
    ).first()


def claim_welcome(session: Session, settings: Settings, subscriber: Subscriber) -> Welcome | None:
    """Record the welcome delivery for `subscriber` (in the caller's transaction); None when the setting is
    off, nothing was sent yet for their regions, or they already have that bulletin."""
    if not settings.WELCOME_LATEST_BULLETIN or subscriber.id is None:
        return None
    codes = subscriber_regions(session, [subscriber.id])[subscriber.id]
    bulletin_id = latest_bulletin_for(session, codes)
    if bulletin_id is None:
        return None
    content = load_content(session, bulletin_id)
    regions = tuple(code for code in content.region_codes if code in codes)
    now = utcnow()
    claimed = session.execute(
        insert_ignoring_duplicates(session, DELIVERY)
        .values(
            bulletin_id=bulletin_id,
            subscriber_id=subscriber.id,
            variant=variant_key(regions),
            status=DeliveryStatus.SENDING,
            attempts=1,
            updated_at=now,
        )
        .returning(DELIVERY.c.id)
    ).scalar()
    if claimed is None:
        return None  # the ledger already has this bulletin for them
    recipient = Recipient(subscriber.email, subscriber.name, subscriber.id, claimed, bulletin_id)
    return Welcome(content, regions, recipient)


def send_welcome(session: Session, settings: Settings, renderer: Renderer, welcome: Welcome) -> bool:
    """Send a claimed welcome and record the outcome on its delivery (the caller commits)."""
    variant = renderer.variant(welcome.content, welcome.regions)
    backend = backend_for(settings)
    try:
        results = backend.send(variant, [welcome.recipient])
        error = "" if results and results[0].accepted else (results[0].error if results else "no answer")
    except EspError as exc:
        results, error = [], str(exc)
    finally:
        backend.close()
    now = utcnow()
    values: dict[str, object] = {"updated_at": now, "lease_expires_at": None}
    if error:
        log.error("welcome bulletin for subscriber %s not sent: %s", welcome.recipient.subscriber_id, error)
        values.update(status=DeliveryStatus.FAILED, last_error=f"welcome: {error}"[:2000])
    else:
        values.update(status=DeliveryStatus.ACCEPTED, message_id=results[0].message_id, sent_at=now)
    session.execute(sa.update(DELIVERY).where(DELIVERY.c.id == welcome.recipient.delivery_id).values(values))
    return not error


def confirm_with_welcome(
    session: Session,
    settings: Settings,
    renderer: Renderer,
    subscriber: Subscriber,
    *,
    issued_at: datetime,
) -> optin.Confirmation:
    """Confirm `subscriber` (`optin.confirm`, with its link's `issued_at`) and, when that made them
    active, send the welcome bulletin. The confirmation and the claimed delivery commit together
    before anything is sent."""
    outcome = optin.confirm(session, subscriber, issued_at=issued_at)
    welcome = (
        claim_welcome(session, settings, subscriber) if outcome is optin.Confirmation.CONFIRMED else None
    )
    session.commit()
    if welcome is not None:
        send_welcome(session, settings, renderer, welcome)
        session.commit()
    return outcome
