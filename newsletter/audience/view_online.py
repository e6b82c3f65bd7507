"""The bulletin online as one subscriber received it (`GET /view/{bulletin_id}/{token}`)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from newsletter.audience.subscribers import subscriber_regions
from newsletter.content.bulletins import load_content
from newsletter.content.types import BulletinContent, Recipient
from newsletter.core.models import Bulletin, Delivery, Subscriber
from newsletter.core.status import BulletinStatus

_VISIBLE_BULLETIN = frozenset({BulletinStatus.SENDING, BulletinStatus.SENT})


@dataclass(frozen=True)
class OnlineView:
    content: BulletinContent
    regions: list[str]
    """The regions of their delivery, else their current ones."""
    recipient: Recipient


def online_view(session: Session, bulletin_id: int, subscriber: Subscriber) -> OnlineView | None:
    """What `subscriber` sees online of bulletin `bulletin_id`; None when it is not theirs to see
    (no such bulletin, or one still in preparation that was not sent to them)."""
    assert subscriber.id is not None
    bulletin = session.get(Bulletin, bulletin_id)
    delivery = session.exec(
        select(Delivery).where(Delivery.bulletin_id == bulletin_id, Delivery.subscriber_id == subscriber.id)
    ).first()
    if bulletin is None or (delivery is None and bulletin.status not in _VISIBLE_BULLETIN):
        return None
    if delivery is not None:
        regions = delivery.variant.split(",")
    else:
        regions = subscriber_regions(session, [subscriber.id])[subscriber.id]
    recipient = Recipient(
        email=subscriber.email,
        name=subscriber.name,
        subscriber_id=subscriber.id,
        delivery_id=delivery.id if delivery else None,
        bulletin_id=bulletin_id,
        link_secret=subscriber.link_secret,
    )
    return OnlineView(load_content(session, bulletin_id), regions, recipient)
