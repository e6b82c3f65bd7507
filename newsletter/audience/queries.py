"""Statements about subscribers and their subscriptions that more than one service needs.

A subscriber's regions are read (`subscriber_regions`) and replaced (`replace_regions`) here and nowhere
else: the preference centre, opt-in, the staff edit and the CSV import all go through these two. Bulk
statements ask `newsletter.core.dialect` for the PostgreSQL forms (one array parameter, COPY).
Statements run in the caller's transaction and never commit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, col, select

from newsletter.core.dialect import bulk_subscriber_insert, insert_ignoring_duplicates, insert_many, one_of
from newsletter.core.models import (
    REGION,
    SUBSCRIBER,
    SUBSCRIPTION,
    SUPPRESSION,
    Bulletin,
    Delivery,
    DeliveryEvent,
    Subscriber,
)
from newsletter.core.status import SubscriberStatus

Bind = sa.Connection | Session


@dataclass(frozen=True)
class KnownAddresses:
    """What the database already knows about a chunk of imported addresses."""

    hashes: dict[str, str]
    """email → its hash (the suppression key)."""
    existing: dict[str, Any]
    """email → row (id, email, name, status) of the addresses already stored."""
    suppressed: set[str]
    """Hashes of the suppressed addresses among them."""
    regions: dict[int, set[int]]
    """Region ids per existing subscriber id."""


def known_addresses(session: Session, hashes: dict[str, str]) -> KnownAddresses:
    """Three statements for a whole chunk (one array parameter each on PostgreSQL): stored rows,
    suppressions, and the stored rows' regions."""
    sub = SUBSCRIBER
    existing = {
        row.email: row
        for row in session.execute(
            sa.select(sub.c.id, sub.c.email, sub.c.name, sub.c.status, sub.c.timezone).where(
                one_of(session, sub.c.email, hashes)
            )
        )
    }
    suppressed = set(
        session.scalars(
            sa.select(SUPPRESSION.c.email_hash).where(
                one_of(session, SUPPRESSION.c.email_hash, hashes.values())
            )
        )
    )
    regions: dict[int, set[int]] = {}
    if existing:
        for sid, rid in session.execute(
            sa.select(SUBSCRIPTION.c.subscriber_id, SUBSCRIPTION.c.region_id).where(
                one_of(session, SUBSCRIPTION.c.subscriber_id, [e.id for e in existing.values()])
            )
        ):
            regions.setdefault(sid, set()).add(rid)
    return KnownAddresses(hashes, existing, suppressed, regions)


def insert_subscribers(session: Session, rows: list[dict[str, Any]]) -> dict[int, str]:
    """Insert new subscriber rows in bulk (COPY on PostgreSQL); returns their id → email."""
    if not rows:
        return {}
    with bulk_subscriber_insert(session.connection()):
        insert_many(session.connection(), SUBSCRIBER, rows)
    emails = [r["email"] for r in rows]
    found = session.execute(
        sa.select(SUBSCRIBER.c.id, SUBSCRIBER.c.email).where(one_of(session, SUBSCRIBER.c.email, emails))
    )
    return {sid: email for sid, email in found}


def update_subscribers(session: Session, updates: list[dict[str, Any]]) -> None:
    """Update many subscribers in one executemany; each dict has `id` and the columns to set (all dicts
    the same columns, or SQLAlchemy groups them)."""
    if updates:
        session.execute(
            sa.update(SUBSCRIBER).where(SUBSCRIBER.c.id == sa.bindparam("_id")),
            [{**{k: v for k, v in u.items() if k != "id"}, "_id": u["id"]} for u in updates],
        )


def insert_pending(session: Session, values: Mapping[str, Any]) -> int | None:
    """Insert one subscriber row unless its address exists (an upsert: concurrent requests for one new
    address never fail on the unique key); its id, or None when the address was already there."""
    inserted = session.execute(
        insert_ignoring_duplicates(session, SUBSCRIBER).values(**values).returning(SUBSCRIBER.c.id)
    ).first()
    return None if inserted is None else int(inserted[0])


def subscriber_by_email(session: Session, email: str) -> Subscriber | None:
    """The subscriber with this normalised address, if any."""
    return session.exec(select(Subscriber).where(Subscriber.email == email)).first()


def subscriber_regions(bind: Bind, subscriber_ids: Sequence[int]) -> dict[int, list[str]]:
    """Region codes per subscriber, in display order; every id asked for is a key (empty list if none)."""
    result: dict[int, list[str]] = {sid: [] for sid in subscriber_ids}
    if not result:
        return result
    rows = bind.execute(
        sa.select(SUBSCRIPTION.c.subscriber_id, REGION.c.code)
        .join(REGION, REGION.c.id == SUBSCRIPTION.c.region_id)
        .where(one_of(bind, SUBSCRIPTION.c.subscriber_id, result))
        .order_by(REGION.c.position, REGION.c.id)
    )
    for sid, code in rows:
        result[sid].append(code)
    return result


def replace_regions(
    session: Session, region_ids: Mapping[int, set[int] | Sequence[int]], *, created: bool = False
) -> None:
    """Give each subscriber in `region_ids` exactly those regions (ids), in two statements for any number.

    `created=True`: the subscribers were inserted in this transaction and have no rows yet, so the
    DELETE (an index probe per subscriber, seconds for a large import on PostgreSQL) is skipped."""
    if not region_ids:
        return
    table = SUBSCRIPTION
    if not created:
        session.execute(sa.delete(table).where(one_of(session, table.c.subscriber_id, region_ids)))
    rows = [{"subscriber_id": sid, "region_id": rid} for sid, rids in region_ids.items() for rid in rids]
    if rows:
        insert_many(session.connection(), table, rows)


def active_subscribers_per_region(session: Session) -> list[tuple[str, str, int]]:
    """(code, name, active subscribers) for every region, in display order."""
    active = (
        sa.select(SUBSCRIPTION.c.region_id, sa.func.count().label("n"))
        .join(SUBSCRIBER, SUBSCRIBER.c.id == SUBSCRIPTION.c.subscriber_id)
        .where(SUBSCRIBER.c.status == SubscriberStatus.ACTIVE)
        .group_by(SUBSCRIPTION.c.region_id)
        .subquery()
    )
    rows = session.execute(
        sa.select(REGION.c.code, REGION.c.name, sa.func.coalesce(active.c.n, 0))
        .outerjoin(active, active.c.region_id == REGION.c.id)
        .order_by(REGION.c.position, REGION.c.id)
    )
    return [(code, name, int(n)) for code, name, n in rows]


def recent_deliveries(session: Session, subscriber_id: int, limit: int) -> list[tuple[Delivery, Bulletin]]:
    """The subscriber's latest deliveries with their bulletin, newest first."""
    rows = session.exec(
        select(Delivery, Bulletin)
        .join(Bulletin, col(Bulletin.id) == col(Delivery.bulletin_id))
        .where(Delivery.subscriber_id == subscriber_id)
        .order_by(col(Delivery.id).desc())
        .limit(limit)
    ).all()
    return [(d, b) for d, b in rows]


def events_of_deliveries(session: Session, delivery_ids: Sequence[int], limit: int) -> list[DeliveryEvent]:
    """ESP events of these deliveries, newest first."""
    if not delivery_ids:
        return []
    return list(
        session.exec(
            select(DeliveryEvent)
            .where(col(DeliveryEvent.delivery_id).in_(list(delivery_ids)))
            .order_by(col(DeliveryEvent.occurred_at).desc())
            .limit(limit)
        ).all()
    )
