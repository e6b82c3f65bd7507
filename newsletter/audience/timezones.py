"""A subscriber's time zone: changing it, and moving their local-time deliveries that are not yet due.

A local-time send plans each delivery with its due time in `not_before` (the slot in the subscriber's
zone). When the zone changes later, every such delivery still waiting for its time (pending, never
attempted, `not_before` still ahead) is moved to the slot in the new zone; one already due, sent, or
waiting for a retry is left alone. The new time may already have passed: the delivery is then due at once.

Deliveries are sent in batches (`send_batch`), and a batch falls due when its earliest delivery does,
so a batch holding a moved delivery is brought forward with it. A delivery whose batch a worker is
sending at this very moment keeps its time: which of a leased batch's deliveries are in flight is
decided by their due times, which must not change under the lease.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session

from newsletter.core import audit, zones
from newsletter.core.dialect import bind_time, one_of
from newsletter.core.models import (
    BULLETIN,
    DELIVERY,
    SEND_BATCH,
    SUBSCRIBER,
    Subscriber,
    batch_members,
    utcnow,
)
from newsletter.core.status import BatchStatus, BulletinStatus, DeliveryStatus


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
            due = zones.due_at(wall, zone)
            _bring_batches_forward(conn, bulletin_id, ids, due, now)
            moved += conn.execute(
                sa.update(DELIVERY)
                .where(
                    d.bulletin_id == bulletin_id,
                    one_of(conn, d.subscriber_id, ids),
                    d.status == DeliveryStatus.PENDING,
                    d.attempts == 0,
                    d.not_before > bind_time(now, d.not_before),
                    ~_in_leased_batch(bulletin_id),
                )
                .values(not_before=bind_time(due, d.not_before), updated_at=bind_time(now, d.updated_at))
            ).rowcount
    return moved


def _holds(delivery: sa.FromClause) -> list[sa.ColumnElement[bool]]:
    sb = SEND_BATCH.c
    return batch_members(delivery, sb.bulletin_id, sb.variant, sb.first_id, sb.last_id)


def _in_leased_batch(bulletin_id: int) -> sa.Exists:
    sb = SEND_BATCH.c
    return sa.exists().where(
        sb.bulletin_id == bulletin_id, sb.status == BatchStatus.SENDING, *_holds(DELIVERY)
    )


def _bring_batches_forward(
    conn: sa.Connection, bulletin_id: int, subscriber_ids: list[int], due: datetime, now: datetime
) -> None:
    """Every pending batch holding one of these subscribers' deliveries falls due by `due` at the latest.

    It runs before the deliveries move and writes (so locks) all those batches, whether their time
    changes or not: a worker cannot lease one of them until this transaction ends, so none is leased
    between the two statements with deliveries whose due times are about to change."""
    sb = SEND_BATCH.c
    theirs = DELIVERY.alias("theirs")
    holds = sa.exists().where(*_holds(theirs), one_of(conn, theirs.c.subscriber_id, subscriber_ids))
    when = bind_time(due, sb.not_before)
    conn.execute(
        sa.update(SEND_BATCH)
        .where(sb.bulletin_id == bulletin_id, sb.status == BatchStatus.PENDING, holds)
        .values(
            not_before=sa.case((sb.not_before > when, when), else_=sb.not_before),
            updated_at=bind_time(now, sb.updated_at),
        )
    )
