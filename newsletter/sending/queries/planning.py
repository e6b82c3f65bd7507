"""Planning: who is eligible, which variant each gets, and the one `INSERT … SELECT` that plans them."""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa

from newsletter.core.dialect import bind_time
from newsletter.core.dialect import insert as dialect_insert
from newsletter.core.models import (
    DELIVERY,
    ITEM,
    REGION,
    SUBSCRIBER,
    SUBSCRIPTION,
    SUPPRESSION,
)
from newsletter.core.status import DeliveryStatus, SubscriberStatus

D = DeliveryStatus


def bulletin_regions(conn: sa.Connection, bulletin_id: int) -> list[tuple[int, str]]:
    """(region id, code) of the regions the bulletin has items for, in display order."""
    r, i = REGION.c, ITEM.c
    has_items = sa.exists().where(i.bulletin_id == bulletin_id, i.region_id == r.id)
    rows = conn.execute(sa.select(r.id, r.code).where(has_items).order_by(r.position, r.id))
    return [(row[0], row[1]) for row in rows]


def eligible_subscriber(now: datetime) -> sa.ColumnElement[bool]:
    """The one rule for who may be mailed: active, not paused, not suppressed (by email hash)."""
    s, x = SUBSCRIBER.c, SUPPRESSION.c
    return sa.and_(
        s.status == SubscriberStatus.ACTIVE,
        sa.or_(s.paused_until.is_(None), s.paused_until <= bind_time(now, s.paused_until)),
        ~sa.exists().where(x.email_hash == s.email_hash),
    )


def eligible(regions: Sequence[tuple[int, str]], now: datetime) -> sa.Subquery:
    """(subscriber_id, variant) of every eligible subscriber whose regions overlap `regions`.

    `regions` must be non-empty and in display order; the variant lists the overlap in that order.
    """
    s, sn = SUBSCRIBER.c, SUBSCRIPTION.c
    bits = sa.case({rid: 1 << n for n, (rid, _) in enumerate(regions)}, value=sn.region_id)
    masks = (
        sa.select(s.id.label("subscriber_id"), sa.func.sum(bits).label("mask"))
        .select_from(SUBSCRIBER.join(SUBSCRIPTION, sn.subscriber_id == s.id))
        .where(sn.region_id.in_([rid for rid, _ in regions]), eligible_subscriber(now))
        .group_by(s.id)
        .subquery("masks")
    )
    parts = [
        sa.case(
            (masks.c.mask.bitwise_and(1 << n) != 0, sa.literal(code + ",", sa.String)), else_=sa.literal("")
        )
        for n, (_, code) in enumerate(regions)
    ]
    variant = sa.func.rtrim(functools.reduce(operator.add, parts), ",")
    return sa.select(masks.c.subscriber_id, variant.label("variant")).subquery("eligible")


def plan(conn: sa.Connection, bulletin_id: int, now: datetime) -> int:
    """Create the pending deliveries of a bulletin in one statement; returns how many were new.

    Idempotent: a delivery that exists (any status) is left alone, so planning again only adds
    subscribers who became eligible since.
    """
    regions = bulletin_regions(conn, bulletin_id)
    if not regions:
        return 0
    rows = eligible(regions, now)
    d = DELIVERY.c
    select = sa.select(
        sa.literal(bulletin_id, sa.Integer),
        rows.c.subscriber_id,
        rows.c.variant,
        sa.literal(str(D.PENDING), sa.String),
        sa.literal(0, sa.Integer),
        sa.literal("", sa.Text),
        bind_time(now, d.updated_at),
    ).where(sa.true())  # SQLite needs a WHERE before ON CONFLICT to parse INSERT … SELECT … ON CONFLICT
    # Ids in variant order: a claimed batch (one variant, consecutive ids) is then a run of neighbouring
    # rows, so its claim and record touch a few dozen pages instead of one page per recipient, which
    # made each commit write megabytes.
    select = select.order_by(rows.c.variant, rows.c.subscriber_id)
    stmt = (
        dialect_insert(conn, DELIVERY)
        .from_select(
            ["bulletin_id", "subscriber_id", "variant", "status", "attempts", "last_error", "updated_at"],
            select,
        )
        .on_conflict_do_nothing(index_elements=["bulletin_id", "subscriber_id"])
        .execution_options(preserve_rowcount=True)  # SQLAlchemy keeps INSERT rowcounts only when asked
    )
    return conn.execute(stmt).rowcount


def variant_counts(conn: sa.Connection, bulletin_id: int, now: datetime) -> dict[str, int]:
    """How many subscribers eligible now would get each variant (the planning rule, not the ledger)."""
    regions = bulletin_regions(conn, bulletin_id)
    if not regions:
        return {}
    rows = eligible(regions, now)
    result = conn.execute(
        sa.select(rows.c.variant, sa.func.count()).group_by(rows.c.variant).order_by(rows.c.variant)
    )
    return {variant: int(n) for variant, n in result}
