"""A subscriber's time zone: changing it, and moving their local-time deliveries that are not yet due.

A local-time send plans each delivery with its due time in `not_before` (the slot in the subscriber's
zone). When the zone changes later, every such delivery still waiting for its time (pending, never
attempted, `not_before` still ahead) is moved to the slot in the new zone; one already due, sent, or
waiting for a retry is left alone. The new time may already have passed: the delivery is then due at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from newsletter.core import audit, zones
from newsletter.core.dialect import bind_time, one_of
from newsletter.core.models import BULLETIN, DELIVERY, SUBSCRIBER, Subscriber, utcnow
from newsletter.core.status import BulletinStatus, DeliveryStatus


def change_timezone(
    session: Session,
    subscriber: Subscriber,
    raw: str,
    *,
    actor: str = audit.SUBSCRIBER_ACTOR,
    now: datetime | None = None,
) -> bool:
    """Set the subscriber's zone (an IANA name; ValueError if not) and move their deliveries not yet due.

    True when it changed. Works in the caller's transaction, audited.
    """
    zone = zones.check_zone(raw)
    if zone == subscriber.timezone:
        return False
    now = now or utcnow()
    before = subscriber.timezone
    subscriber.timezone = zone
    subscriber.updated_at = now
    session.add(subscriber)
    session.flush()
    assert subscriber.id is not None
    retime(session.connection(), [subscriber.id], now)
    audit.record(
        session, actor, "subscriber.timezone", "subscriber", subscriber.id, {"timezone": [before, zone]}
    )
    return True


def retime(conn: sa.Connection, subscriber_ids: Sequence[int], now: datetime) -> int:
    """Move the not-yet-due local-time deliveries of these subscribers to the slot in their current zone.

    Subscribers whose zone is None are left alone (they have the default zone, which did not change).
    One UPDATE per (bulletin, zone) pair; returns how many deliveries moved.
    """
    if not subscriber_ids:
        return 0
    b, d, s = BULLETIN.c, DELIVERY.c, SUBSCRIBER.c
    slots = conn.execute(
        sa.select(b.id, b.local_send_at).where(
            b.local_send_at.is_not(None),
            b.status.in_([BulletinStatus.SENDING, BulletinStatus.PAUSED]),
        )
    ).all()
    if not slots:
        return 0
    by_zone: dict[str, list[int]] = {}
    for sid, zone in conn.execute(
        sa.select(s.id, s.timezone).where(one_of(conn, s.id, subscriber_ids), s.timezone.is_not(None))
    ):
        by_zone.setdefault(zone, []).append(sid)
    moved = 0
    for bulletin_id, stored in slots:
        wall = zones.parse_wall(stored)
        for zone, ids in by_zone.items():
            if zone not in zones.all_zones():
                continue
            moved += conn.execute(
                sa.update(DELIVERY)
                .where(
                    d.bulletin_id == bulletin_id,
                    one_of(conn, d.subscriber_id, ids),
                    d.status == DeliveryStatus.PENDING,
                    d.attempts == 0,
                    d.not_before > bind_time(now, d.not_before),
                )
                .values(
                    not_before=bind_time(zones.due_at(wall, zone), d.not_before),
                    updated_at=bind_time(now, d.updated_at),
                )
            ).rowcount
    return moved
