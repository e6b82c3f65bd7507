"""Every query of the send path, in one module: the only place where SQLite and PostgreSQL differ.

Like procrastinate's `manager.py`, this module runs the statements and nothing else decides how rows
move. Each function takes a `Connection` inside a transaction the caller opened (`engine.begin()`), so
the caller decides what commits together. The rules:

- **Start** (`claim_next_ready`, `claim_due`, `start`): one `UPDATE … WHERE id = (SELECT … FOR UPDATE
  SKIP LOCKED) RETURNING` moves a bulletin to `sending`, so exactly one process starts it.
- **Plan** (`plan`): one `INSERT … SELECT … ON CONFLICT DO NOTHING` creates a `pending` delivery for
  every eligible subscriber with its variant key. The variant is computed in SQL: each subscriber's
  matched regions become a bit mask (`SUM(1 << position)` over its subscriptions) and the mask becomes
  the key by concatenating the codes of its set bits in display order (SQLite 3.40 has no ordered
  `group_concat`). `variant_counts` uses the very same `eligible()` select.
- **Claim** (`claim_batch`): up to `limit` pending deliveries of one bulletin and one variant, whose
  `not_before` has passed, become `sending` under a lease token that is unique to the batch. PostgreSQL
  locks them with `FOR UPDATE SKIP LOCKED` so concurrent workers take disjoint batches; SQLite relies on
  `BEGIN IMMEDIATE` (see `newsletter.core.db`), which serialises writers.
- **Record** (`record_*`): one statement per batch outcome, fenced by the lease token: a worker whose
  lease was taken over can no longer change rows another worker now owns.
- **Recover** (`recover_expired`): `sending` rows whose lease expired go back to `pending` (resend) or to
  `failed` (outcome unknown).

Datetimes are always bound through the typed table columns (`UTCDateTime`), so both databases store
and compare the same format.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from newsletter.core.dialect import insert as dialect_insert
from newsletter.core.dialect import is_pg, one_of, skip_locked
from newsletter.core.models import (
    Bulletin,
    Delivery,
    Item,
    Region,
    ScheduleSlot,
    Subscriber,
    Subscription,
    Suppression,
)
from newsletter.core.status import OPEN_DELIVERY, BulletinStatus, DeliveryStatus, SubscriberStatus

DELIVERY: sa.Table = Delivery.__table__  # type: ignore[attr-defined]
BULLETIN: sa.Table = Bulletin.__table__  # type: ignore[attr-defined]
SUBSCRIBER: sa.Table = Subscriber.__table__  # type: ignore[attr-defined]
SUBSCRIPTION: sa.Table = Subscription.__table__  # type: ignore[attr-defined]
SUPPRESSION: sa.Table = Suppression.__table__  # type: ignore[attr-defined]
REGION: sa.Table = Region.__table__  # type: ignore[attr-defined]
ITEM: sa.Table = Item.__table__  # type: ignore[attr-defined]
SLOT: sa.Table = ScheduleSlot.__table__  # type: ignore[attr-defined]

D = DeliveryStatus
UNKNOWN_OUTCOME = "outcome unknown (worker stopped mid-send)"
LEASE_EXPIRED = "lease expired (worker stopped mid-send); sent again"
SENT_STATUSES = frozenset({D.ACCEPTED, D.DEFERRED, D.DELIVERED, D.BOUNCED, D.DROPPED, D.COMPLAINED})
"""Deliveries the ESP took: what the send rate counts."""


def _when(value: datetime | None, column: sa.Column[Any]) -> Any:
    """A datetime bound through `column`'s type (UTCDateTime), so both dialects store one format."""
    return sa.literal(value, type_=column.type)


# --- bulletins ------------------------------------------------------------------------------------------


def _start_values(now: datetime) -> dict[str, Any]:
    return {
        "status": BulletinStatus.SENDING,
        "started_at": sa.func.coalesce(BULLETIN.c.started_at, _when(now, BULLETIN.c.started_at)),
        "updated_at": _when(now, BULLETIN.c.updated_at),
        "last_error": "",
    }


def _claim_bulletin(
    conn: sa.Connection, where: Sequence[Any], order: Sequence[Any], now: datetime
) -> int | None:
    b = BULLETIN.c
    pick = skip_locked(conn, sa.select(b.id).where(*where).order_by(*order).limit(1)).scalar_subquery()
    stmt = (
        sa.update(BULLETIN)
        .where(b.id == pick, b.status == BulletinStatus.READY)
        .values(_start_values(now))
        .returning(b.id)
    )
    return conn.execute(stmt).scalar()


def claim_next_ready(conn: sa.Connection, now: datetime) -> int | None:
    """Start the oldest `ready` bulletin without a `send_at` (what a schedule slot sends); its id or None."""
    b = BULLETIN.c
    return _claim_bulletin(
        conn, [b.status == BulletinStatus.READY, b.send_at.is_(None)], [b.created_at, b.id], now
    )


def claim_due(conn: sa.Connection, now: datetime) -> int | None:
    """Start the earliest `ready` bulletin whose own `send_at` has come; its id or None."""
    b = BULLETIN.c
    return _claim_bulletin(
        conn,
        [b.status == BulletinStatus.READY, b.send_at.is_not(None), b.send_at <= _when(now, b.send_at)],
        [b.send_at, b.id],
        now,
    )


def start(conn: sa.Connection, bulletin_id: int, now: datetime, from_statuses: Sequence[str]) -> bool:
    """Move one named bulletin to `sending` if it is in one of `from_statuses`; False if it was not."""
    b = BULLETIN.c
    stmt = (
        sa.update(BULLETIN)
        .where(b.id == bulletin_id, b.status.in_(list(from_statuses)))
        .values(_start_values(now))
        .returning(b.id)
    )
    return conn.execute(stmt).scalar() is not None


def sending_bulletins(conn: sa.Connection) -> list[int]:
    """Bulletins in `sending`, oldest start first: what the send loop works on."""
    b = BULLETIN.c
    rows = conn.execute(
        sa.select(b.id).where(b.status == BulletinStatus.SENDING).order_by(b.started_at, b.id)
    )
    return [r[0] for r in rows]


def finish_if_done(conn: sa.Connection, bulletin_id: int, now: datetime) -> bool:
    """`sending` → `sent` when no delivery is pending or sending; True for the one caller that did it."""
    b, d = BULLETIN.c, DELIVERY.c
    still_open = sa.exists().where(d.bulletin_id == bulletin_id, d.status.in_(list(OPEN_DELIVERY)))
    stmt = (
        sa.update(BULLETIN)
        .where(b.id == bulletin_id, b.status == BulletinStatus.SENDING, ~still_open)
        .values(
            status=BulletinStatus.SENT,
            finished_at=_when(now, b.finished_at),
            updated_at=_when(now, b.updated_at),
        )
        .returning(b.id)
    )
    return conn.execute(stmt).scalar() is not None


def fire_slot(conn: sa.Connection, slot_at: datetime, now: datetime, worker: str) -> bool:
    """Record a schedule slot as fired; True only for the first process to do so (unique key on the slot)."""
    stmt = (
        dialect_insert(conn, SLOT)
        .values(
            slot_at=_when(slot_at, SLOT.c.slot_at), fired_at=_when(now, SLOT.c.fired_at), worker=worker[:80]
        )
        .on_conflict_do_nothing(index_elements=["slot_at"])
        .execution_options(preserve_rowcount=True)
    )
    return conn.execute(stmt).rowcount == 1


def set_slot_bulletin(conn: sa.Connection, slot_at: datetime, bulletin_id: int) -> None:
    conn.execute(
        sa.update(SLOT)
        .where(SLOT.c.slot_at == _when(slot_at, SLOT.c.slot_at))
        .values(bulletin_id=bulletin_id)
    )


# --- planning ---------------------------------------------------------------------------------------------


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
        sa.or_(s.paused_until.is_(None), s.paused_until <= _when(now, s.paused_until)),
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
        _when(now, d.updated_at),
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


# --- batches --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimedRow:
    delivery_id: int
    subscriber_id: int | None
    email: str | None
    name: str
    attempts: int
    eligible: bool
    reason: str
    """Why an ineligible row is skipped ("" when eligible)."""
    link_secret: str = ""
    """What the tokens in this recipient's links are bound to (newsletter.mail.tokens)."""


def _claimable(bulletin_id: int, now: datetime) -> list[sa.ColumnElement[bool]]:
    d = DELIVERY.c
    return [
        d.bulletin_id == bulletin_id,
        d.status == D.PENDING,
        sa.or_(d.not_before.is_(None), d.not_before <= _when(now, d.not_before)),
    ]


def claim_batch(
    conn: sa.Connection,
    bulletin_id: int,
    limit: int,
    token: str,
    now: datetime,
    lease_until: datetime,
) -> tuple[str, list[ClaimedRow]] | None:
    """Lease up to `limit` ready pending deliveries of one variant of a `sending` bulletin.

    Returns (variant, rows) with each row's subscriber and whether it may still be mailed (suppressions
    and the subscriber's status are checked again here: they may have changed since planning), or None
    when nothing is ready. Two statements: the claiming UPDATE, then one SELECT for the batch.
    """
    d, b = DELIVERY.c, BULLETIN.c
    bulletin_sending = sa.exists().where(b.id == bulletin_id, b.status == BulletinStatus.SENDING)
    first_variant = skip_locked(
        conn, sa.select(d.variant).where(*_claimable(bulletin_id, now)).order_by(d.variant, d.id).limit(1)
    ).scalar_subquery()
    ids = skip_locked(
        conn,
        sa.select(d.id)
        .where(*_claimable(bulletin_id, now), d.variant == first_variant, bulletin_sending)
        .order_by(d.variant, d.id)
        .limit(limit),
    )
    # PostgreSQL: `= ANY(ARRAY(…))` makes the outer UPDATE probe the primary key for each claimed id; with
    # `IN (…)` the planner may hash-join the whole table. SQLite probes the key either way.
    claimed_ids = sa.any_(sa.func.array(ids.scalar_subquery())) if is_pg(conn) else None
    claimed = conn.execute(
        sa.update(DELIVERY)
        .where(d.id == claimed_ids if claimed_ids is not None else d.id.in_(ids.scalar_subquery()))
        .values(
            status=D.SENDING,
            leased_by=token,
            lease_expires_at=_when(lease_until, d.lease_expires_at),
            updated_at=_when(now, d.updated_at),
        )
        .returning(d.variant)
    ).fetchall()
    if not claimed:
        return None
    variant = claimed[0][0]
    s, x = SUBSCRIBER.c, SUPPRESSION.c
    ok = eligible_subscriber(now)
    suppressed = sa.exists().where(x.email_hash == s.email_hash)
    rows = conn.execute(
        sa.select(
            d.id,
            d.subscriber_id,
            d.attempts,
            s.email,
            s.name,
            s.status,
            sa.case((ok, 1), else_=0),
            suppressed,
            s.link_secret,
        )
        .select_from(DELIVERY.outerjoin(SUBSCRIBER, s.id == d.subscriber_id))
        .where(*_leased(bulletin_id, token))
        .order_by(d.id)
    )
    out = []
    for did, sid, attempts, email, name, status, is_ok, is_suppressed, secret in rows:
        reason = ""
        if not is_ok:
            if email is None:
                reason = "subscriber erased"
            elif is_suppressed:
                reason = "address suppressed"
            elif status != SubscriberStatus.ACTIVE:
                reason = f"subscriber {status}"
            else:
                reason = "subscriber paused"
        out.append(ClaimedRow(did, sid, email, name or "", attempts, bool(is_ok), reason, secret or ""))
    return variant, out


def _leased(bulletin_id: int, token: str, ids: Sequence[int] | None = None) -> list[sa.ColumnElement[bool]]:
    d = DELIVERY.c
    where = [d.bulletin_id == bulletin_id, d.status == D.SENDING, d.leased_by == token]
    if ids is not None:
        where.append(d.id.in_(list(ids)))
    return where


def _ids_in(conn: sa.Connection, ids: Sequence[int]) -> sa.ColumnElement[bool]:
    """`id` among `ids`: one array parameter on PostgreSQL, an expanded IN list on SQLite."""
    return one_of(conn, DELIVERY.c.id, ids)


def record_accepted(
    conn: sa.Connection,
    bulletin_id: int,
    token: str,
    accepted: Sequence[tuple[int, str | None]],
    now: datetime,
    *,
    whole_batch: bool = False,
) -> int:
    """Mark (delivery id, message id) pairs `accepted`: one statement when they share one message id
    (SendGrid: one per request), and none of them by id when they are the whole batch.

    Rows that lease recovery already moved on (back to `pending`, or `failed` as outcome unknown) while
    still carrying this batch's token are taken back by a second statement: the outcome is known after all.
    """
    if not accepted:
        return 0
    d = DELIVERY.c
    values = {
        "status": D.ACCEPTED,
        "sent_at": _when(now, d.sent_at),
        "updated_at": _when(now, d.updated_at),
        "lease_expires_at": None,
        "not_before": None,
        "last_error": "",
        "attempts": d.attempts + 1,
    }
    message_ids = {m for _, m in accepted}
    ids = [i for i, _ in accepted]
    if len(message_ids) == 1:
        message_id = message_ids.pop()
        leased = (
            _leased(bulletin_id, token) if whole_batch else [*_leased(bulletin_id, token), _ids_in(conn, ids)]
        )
        done = conn.execute(
            sa.update(DELIVERY).where(*leased).values(message_id=message_id, **values)
        ).rowcount
        if done < len(ids):
            recovered = [
                d.bulletin_id == bulletin_id,
                d.leased_by == token,
                _ids_in(conn, ids),
                d.status.in_([D.PENDING, D.FAILED]),
            ]
            done += conn.execute(
                sa.update(DELIVERY).where(*recovered).values(message_id=message_id, **values)
            ).rowcount
        return done
    # One message id per recipient (outbox, SMTP): executemany. Statuses are spelled out rather than
    # IN (…), which cannot go through executemany.
    where = [
        d.bulletin_id == bulletin_id,
        d.leased_by == token,
        sa.or_(d.status == D.SENDING, d.status == D.PENDING, d.status == D.FAILED),
        d.id == sa.bindparam("did"),
    ]
    stmt = sa.update(DELIVERY).where(*where).values(message_id=sa.bindparam("mid"), **values)
    conn.execute(stmt, [{"did": i, "mid": m} for i, m in accepted])
    return len(accepted)


def record_retry(
    conn: sa.Connection,
    bulletin_id: int,
    token: str,
    ids: Sequence[int] | None,
    error: str,
    not_before: datetime,
    max_attempts: int,
    now: datetime,
    *,
    count_attempt: bool = True,
) -> tuple[int, int]:
    """Back to `pending` after `not_before`, or `failed` once `max_attempts` are used: one statement.

    `ids=None` means every row of the batch still leased. Returns (retried, failed).
    """
    d = DELIVERY.c
    attempts = d.attempts + (1 if count_attempt else 0)
    gave_up = attempts >= max_attempts
    rows = conn.execute(
        sa.update(DELIVERY)
        .where(*_leased(bulletin_id, token, ids))
        .values(
            status=sa.case((gave_up, sa.literal(str(D.FAILED))), else_=sa.literal(str(D.PENDING))),
            attempts=attempts,
            last_error=sa.case(
                (gave_up, sa.literal(f"{error} (gave up after {max_attempts} attempts)")),
                else_=sa.literal(error),
            ),
            not_before=_when(not_before, d.not_before),
            lease_expires_at=None,
            updated_at=_when(now, d.updated_at),
        )
        .returning(d.status)
    ).fetchall()
    failed = sum(1 for (status,) in rows if status == D.FAILED)
    return len(rows) - failed, failed


def record_failed(
    conn: sa.Connection, bulletin_id: int, token: str, ids: Sequence[int] | None, error: str, now: datetime
) -> int:
    """A permanent error: `failed` with the reason, never retried."""
    d = DELIVERY.c
    stmt = (
        sa.update(DELIVERY)
        .where(*_leased(bulletin_id, token, ids))
        .values(
            status=D.FAILED,
            attempts=d.attempts + 1,
            last_error=error,
            lease_expires_at=None,
            updated_at=_when(now, d.updated_at),
        )
    )
    return conn.execute(stmt).rowcount


def record_skipped(
    conn: sa.Connection, bulletin_id: int, token: str, ids: Sequence[int], reason: str, now: datetime
) -> int:
    """Not mailed on purpose (unsubscribed, suppressed, paused since planning)."""
    d = DELIVERY.c
    stmt = (
        sa.update(DELIVERY)
        .where(*_leased(bulletin_id, token, ids))
        .values(
            status=D.SKIPPED, last_error=reason, lease_expires_at=None, updated_at=_when(now, d.updated_at)
        )
    )
    return conn.execute(stmt).rowcount


def release(conn: sa.Connection, bulletin_id: int, token: str, now: datetime, error: str = "") -> int:
    """Give every still-leased row of a batch back as `pending`, not counted as an attempt (nothing was sent)."""
    d = DELIVERY.c
    values: dict[str, Any] = {
        "status": D.PENDING,
        "lease_expires_at": None,
        "updated_at": _when(now, d.updated_at),
    }
    if error:
        values["last_error"] = error
    return conn.execute(sa.update(DELIVERY).where(*_leased(bulletin_id, token)).values(values)).rowcount


def skip_open(conn: sa.Connection, bulletin_id: int, reason: str, now: datetime) -> int:
    """Every `pending` delivery of a bulletin becomes `skipped` (the bulletin was cancelled)."""
    d = DELIVERY.c
    stmt = (
        sa.update(DELIVERY)
        .where(d.bulletin_id == bulletin_id, d.status == D.PENDING)
        .values(status=D.SKIPPED, last_error=reason, updated_at=_when(now, d.updated_at))
    )
    return conn.execute(stmt).rowcount


def recover_expired(conn: sa.Connection, now: datetime, *, resend: bool) -> dict[int, int]:
    """Expired leases of bulletins not yet finished: back to `pending` (resend) or `failed` (outcome unknown).

    The batch token stays in `leased_by`, so a worker that was only slow can still record the outcome
    it learnt (`record_accepted`). Returns {bulletin id: rows recovered}.
    """
    b, d = BULLETIN.c, DELIVERY.c
    open_bulletins = [
        r[0]
        for r in conn.execute(
            sa.select(b.id).where(
                b.status.in_([BulletinStatus.SENDING, BulletinStatus.PAUSED, BulletinStatus.CANCELLED])
            )
        )
    ]
    out: dict[int, int] = {}
    for bulletin_id in open_bulletins:
        values: dict[str, Any] = (
            {"status": D.PENDING, "last_error": LEASE_EXPIRED}
            if resend
            else {"status": D.FAILED, "last_error": UNKNOWN_OUTCOME, "attempts": d.attempts + 1}
        )
        n = conn.execute(
            sa.update(DELIVERY)
            .where(
                d.bulletin_id == bulletin_id,
                d.status == D.SENDING,
                d.lease_expires_at < _when(now, d.lease_expires_at),
            )
            .values(lease_expires_at=None, updated_at=_when(now, d.updated_at), **values)
        ).rowcount
        if n:
            out[bulletin_id] = n
    return out


def next_retry_at(conn: sa.Connection, bulletin_id: int) -> datetime | None:
    """The earliest `not_before` among pending deliveries still waiting, or None."""
    d = DELIVERY.c
    return conn.execute(
        sa.select(sa.func.min(d.not_before)).where(d.bulletin_id == bulletin_id, d.status == D.PENDING)
    ).scalar()


def earliest_lease_expiry(conn: sa.Connection, bulletin_id: int) -> datetime | None:
    d = DELIVERY.c
    return conn.execute(
        sa.select(sa.func.min(d.lease_expires_at)).where(d.bulletin_id == bulletin_id, d.status == D.SENDING)
    ).scalar()


# --- reporting ------------------------------------------------------------------------------------------


def status_counts(conn: sa.Connection, bulletin_id: int) -> dict[str, int]:
    d = DELIVERY.c
    rows = conn.execute(
        sa.select(d.status, sa.func.count()).where(d.bulletin_id == bulletin_id).group_by(d.status)
    )
    return {status: int(n) for status, n in rows}


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


def last_sent_at(conn: sa.Connection, bulletin_id: int) -> datetime | None:
    d = DELIVERY.c
    return conn.execute(sa.select(sa.func.max(d.sent_at)).where(d.bulletin_id == bulletin_id)).scalar()
