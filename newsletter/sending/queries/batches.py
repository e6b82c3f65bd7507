"""Batches: claim a leased batch, record each outcome under the lease, recover expired leases."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from newsletter.content.types import Recipient
from newsletter.core.dialect import bind_time, dialect_name, is_pg, one_of, skip_locked
from newsletter.core.models import (
    BULLETIN,
    DELIVERY,
    SUBSCRIBER,
    SUPPRESSION,
)
from newsletter.core.status import BulletinStatus, DeliveryStatus, SubscriberStatus
from newsletter.sending.queries.planning import eligible_subscriber

D = DeliveryStatus
UNKNOWN_PREFIX = "outcome unknown"
"""How `last_error` begins for a delivery failed because its copy may already be out (RESEND_ON_UNKNOWN off)."""
UNKNOWN_OUTCOME = f"{UNKNOWN_PREFIX} (worker stopped mid-send)"
LEASE_EXPIRED = "lease expired (worker stopped mid-send); sent again"


class Claimed(NamedTuple):
    """A leased batch: the recipients who may be mailed, and the rows that may no longer be."""

    variant: str
    recipients: list[Recipient]
    """Eligible rows, in delivery id order, as the backends take them."""
    skipped: dict[str, list[int]]
    """Delivery ids of rows no longer eligible (suppressed, paused, erased since planning), by reason."""
    attempts: int
    """The most attempts any eligible row has had."""


def claim_batch(
    conn: sa.Connection,
    bulletin_id: int,
    limit: int,
    token: str,
    now: datetime,
    lease_until: datetime,
) -> Claimed | None:
    """Lease up to `limit` ready pending deliveries of one variant of a `sending` bulletin.

    Returns the batch with each row's subscriber, sorted by whether it may still be mailed
    (suppressions and the subscriber's status are checked again here: they may have changed since
    planning), or None when nothing is ready. Two statements: the claiming UPDATE, then one SELECT.
    """
    params = {"bulletin": bulletin_id, "limit": limit, "token": token, "now": now, "until": lease_until}
    # One returned row is enough: every row is claimed by then (SQLite runs the whole UPDATE at its first step).
    claimed = conn.execute(_claim(dialect_name(conn)), params).first()
    if claimed is None:
        return None
    return _leased_batch(conn, bulletin_id, token, now, claimed[0])


@functools.cache
def _claim(dialect: str) -> sa.Update:
    """The claiming UPDATE of `claim_batch`, built once per dialect, with the parameters `bulletin`,
    `limit`, `token`, `now` and `until` (the lease's end)."""
    d, b = DELIVERY.c, BULLETIN.c
    bulletin_id = sa.bindparam("bulletin", type_=sa.Integer)
    now = sa.bindparam("now", type_=d.not_before.type)
    claimable = [
        d.bulletin_id == bulletin_id,
        d.status == D.PENDING,
        sa.or_(d.not_before.is_(None), d.not_before <= now),
    ]
    bulletin_sending = sa.exists().where(b.id == bulletin_id, b.status == BulletinStatus.SENDING)
    first_variant = skip_locked(
        dialect, sa.select(d.variant).where(*claimable).order_by(d.variant, d.id).limit(1)
    ).scalar_subquery()
    ids = skip_locked(
        dialect,
        sa.select(d.id)
        .where(*claimable, d.variant == first_variant, bulletin_sending)
        .order_by(d.variant, d.id)
        .limit(sa.bindparam("limit", type_=sa.Integer)),
    )
    # PostgreSQL: `= ANY(ARRAY(…))` makes the outer UPDATE probe the primary key for each claimed id; with
    # `IN (…)` the planner may hash-join the whole table. SQLite probes the key either way.
    claimed = (
        d.id == sa.any_(sa.func.array(ids.scalar_subquery()))
        if is_pg(dialect)
        else d.id.in_(ids.scalar_subquery())
    )
    return (
        sa.update(DELIVERY)
        .where(claimed)
        .values(
            status=D.SENDING,
            leased_by=sa.bindparam("token"),
            lease_expires_at=sa.bindparam("until", type_=d.lease_expires_at.type),
            updated_at=now,
        )
        .returning(d.variant)
    )


def _skip_reason(email: str | None, suppressed: bool, status: str) -> str:
    """Why a leased row that may no longer be mailed is skipped."""
    if email is None:
        return "subscriber erased"
    if suppressed:
        return "address suppressed"
    if status != SubscriberStatus.ACTIVE:
        return f"subscriber {status}"
    return "subscriber paused"


def _leased_batch(conn: sa.Connection, bulletin_id: int, token: str, now: datetime, variant: str) -> Claimed:
    """The rows just leased under `token`, each with its subscriber and whether it may still be mailed.

    One `Recipient` per mailable row and nothing else per row, from the driver's own tuples: at a
    thousand rows a batch, SQLAlchemy's row objects and an intermediate object per row were a fifth
    of a worker's CPU (these columns need none of SQLAlchemy's result processing)."""
    result = conn.execute(_leased_rows(), {"bulletin": bulletin_id, "token": token, "now": now})
    try:
        rows = result.cursor.fetchall()
    finally:
        result.close()
    recipients: list[Recipient] = []
    skipped: dict[str, list[int]] = {}
    attempts = 0
    for email, name, sid, did, secret, tries, is_ok, status, is_suppressed in rows:
        if is_ok:
            recipients.append(Recipient(email, name, sid, did, bulletin_id, secret))
            if tries > attempts:
                attempts = tries
        else:
            skipped.setdefault(_skip_reason(email, is_suppressed, status), []).append(did)
    return Claimed(variant, recipients, skipped, attempts)


@functools.cache
def _leased_rows() -> sa.Select[Any]:
    """The statement of `_leased_batch`, built once (building it cost more than running it), with the
    parameters `bulletin`, `token` and `now`."""
    d, s, x = DELIVERY.c, SUBSCRIBER.c, SUPPRESSION.c
    ok = eligible_subscriber(sa.bindparam("now", type_=s.paused_until.type))
    suppressed = sa.exists().where(x.email_hash == s.email_hash)
    return (
        sa.select(
            s.email,
            sa.func.coalesce(s.name, ""),
            d.subscriber_id,
            d.id,
            sa.func.coalesce(s.link_secret, ""),
            d.attempts,
            sa.case((ok, 1), else_=0),
            s.status,
            suppressed,
        )
        .select_from(DELIVERY.outerjoin(SUBSCRIBER, s.id == d.subscriber_id))
        .where(
            d.bulletin_id == sa.bindparam("bulletin"),
            d.status == D.SENDING,
            d.leased_by == sa.bindparam("token"),
        )
        .order_by(d.id)
    )


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
    values: dict[str, Any] = {
        "status": D.ACCEPTED,
        "sent_at": bind_time(now, d.sent_at),
        "updated_at": bind_time(now, d.updated_at),
        "lease_expires_at": None,
        "not_before": None,
        "last_error": "",
        "attempts": d.attempts + 1,
    }
    message_ids = {m for _, m in accepted}
    if len(message_ids) == 1:
        return _record_shared_id(
            conn, bulletin_id, token, [i for i, _ in accepted], message_ids.pop(), values, whole_batch
        )
    # One message id per recipient (outbox, SMTP): executemany. Statuses are spelled out rather than
    # IN (…), which cannot go through executemany.
    where = [
        d.bulletin_id == bulletin_id,
        d.leased_by == token,
        sa.or_(d.status == D.SENDING, d.status == D.PENDING, d.status == D.FAILED),
        d.id == sa.bindparam("did"),
    ]
    stmt = (
        sa.update(DELIVERY)
        .where(*where)
        .values(**_with_message_id(sa.bindparam("mid", type_=sa.Text)), **values)
    )
    conn.execute(stmt, [{"did": i, "mid": m} for i, m in accepted])
    return len(accepted)


def _record_shared_id(
    conn: sa.Connection,
    bulletin_id: int,
    token: str,
    ids: list[int],
    message_id: str | None,
    values: dict[str, Any],
    whole_batch: bool,
) -> int:
    """`record_accepted` for deliveries that share one message id (see there)."""
    d = DELIVERY.c
    leased = (
        _leased(bulletin_id, token) if whole_batch else [*_leased(bulletin_id, token), _ids_in(conn, ids)]
    )
    done: int = conn.execute(
        sa.update(DELIVERY)
        .where(*leased)
        .values(**_with_message_id(sa.literal(message_id, sa.Text)), **values)
    ).rowcount
    if done < len(ids):
        recovered = [
            d.bulletin_id == bulletin_id,
            d.leased_by == token,
            _ids_in(conn, ids),
            d.status.in_([D.PENDING, D.FAILED]),
        ]
        done += conn.execute(
            sa.update(DELIVERY)
            .where(*recovered)
            .values(**_with_message_id(sa.literal(message_id, sa.Text)), **values)
        ).rowcount
    if done < len(ids) and message_id:
        _note_resent(conn, bulletin_id, token, ids, message_id)
    return done


def _note_resent(
    conn: sa.Connection, bulletin_id: int, token: str, ids: Sequence[int], message_id: str
) -> None:
    """Rows another worker sent again meanwhile (its own lease, accepted): keep this id too, so that the
    ledger shows the duplicate."""
    d = DELIVERY.c
    resent = [
        d.bulletin_id == bulletin_id,
        _ids_in(conn, ids),
        d.leased_by != token,
        d.status.not_in([D.PENDING, D.SENDING, D.FAILED, D.SKIPPED]),
    ]
    added = _with_message_id(sa.literal(message_id, sa.Text))["message_ids"]
    conn.execute(sa.update(DELIVERY).where(*resent).values(message_ids=added))


def _with_message_id(message_id: sa.ColumnElement[Any]) -> dict[str, Any]:
    """`message_id` becomes the latest id; `message_ids` keeps every id the ESP ever gave the delivery."""
    d = DELIVERY.c
    appended = sa.case(
        (d.message_ids == "", sa.func.coalesce(message_id, "")),
        else_=d.message_ids + sa.func.coalesce(sa.literal(" ", sa.Text) + message_id, ""),
    )
    return {"message_id": message_id, "message_ids": appended}


def record_retry(
    conn: sa.Connection,
    bulletin_id: int,
    token: str,
    ids: Sequence[int] | None,
    error: str,
    not_before: datetime,
    max_attempts: int | None,
    now: datetime,
    *,
    count_attempt: bool = True,
    ambiguous: bool = False,
) -> tuple[int, int]:
    """Back to `pending` after `not_before`, or `failed` once `max_attempts` are used: one statement.

    `ids=None` means every row of the batch still leased; `max_attempts=None` never fails anyone (the
    fault was the ESP's, not the recipient's); `ambiguous` counts an attempt whose outcome is unknown.
    Returns (retried, failed).
    """
    d = DELIVERY.c
    attempts = d.attempts + (1 if count_attempt else 0)
    gave_up = attempts >= max_attempts if max_attempts is not None else sa.false()
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
            not_before=bind_time(not_before, d.not_before),
            lease_expires_at=None,
            updated_at=bind_time(now, d.updated_at),
            ambiguous=d.ambiguous + (1 if ambiguous else 0),
        )
        .returning(d.status)
    ).fetchall()
    failed = sum(1 for (status,) in rows if status == D.FAILED)
    return len(rows) - failed, failed


def record_failed(
    conn: sa.Connection,
    bulletin_id: int,
    token: str,
    ids: Sequence[int] | None,
    error: str,
    now: datetime,
    *,
    refused: bool = True,
    ambiguous: bool = False,
) -> int:
    """A final error: `failed` with the reason. `refused`: the ESP refused the address itself (never
    queued again, not even by `--retry-failed`); `ambiguous`: the outcome is unknown and
    `RESEND_ON_UNKNOWN` is off."""
    d = DELIVERY.c
    stmt = (
        sa.update(DELIVERY)
        .where(*_leased(bulletin_id, token, ids))
        .values(
            status=D.FAILED,
            attempts=d.attempts + 1,
            last_error=error,
            lease_expires_at=None,
            updated_at=bind_time(now, d.updated_at),
            refused=refused,
            ambiguous=d.ambiguous + (1 if ambiguous else 0),
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
            status=D.SKIPPED,
            last_error=reason,
            lease_expires_at=None,
            updated_at=bind_time(now, d.updated_at),
        )
    )
    return conn.execute(stmt).rowcount


def release(conn: sa.Connection, bulletin_id: int, token: str, now: datetime, error: str = "") -> int:
    """Give every still-leased row of a batch back as `pending`, not counted as an attempt (nothing was sent)."""
    d = DELIVERY.c
    values: dict[str, Any] = {
        "status": D.PENDING,
        "lease_expires_at": None,
        "updated_at": bind_time(now, d.updated_at),
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
        .values(status=D.SKIPPED, last_error=reason, updated_at=bind_time(now, d.updated_at))
    )
    return conn.execute(stmt).rowcount


def recover_expired(
    conn: sa.Connection, now: datetime, *, resend: bool, tokens: Sequence[str] | None = None
) -> dict[int, int]:
    """Expired leases of bulletins not yet finished: back to `pending` (resend) or `failed` (outcome unknown).

    With `tokens`, those leases instead, expired or not (their worker is known to be dead). The batch
    token stays in `leased_by`, so a worker that was only slow can still record the outcome it learnt
    (`record_accepted`). Every recovered row counts an ambiguous attempt. Returns {bulletin id: rows}.
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
        which = (
            d.lease_expires_at < bind_time(now, d.lease_expires_at)
            if tokens is None
            else d.leased_by.in_(list(tokens))
        )
        n = conn.execute(
            sa.update(DELIVERY)
            .where(d.bulletin_id == bulletin_id, d.status == D.SENDING, which)
            .values(
                lease_expires_at=None,
                updated_at=bind_time(now, d.updated_at),
                ambiguous=d.ambiguous + 1,
                **values,
            )
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


def live_leases(conn: sa.Connection, now: datetime) -> list[tuple[int, str, datetime, int]]:
    """(bulletin id, lease token, expiry, rows) of every unexpired lease: whose batches are in flight."""
    d = DELIVERY.c
    rows = conn.execute(
        sa.select(d.bulletin_id, d.leased_by, sa.func.max(d.lease_expires_at), sa.func.count())
        .where(d.status == D.SENDING, d.lease_expires_at >= bind_time(now, d.lease_expires_at))
        .group_by(d.bulletin_id, d.leased_by)
    )
    return [(r[0], r[1] or "", r[2], int(r[3])) for r in rows]


def requeue_failed(conn: sa.Connection, bulletin_id: int, now: datetime) -> int:
    """Failed deliveries the ESP did not refuse for the address itself go back to `pending` with fresh
    attempts (`send --retry-failed`). Returns how many."""
    d = DELIVERY.c
    stmt = (
        sa.update(DELIVERY)
        .where(d.bulletin_id == bulletin_id, d.status == D.FAILED, d.refused == sa.false())
        .values(
            status=D.PENDING,
            attempts=0,
            not_before=None,
            updated_at=bind_time(now, d.updated_at),
        )
    )
    return conn.execute(stmt).rowcount
