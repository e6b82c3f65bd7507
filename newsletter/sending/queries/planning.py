"""Planning: who is eligible, which variant each gets, and the one `INSERT … SELECT` that plans them."""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from newsletter.core import zones
from newsletter.core.dialect import bind_time, hash_grouping
from newsletter.core.errors import ConfigError
from newsletter.core.models import (
    BULLETIN,
    DELIVERY,
    ITEM,
    REGION,
    SEND_BATCH,
    SUBSCRIBER,
    SUBSCRIPTION,
    SUPPRESSION,
)
from newsletter.core.status import BatchStatus, DeliveryStatus, SubscriberStatus

D = DeliveryStatus


def bulletin_regions(conn: sa.Connection, bulletin_id: int) -> list[tuple[int, str]]:
    """(region id, code) of the regions the bulletin has items for, in display order."""
    r, i = REGION.c, ITEM.c
    has_items = sa.exists().where(i.bulletin_id == bulletin_id, i.region_id == r.id)
    rows = conn.execute(sa.select(r.id, r.code).where(has_items).order_by(r.position, r.id))
    return [(row[0], row[1]) for row in rows]


def eligible_subscriber(now: datetime | sa.BindParameter[Any]) -> sa.ColumnElement[bool]:
    """The one rule for who may be mailed: active, not paused, not suppressed (by email hash). `now` is a
    time, or a parameter for a statement built once."""
    s, x = SUBSCRIBER.c, SUPPRESSION.c
    when = now if isinstance(now, sa.BindParameter) else bind_time(now, s.paused_until)
    return sa.and_(
        s.status == SubscriberStatus.ACTIVE,
        sa.or_(s.paused_until.is_(None), s.paused_until <= when),
        ~sa.exists().where(x.email_hash == s.email_hash),
    )


def eligible(
    regions: Sequence[tuple[int, str]], now: datetime, *, with_no_section: bool = False
) -> sa.Subquery:
    """(subscriber_id, variant, timezone, mask) of every eligible subscriber whose regions overlap
    `regions`, and with `with_no_section` also of those whose regions do not (mask NULL, variant '').

    `regions` must be non-empty and in display order; the variant lists the overlap in that order.
    `timezone` is the subscriber's own (None: the default zone). `mask` has bit n set for the n-th of
    `regions`: one number per variant, cheaper to sort by than the variant's text.
    """
    s, sn = SUBSCRIBER.c, SUBSCRIPTION.c
    bits = sa.case({rid: 1 << n for n, (rid, _) in enumerate(regions)}, value=sn.region_id)
    in_regions = sn.region_id.in_([rid for rid, _ in regions])
    joined = (
        SUBSCRIBER.outerjoin(SUBSCRIPTION, sa.and_(sn.subscriber_id == s.id, in_regions))
        if with_no_section
        else SUBSCRIBER.join(SUBSCRIPTION, sa.and_(sn.subscriber_id == s.id, in_regions))
    )
    masks = (
        # min(timezone): one value per subscriber, carried through the grouping without grouping by it.
        sa.select(
            s.id.label("subscriber_id"), sa.func.sum(bits).label("mask"), sa.func.min(s.timezone).label("tz")
        )
        .select_from(joined)
        .where(eligible_subscriber(now))
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
    return sa.select(
        masks.c.subscriber_id, variant.label("variant"), masks.c.tz.label("timezone"), masks.c.mask
    ).subquery("eligible")


def local_slot(conn: sa.Connection, bulletin_id: int) -> datetime | None:
    """The bulletin's local-time slot (a naive wall-clock time), or None when everyone gets it at once."""
    stored = conn.execute(sa.select(BULLETIN.c.local_send_at).where(BULLETIN.c.id == bulletin_id)).scalar()
    return zones.parse_wall(stored) if stored else None


def _due_times(
    conn: sa.Connection, bulletin_id: int, rows: sa.Subquery, default_zone: str | None
) -> tuple[sa.Subquery, sa.ColumnElement[Any]]:
    """What planning selects from (subscriber_id, variant, mask), and each delivery's `not_before`: NULL
    (due at once) for an ordinary send; for a local-time send, the slot in the subscriber's zone, from a
    small (zone, due_at) table computed in Python for every IANA zone and joined to the eligible rows.

    A subscriber without a zone gets `default_zone`'s time; a name the tz database no longer knows
    matches no row of the table and gets the default zone's time too, rather than being lost.
    """
    d = DELIVERY.c
    wall = local_slot(conn, bulletin_id)
    if wall is None:
        return rows, sa.null()
    if default_zone is None:
        raise ConfigError(f"bulletin {bulletin_id} is a local-time send: planning it needs the default zone")
    table = zones.zone_table(wall, [*zones.all_zones(), default_zone])
    due = (
        sa.values(sa.column("zone", sa.String), sa.column("due_at", d.not_before.type), name="zone_due")
        .data(table)
        # A CTE, since SQLite cannot name the columns of `(VALUES …) AS t (…)`; nested in a subquery, so
        # that the statement still starts with INSERT (Python's sqlite3 counts no rows for one starting WITH).
        .cte("zone_due", nesting=True)
    )
    default_due = bind_time(zones.due_at(wall, default_zone), d.not_before)
    timed = (
        sa.select(
            rows.c.subscriber_id,
            rows.c.variant,
            rows.c.mask,
            sa.func.coalesce(due.c.due_at, default_due).label("not_before"),
        )
        .select_from(rows.outerjoin(due, due.c.zone == rows.c.timezone))
        .subquery("timed")
    )
    return timed, timed.c.not_before


NO_SECTION_REASON = "no section for their regions this week"
GLOBAL_REGION = "global"
SKIP = "skip"
"""The `NO_SECTION` values: the global section, or a recorded skip (the default)."""


def without_section(regions: Sequence[tuple[int, str]], now: datetime) -> sa.Select[Any]:
    """Ids of eligible subscribers none of whose regions has a section in `regions`: who gets nothing."""
    s, sn = SUBSCRIBER.c, SUBSCRIPTION.c
    overlaps = sa.exists().where(sn.subscriber_id == s.id, sn.region_id.in_([rid for rid, _ in regions]))
    return sa.select(s.id).where(eligible_subscriber(now), ~overlaps)


def no_section_count(conn: sa.Connection, bulletin_id: int, now: datetime) -> int:
    """How many eligible subscribers have no section in this bulletin (whatever `NO_SECTION` does)."""
    regions = bulletin_regions(conn, bulletin_id)
    if not regions:
        return 0
    ids = without_section(regions, now).subquery()
    return int(conn.execute(sa.select(sa.func.count()).select_from(ids)).scalar_one())


def _no_section_rule(
    rows: sa.Subquery, regions: Sequence[tuple[int, str]], policy: str
) -> tuple[sa.ColumnElement[Any], sa.ColumnElement[Any], sa.ColumnElement[Any]]:
    """(variant, status, last_error) of each planned row: a subscriber with a section gets it, pending;
    one without (mask NULL) gets the global section with `NO_SECTION=global` when there is one, and
    otherwise a `skipped` row that says why."""
    none = rows.c.mask.is_(None)
    pending = sa.literal(str(D.PENDING), sa.String)
    if policy == GLOBAL_REGION and any(code == GLOBAL_REGION for _, code in regions):
        global_variant = sa.case((none, sa.literal(GLOBAL_REGION, sa.String)), else_=rows.c.variant)
        return global_variant, pending, sa.literal("", sa.Text)
    status = sa.case((none, sa.literal(str(D.SKIPPED), sa.String)), else_=pending)
    reason = sa.case((none, sa.literal(NO_SECTION_REASON, sa.Text)), else_=sa.literal("", sa.Text))
    return rows.c.variant, status, reason


def _insert_new(conn: sa.Connection, bulletin_id: int, select: sa.Select[Any], subscriber_id: Any) -> int:
    """Insert the deliveries `select` gives (`_COLUMNS`), leaving out subscribers the bulletin already
    has one for.

    Those are left out by an anti-join, and only when the bulletin has deliveries at all, rather than by
    `ON CONFLICT DO NOTHING`, whose speculative insertion costs a third of the insert (1.8 s of a
    million rows on PostgreSQL). That is safe because every caller of `plan` holds the bulletin's row
    (it claimed or locked it), so no other transaction adds deliveries to this bulletin meanwhile; and
    the unique key on (bulletin, subscriber) still stands behind it, failing the statement rather than
    letting anyone be planned twice.
    """
    planned = DELIVERY.alias("planned")
    if conn.execute(sa.select(sa.exists().where(planned.c.bulletin_id == bulletin_id))).scalar():
        select = select.where(
            ~sa.exists().where(planned.c.bulletin_id == bulletin_id, planned.c.subscriber_id == subscriber_id)
        )
    stmt = (
        sa.insert(DELIVERY)
        .from_select(_COLUMNS, select)
        .execution_options(preserve_rowcount=True)  # SQLAlchemy keeps INSERT rowcounts only when asked
    )
    return conn.execute(stmt).rowcount


_COLUMNS = [
    "bulletin_id",
    "subscriber_id",
    "variant",
    "status",
    "attempts",
    "last_error",
    "updated_at",
    "not_before",
]
"""The columns planning fills, in its select's order."""


def plan(
    conn: sa.Connection,
    bulletin_id: int,
    now: datetime,
    *,
    default_zone: str | None = None,
    no_section: str = SKIP,
) -> int:
    """Create the deliveries of a bulletin in one statement; returns how many were new.

    Idempotent: a delivery that exists (any status) is left alone, so planning again only adds
    subscribers who became eligible since. The caller holds the bulletin's row (see `_insert_new`).

    A local-time send gives each delivery its due time in `not_before` (the claim takes only rows whose
    `not_before` has passed); `default_zone` (`TIMEZONE`) is then required, for subscribers without a
    zone of their own. Subscribers with no section this week get the global section or a `skipped`
    delivery with the reason, as `no_section` (`NO_SECTION`) says.
    """
    regions = bulletin_regions(conn, bulletin_id)
    if not regions:
        return 0
    rows, not_before = _due_times(
        conn, bulletin_id, eligible(regions, now, with_no_section=True), default_zone
    )
    d = DELIVERY.c
    variant, status, reason = _no_section_rule(rows, regions, no_section)
    select = sa.select(
        sa.literal(bulletin_id, sa.Integer),
        rows.c.subscriber_id,
        variant,
        status,
        sa.literal(0, sa.Integer),
        reason,
        bind_time(now, d.updated_at),
        not_before,
    )
    # Ids in variant and due-time order: a batch (one variant, one window of ids) is then mostly one due
    # time and a run of neighbouring rows, so recording it touches a few dozen pages instead of one page
    # per recipient, which made each commit write megabytes. The mask stands for the variant: sorting a
    # million numbers is cheaper than sorting their texts.
    due_first = [] if isinstance(not_before, sa.Null) else [not_before]
    select = select.order_by(rows.c.mask, *due_first, rows.c.subscriber_id)
    after_id = conn.execute(sa.select(sa.func.coalesce(sa.func.max(d.id), 0))).scalar_one()
    planned = _insert_new(conn, bulletin_id, select, rows.c.subscriber_id)
    cut_batches(conn, bulletin_id, after_id, now)
    return planned


BATCH_WINDOW = 1000
"""Ids per planned batch: the most a backend takes in one call (`BATCH_SIZE` ≤ 1000); a claim with a
smaller limit splits the batch."""


def cut_batches(conn: sa.Connection, bulletin_id: int, after_id: int, now: datetime) -> int:
    """Put the bulletin's pending deliveries with ids above `after_id` in batches: one per variant and
    window of `BATCH_WINDOW` ids counted from `after_id`. Windows are disjoint, so batches of one
    variant never share a delivery, in whatever order the ids came. Returns how many batches."""
    d = DELIVERY.c
    window = (d.id - after_id) // BATCH_WINDOW
    timed = sa.func.count(d.not_before) == sa.func.count()
    select = (
        sa.select(
            sa.literal(bulletin_id, sa.Integer),
            d.variant,
            sa.func.min(d.id),
            sa.func.max(d.id),
            sa.literal(str(BatchStatus.PENDING), sa.String),
            # Due when its earliest delivery is; NULL (now) when any of them is due at once.
            sa.case((timed, sa.func.min(d.not_before)), else_=sa.null()),
            sa.func.max(d.attempts) > 0,
            bind_time(now, SEND_BATCH.c.updated_at),
        )
        .where(d.bulletin_id == bulletin_id, d.id > after_id, d.status == D.PENDING)
        .group_by(d.variant, window)
        .order_by(sa.func.min(d.id))
    )
    stmt = sa.insert(SEND_BATCH).from_select(
        ["bulletin_id", "variant", "first_id", "last_id", "status", "not_before", "retrying", "updated_at"],
        select,
    )
    with hash_grouping(conn):
        return conn.execute(stmt).rowcount


def variant_counts(
    conn: sa.Connection, bulletin_id: int, now: datetime, *, no_section: str = SKIP
) -> dict[str, int]:
    """How many subscribers eligible now would get each variant (the planning rule, not the ledger),
    those without a section included under `global` when `no_section` sends them that."""
    regions = bulletin_regions(conn, bulletin_id)
    if not regions:
        return {}
    rows = eligible(regions, now)
    result = conn.execute(
        sa.select(rows.c.variant, sa.func.count()).group_by(rows.c.variant).order_by(rows.c.variant)
    )
    counts = {variant: int(n) for variant, n in result}
    if no_section == GLOBAL_REGION and any(code == GLOBAL_REGION for _, code in regions):
        extra = no_section_count(conn, bulletin_id, now)
        if extra:
            counts[GLOBAL_REGION] = counts.get(GLOBAL_REGION, 0) + extra
    return counts
