"""Read-only statements for reports on one bulletin's send: counts per status and variant, errors, the
recent rate, ESP events, deliveries staff may need to act on, and test sends."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import Session, col, select

from newsletter.core.dialect import bind_time
from newsletter.core.models import (
    BULLETIN,
    DELIVERY,
    DELIVERY_EVENT,
    SUBSCRIBER,
    Delivery,
    Subscriber,
    TestSend,
)
from newsletter.core.status import BulletinStatus, DeliveryStatus
from newsletter.sending.queries.batches import live_leases


def status_counts(conn: sa.Connection, bulletin_id: int) -> dict[str, int]:
    """Deliveries per status; `sending` counts those in flight in a leased batch (`pending` in the
    ledger until their outcome is recorded)."""
    d = DELIVERY.c
    rows = conn.execute(
        sa.select(d.status, sa.func.count()).where(d.bulletin_id == bulletin_id).group_by(d.status)
    )
    counts = {status: int(n) for status, n in rows}
    in_flight = sum(n for *_, n in live_leases(conn, None, bulletin_id))
    if in_flight:
        counts[DeliveryStatus.SENDING] = counts.get(DeliveryStatus.SENDING, 0) + in_flight
        counts[DeliveryStatus.PENDING] -= in_flight
        if not counts[DeliveryStatus.PENDING]:
            del counts[DeliveryStatus.PENDING]
    return counts


def zone_status_counts(conn: sa.Connection, bulletin_id: int) -> list[tuple[str | None, str, int]]:
    """(subscriber's zone, delivery status, count) for a bulletin; the zone is None for subscribers
    without one (the default zone) and for erased subscribers."""
    d, s = DELIVERY.c, SUBSCRIBER.c
    rows = conn.execute(
        sa.select(s.timezone, d.status, sa.func.count())
        .select_from(DELIVERY.outerjoin(SUBSCRIBER, s.id == d.subscriber_id))
        .where(d.bulletin_id == bulletin_id)
        .group_by(s.timezone, d.status)
    )
    return [(zone, status, int(n)) for zone, status, n in rows]


def delivered_variants(conn: sa.Connection, bulletin_id: int) -> dict[str, int]:
    """Deliveries per variant in the ledger (every status)."""
    d = DELIVERY.c
    rows = conn.execute(
        sa.select(d.variant, sa.func.count())
        .where(d.bulletin_id == bulletin_id)
        .group_by(d.variant)
        .order_by(d.variant)
    )
    return {variant: int(n) for variant, n in rows}


def error_counts(conn: sa.Connection, bulletin_id: int, limit: int = 10) -> list[tuple[str, str, int]]:
    """(status, last error, count) for deliveries carrying an error, most frequent first."""
    d = DELIVERY.c
    n = sa.func.count().label("n")
    rows = conn.execute(
        sa.select(d.status, d.last_error, n)
        .where(d.bulletin_id == bulletin_id, d.last_error != "")
        .group_by(d.status, d.last_error)
        .order_by(n.desc(), d.status)
        .limit(limit)
    )
    return [(status, error, int(count)) for status, error, count in rows]


def sent_since(conn: sa.Connection, bulletin_id: int, since: datetime) -> int:
    """Deliveries the ESP took at or after `since`."""
    d = DELIVERY.c
    stmt = sa.select(sa.func.count()).where(
        d.bulletin_id == bulletin_id, d.sent_at >= bind_time(since, d.sent_at)
    )
    return int(conn.execute(stmt).scalar() or 0)


def event_counts(conn: sa.Connection, bulletin_id: int) -> dict[str, dict[str, int]]:
    """ESP events of a bulletin's deliveries per event name: how many, and for how many recipients."""
    d, e = DELIVERY.c, DELIVERY_EVENT.c
    rows = conn.execute(
        sa.select(e.event, sa.func.count(), sa.func.count(sa.distinct(e.delivery_id)))
        .join_from(DELIVERY_EVENT, DELIVERY, d.id == e.delivery_id)
        .where(d.bulletin_id == bulletin_id)
        .group_by(e.event)
    )
    return {event: {"events": int(n), "recipients": int(u)} for event, n, u in rows}


def problem_deliveries(
    session: Session, bulletin_id: int, statuses: Sequence[str], *, limit: int
) -> list[tuple[Delivery, str | None]]:
    """The newest deliveries in `statuses`, each with its subscriber's address (None once erased)."""
    rows = session.exec(
        select(Delivery, Subscriber.email)
        .outerjoin(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id))
        .where(Delivery.bulletin_id == bulletin_id, col(Delivery.status).in_(list(statuses)))
        .order_by(col(Delivery.updated_at).desc(), col(Delivery.id).desc())
        .limit(limit)
    ).all()
    return [(delivery, email) for delivery, email in rows]


def recent_test_sends(session: Session, bulletin_id: int, *, limit: int) -> list[TestSend]:
    return list(
        session.exec(
            select(TestSend)
            .where(TestSend.bulletin_id == bulletin_id)
            .order_by(col(TestSend.id).desc())
            .limit(limit)
        ).all()
    )


def failed_shares(conn: sa.Connection, since: datetime) -> list[tuple[int, str, int, int]]:
    """(bulletin id, title, failed, total) of bulletins sent since `since` that have failed deliveries."""
    b, d = BULLETIN.c, DELIVERY.c
    failed = sa.func.sum(sa.case((d.status == DeliveryStatus.FAILED, 1), else_=0))
    rows = conn.execute(
        sa.select(b.id, b.title, failed, sa.func.count())
        .select_from(BULLETIN.join(DELIVERY, d.bulletin_id == b.id))
        .where(b.status == BulletinStatus.SENT, b.finished_at >= bind_time(since, b.finished_at))
        .group_by(b.id, b.title)
        .having(failed > 0)
        .order_by(b.id.desc())
    )
    return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]


def stopped_bulletins(conn: sa.Connection) -> list[tuple[int, str, str]]:
    """(id, title, reason) of bulletins the send path paused (they carry the reason in `last_error`)."""
    b = BULLETIN.c
    rows = conn.execute(
        sa.select(b.id, b.title, b.last_error)
        .where(b.status == BulletinStatus.PAUSED, b.last_error != "")
        .order_by(b.id)
    )
    return [(r[0], r[1], r[2]) for r in rows]
