"""Batches: claim one under a lease, record each outcome under the lease, settle it, recover expired leases.

A batch (`send_batch`, cut by `planning.cut_batches`) is the deliveries of one bulletin and one variant
whose ids lie from `first_id` to `last_id`. Planning cuts by variant and by id window, and windows are
disjoint intervals of ids, so two batches of one bulletin and variant never share a delivery, whatever
order the ids were handed out in. (Planning inserts in variant and due-time order, so most windows hold
one variant and one due time, and most batches a full window: that is for speed only.)

The lease is on the batch row: a claim writes that one row, where it used to move a thousand deliveries
to `sending` and back (two writes of every delivery and of each of its index entries). While a batch is
`sending`, its deliveries that are still `pending`, were due at `leased_at` and carry no outcome
recorded under its token are *in flight*: claimed, and not yet answered for. Each `record_*` statement
locks the batch row held under its token (`lease`) and touches only rows in flight, so a worker whose
lease was recovered changes nothing, except `record_accepted`: an accepted send is a fact whatever
happened to the lease. At the end of its pass the batch is *settled*: `done` when none of its
deliveries is pending, otherwise `pending` again and due when its earliest pending delivery is (a
retry's backoff, a later time zone).
"""

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
    SEND_BATCH,
    SUBSCRIBER,
    SUPPRESSION,
    batch_members,
    of_bulletin,
)
from newsletter.core.status import BatchStatus, BulletinStatus, DeliveryStatus, SubscriberStatus
from newsletter.sending.queries.planning import cut_batches, eligible_subscriber

D = DeliveryStatus
UNKNOWN_PREFIX = "outcome unknown"
"""How `last_error` begins for a delivery failed because its copy may already be out (RESEND_ON_UNKNOWN off)."""
UNKNOWN_OUTCOME = f"{UNKNOWN_PREFIX} (worker stopped mid-send)"
LEASE_EXPIRED = "lease expired (worker stopped mid-send); sent again"
CANCELLED_REASON = "bulletin cancelled"
"""Why a cancelled bulletin's deliveries that never went out are `skipped`."""


class Claimed(NamedTuple):
    """A leased batch: the recipients who may be mailed, and the rows that may no longer be."""

    variant: str
    recipients: list[Recipient]
    """Eligible rows, in delivery id order, as the backends take them."""
    skipped: dict[str, list[int]]
    """Delivery ids of rows no longer eligible (suppressed, paused, erased since planning), by reason."""
    attempts: int
    """The most attempts any eligible row has had."""


class Lease(NamedTuple):
    """A `sending` batch and the token it is leased under: which deliveries are in flight."""

    batch_id: int
    bulletin_id: int
    variant: str
    first_id: int
    last_id: int
    leased_at: datetime
    token: str


def _members(bulletin_id: Any, variant: Any, first_id: Any, last_id: Any) -> list[sa.ColumnElement[bool]]:
    """The deliveries of a batch (values, parameters or columns)."""
    return batch_members(DELIVERY, bulletin_id, variant, first_id, last_id)


def _in_flight(
    conn: sa.Connection, lease: Lease, ids: Sequence[int] | None = None
) -> list[sa.ColumnElement[bool]]:
    """Deliveries in flight under `lease` (among `ids`, when given): see the module's docstring."""
    d = DELIVERY.c
    where = [
        *_members(lease.bulletin_id, lease.variant, lease.first_id, lease.last_id),
        d.status == D.PENDING,
        sa.or_(d.not_before.is_(None), d.not_before <= bind_time(lease.leased_at, d.not_before)),
        d.leased_by.is_distinct_from(lease.token),
    ]
    if ids is not None:
        where.append(one_of(conn, d.id, ids))
    return where


def claim_batch(
    conn: sa.Connection,
    bulletin_id: int,
    limit: int,
    token: str,
    now: datetime,
    lease_until: datetime,
) -> Claimed | None:
    """Lease the next due batch of a `sending` bulletin, up to `limit` of its deliveries.

    Returns its due pending deliveries with each one's subscriber, sorted by whether they may still be
    mailed (suppressions and the subscriber's status are checked again here: they may have changed
    since planning), or None when no batch is due. A batch with more due deliveries than `limit` is
    split, the rest becoming a batch of its own; one with none due (they wait for a later time) is
    settled and the next one taken.
    """
    dialect = dialect_name(conn)
    params = {"bulletin": bulletin_id, "token": token, "now": now, "until": lease_until}
    while True:
        claimed = conn.execute(_claim(dialect), params).first()
        if claimed is None:
            return None
        batch_id, variant, first_id, last_id = claimed
        lease = Lease(batch_id, bulletin_id, variant, first_id, last_id, now, token)
        rows = _due_rows(conn, lease, limit + 1)
        if len(rows) > limit:
            lease = _split(conn, lease, rows[limit][3], now)
            del rows[limit:]
        if rows:
            return _sorted(lease, rows)
        _settle(conn, lease, now)


@functools.cache
def _claim(dialect: str) -> sa.Update:
    """The claiming UPDATE of `claim_batch`, built once per dialect, with the parameters `bulletin`,
    `token`, `now` and `until` (the lease's end)."""
    sb, b = SEND_BATCH.c, BULLETIN.c
    bulletin_id = sa.bindparam("bulletin", type_=sa.Integer)
    now = sa.bindparam("now", type_=sb.not_before.type)
    bulletin_sending = sa.exists().where(b.id == bulletin_id, b.status == BulletinStatus.SENDING)
    next_batch = skip_locked(
        dialect,
        sa.select(sb.id)
        .where(
            sb.bulletin_id == bulletin_id,
            sb.status == BatchStatus.PENDING,
            sa.or_(sb.not_before.is_(None), sb.not_before <= now),
            bulletin_sending,
        )
        .order_by(sb.id)
        .limit(1),
    ).scalar_subquery()
    return (
        sa.update(SEND_BATCH)
        .where(sb.id == next_batch)
        .values(
            status=BatchStatus.SENDING,
            leased_by=sa.bindparam("token"),
            leased_at=now,
            lease_expires_at=sa.bindparam("until", type_=sb.lease_expires_at.type),
            updated_at=now,
        )
        .returning(sb.id, sb.variant, sb.first_id, sb.last_id)
    )


def _split(conn: sa.Connection, lease: Lease, rest_from: int, now: datetime) -> Lease:
    """Keep deliveries before id `rest_from` in the leased batch; the rest become a pending batch."""
    sb = SEND_BATCH.c
    conn.execute(sa.update(SEND_BATCH).where(sb.id == lease.batch_id).values(last_id=rest_from - 1))
    conn.execute(
        sa.insert(SEND_BATCH).values(
            bulletin_id=lease.bulletin_id,
            variant=lease.variant,
            first_id=rest_from,
            last_id=lease.last_id,
            status=BatchStatus.PENDING,
            retrying=False,
            updated_at=bind_time(now, sb.updated_at),
        )
    )
    return lease._replace(last_id=rest_from - 1)


def _skip_reason(email: str | None, suppressed: bool, status: str) -> str:
    """Why a leased row that may no longer be mailed is skipped."""
    if email is None:
        return "subscriber erased"
    if suppressed:
        return "address suppressed"
    if status != SubscriberStatus.ACTIVE:
        return f"subscriber {status}"
    return "subscriber paused"


def _due_rows(conn: sa.Connection, lease: Lease, limit: int) -> list[Any]:
    """The first `limit` deliveries of the batch due at `leased_at`, each with its subscriber, as the
    driver's own tuples: at a thousand rows a batch, SQLAlchemy's row objects and an intermediate object
    per row were a fifth of a worker's CPU (these columns need none of SQLAlchemy's result processing)."""
    params = {
        "bulletin": lease.bulletin_id,
        "variant": lease.variant,
        "first": lease.first_id,
        "last": lease.last_id,
        "now": lease.leased_at,
        "limit": limit,
    }
    result = conn.execute(_due_rows_stmt(), params)
    try:
        return list(result.cursor.fetchall())
    finally:
        result.close()


def _sorted(lease: Lease, rows: list[Any]) -> Claimed:
    """One `Recipient` per mailable row and nothing else per row; the others grouped by why not."""
    bulletin_id = lease.bulletin_id
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
    return Claimed(lease.variant, recipients, skipped, attempts)


@functools.cache
def _due_rows_stmt() -> sa.Select[Any]:
    """The statement of `_due_rows`, built once (building it cost more than running it), with the
    parameters `bulletin`, `variant`, `first`, `last`, `now` and `limit`."""
    d, x = DELIVERY.c, SUPPRESSION.c
    s = SUBSCRIBER.c
    now = sa.bindparam("now", type_=d.not_before.type)
    ok = eligible_subscriber(now)
    suppressed = sa.exists().where(x.email_hash == s.email_hash)
    members = _members(
        sa.bindparam("bulletin", type_=sa.Integer),
        sa.bindparam("variant", type_=d.variant.type),
        sa.bindparam("first", type_=sa.BigInteger),
        sa.bindparam("last", type_=sa.BigInteger),
    )
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
        .where(*members, d.status == D.PENDING, sa.or_(d.not_before.is_(None), d.not_before <= now))
        .order_by(d.id)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )


@functools.cache
def _lease_stmt(dialect: str) -> sa.Select[Any]:
    sb = SEND_BATCH.c
    stmt = sa.select(
        sb.id, sb.bulletin_id, sb.variant, sb.first_id, sb.last_id, sb.leased_at, sb.leased_by
    ).where(sb.leased_by == sa.bindparam("token"), sb.status == BatchStatus.SENDING)
    # Locked until the caller commits: recovery cannot take the lease between this check and the write.
    return stmt.with_for_update() if is_pg(dialect) else stmt


def lease(conn: sa.Connection, token: str) -> Lease | None:
    """The batch leased under `token`, locked until the caller commits; None once the lease is gone."""
    row = conn.execute(_lease_stmt(dialect_name(conn)), {"token": token}).first()
    return Lease(*row) if row is not None else None


def record_accepted(
    conn: sa.Connection,
    bulletin_id: int,
    token: str,
    accepted: Sequence[tuple[int, str | None]],
    now: datetime,
) -> int:
    """Mark (delivery id, message id) pairs `accepted`: one statement when they share one message id
    (SendGrid: one per request).

    Not fenced by the lease: the ESP took them, whatever happened to the lease meanwhile. Rows that
    lease recovery moved on (still `pending`; `failed` as outcome unknown, or `skipped` by a cancel,
    under this token) are taken as well; rows that another worker sent again and recorded first keep
    this message id too.
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
        "leased_by": token,
    }
    ids = [i for i, _ in accepted]
    # Open, or moved on by lease recovery while this worker was still at the ESP: failed as outcome
    # unknown, or skipped because the bulletin was cancelled meanwhile. Either way the ESP took them.
    mine = d.leased_by == token
    open_or_lost = sa.or_(
        d.status == D.PENDING,
        sa.and_(mine, d.status == D.FAILED),
        sa.and_(mine, d.status == D.SKIPPED, d.last_error == CANCELLED_REASON),
    )
    message_ids = {m for _, m in accepted}
    if len(message_ids) > 1:
        # One message id per recipient (outbox, SMTP): executemany.
        stmt = (
            sa.update(DELIVERY)
            .where(d.id == sa.bindparam("did"), of_bulletin(DELIVERY, bulletin_id), open_or_lost)
            .values(**_with_message_id(sa.bindparam("mid", type_=sa.Text)), **values)
        )
        conn.execute(stmt, [{"did": i, "mid": m} for i, m in accepted])
        return len(accepted)
    message_id = message_ids.pop()
    values.update(_with_message_id(sa.literal(message_id, sa.Text)))
    done: int = conn.execute(
        sa.update(DELIVERY).where(*_by_ids(conn, bulletin_id, ids), open_or_lost).values(values)
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
        *_by_ids(conn, bulletin_id, ids),
        d.leased_by != token,
        d.status.not_in([D.PENDING, D.SENDING, D.FAILED, D.SKIPPED]),
    ]
    added = _with_message_id(sa.literal(message_id, sa.Text))["message_ids"]
    conn.execute(sa.update(DELIVERY).where(*resent).values(message_ids=added))


def _by_ids(conn: sa.Connection, bulletin_id: int, ids: Sequence[int]) -> list[sa.ColumnElement[bool]]:
    """Deliveries `ids` of the bulletin, found by primary key."""
    return [one_of(conn, DELIVERY.c.id, ids), of_bulletin(DELIVERY, bulletin_id)]


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

    `ids=None` means every delivery in flight; `max_attempts=None` never fails anyone (the fault was
    the ESP's, not the recipient's); `ambiguous` counts an attempt whose outcome is unknown.
    Returns (retried, failed).
    """
    held = lease(conn, token)
    if held is None:
        return 0, 0
    d = DELIVERY.c
    attempts = d.attempts + (1 if count_attempt else 0)
    gave_up = attempts >= max_attempts if max_attempts is not None else sa.false()
    rows = conn.execute(
        sa.update(DELIVERY)
        .where(*_in_flight(conn, held, ids))
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
            leased_by=token,
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
    held = lease(conn, token)
    if held is None:
        return 0
    d = DELIVERY.c
    stmt = (
        sa.update(DELIVERY)
        .where(*_in_flight(conn, held, ids))
        .values(
            status=D.FAILED,
            attempts=d.attempts + 1,
            last_error=error,
            lease_expires_at=None,
            updated_at=bind_time(now, d.updated_at),
            refused=refused,
            ambiguous=d.ambiguous + (1 if ambiguous else 0),
            leased_by=token,
        )
    )
    return conn.execute(stmt).rowcount


def record_skipped(
    conn: sa.Connection, bulletin_id: int, token: str, ids: Sequence[int], reason: str, now: datetime
) -> int:
    """Not mailed on purpose (unsubscribed, suppressed, paused since planning)."""
    held = lease(conn, token)
    if held is None:
        return 0
    d = DELIVERY.c
    stmt = (
        sa.update(DELIVERY)
        .where(*_in_flight(conn, held, ids))
        .values(
            status=D.SKIPPED,
            last_error=reason,
            lease_expires_at=None,
            updated_at=bind_time(now, d.updated_at),
            leased_by=token,
        )
    )
    return conn.execute(stmt).rowcount


def settle(conn: sa.Connection, token: str, now: datetime) -> None:
    """End the lease of a batch whose pass is over: `done`, or `pending` again for what is left."""
    held = lease(conn, token)
    if held is not None:
        _settle(conn, held, now)


def _settle(conn: sa.Connection, held: Lease, now: datetime) -> None:
    """End the lease: the batch is `done`, or `pending` again, due when its earliest pending delivery is.

    In a cancelled bulletin nothing is pending again: the cancel spared what was in flight, and what
    comes back from flight (a retry, a release, a recovered lease) would otherwise wait for a claim
    that never comes. It is skipped as the cancel's own rows were.
    """
    d, sb, b = DELIVERY.c, SEND_BATCH.c, BULLETIN.c
    members = _members(held.bulletin_id, held.variant, held.first_id, held.last_id)
    status = conn.execute(sa.select(b.status).where(b.id == held.bulletin_id)).scalar()
    if status == BulletinStatus.CANCELLED:
        conn.execute(
            sa.update(DELIVERY)
            .where(*members, d.status == D.PENDING)
            .values(status=D.SKIPPED, last_error=CANCELLED_REASON, updated_at=bind_time(now, d.updated_at))
        )
    left, earliest, timed, most_attempts = conn.execute(
        sa.select(
            sa.func.count(), sa.func.min(d.not_before), sa.func.count(d.not_before), sa.func.max(d.attempts)
        ).where(*members, d.status == D.PENDING)
    ).one()
    conn.execute(
        sa.update(SEND_BATCH)
        .where(sb.id == held.batch_id)
        .values(
            status=BatchStatus.PENDING if left else BatchStatus.DONE,
            not_before=bind_time(earliest if left and timed == left else None, sb.not_before),
            retrying=bool(left and most_attempts),
            leased_by=None,
            leased_at=None,
            lease_expires_at=None,
            updated_at=bind_time(now, sb.updated_at),
        )
    )


def release(conn: sa.Connection, bulletin_id: int, token: str, now: datetime, error: str = "") -> int:
    """Give a batch back as `pending`: nothing in flight was sent, so no attempt is counted. Returns how
    many deliveries were in flight."""
    held = lease(conn, token)
    if held is None:
        return 0
    d = DELIVERY.c
    values: dict[str, Any] = {"updated_at": bind_time(now, d.updated_at)}
    if error:
        values["last_error"] = error
    n: int = conn.execute(sa.update(DELIVERY).where(*_in_flight(conn, held)).values(values)).rowcount
    _settle(conn, held, now)
    return n


def skip_open(conn: sa.Connection, bulletin_id: int, reason: str, now: datetime) -> int:
    """Every `pending` delivery of a bulletin not in flight becomes `skipped` (the bulletin was
    cancelled), and its batches not leased are done.

    The batches go first: that UPDATE waits for a claim still leasing one of them and then leaves it
    alone, and the deliveries' UPDATE, a statement of its own, then sees that lease (on PostgreSQL
    each statement reads what was committed before it began) and spares what is in flight."""
    d, sb = DELIVERY.c, SEND_BATCH.c
    conn.execute(
        sa.update(SEND_BATCH)
        .where(sb.bulletin_id == bulletin_id, sb.status == BatchStatus.PENDING)
        .values(status=BatchStatus.DONE, updated_at=bind_time(now, sb.updated_at))
    )
    in_flight = sa.exists().where(
        sb.bulletin_id == bulletin_id,
        sb.status == BatchStatus.SENDING,
        *_members(sb.bulletin_id, sb.variant, sb.first_id, sb.last_id),
        sa.or_(d.not_before.is_(None), d.not_before <= sb.leased_at),
        d.leased_by.is_distinct_from(sb.leased_by),
    )
    skipped: int = conn.execute(
        sa.update(DELIVERY)
        .where(d.bulletin_id == bulletin_id, d.status == D.PENDING, ~in_flight)
        .values(status=D.SKIPPED, last_error=reason, updated_at=bind_time(now, d.updated_at))
    ).rowcount
    return skipped


def sweep_cancelled(conn: sa.Connection, now: datetime) -> dict[int, int]:
    """Cancelled bulletins that still have a batch to claim: its deliveries not in flight are skipped
    and the batch is done, as the cancel would have done. Returns {bulletin id: rows skipped}.

    A batch settles `pending` again in a cancelled bulletin only in a race: on PostgreSQL a settle that
    read the bulletin while the cancel's transaction was still open saw it `sending`, and the cancel,
    which had spared that batch's deliveries as in flight, committed after. The worker's tick sweeps
    them up; nothing would ever claim them.
    """
    b, sb = BULLETIN.c, SEND_BATCH.c
    stuck = conn.execute(
        sa.select(sb.bulletin_id)
        .where(
            sb.status == BatchStatus.PENDING,
            sa.exists().where(b.id == sb.bulletin_id, b.status == BulletinStatus.CANCELLED),
        )
        .distinct()
        .order_by(sb.bulletin_id)
    ).scalars()
    return {bulletin_id: skip_open(conn, bulletin_id, CANCELLED_REASON, now) for bulletin_id in list(stuck)}


def recover_expired(
    conn: sa.Connection, now: datetime, *, resend: bool, tokens: Sequence[str] | None = None
) -> dict[int, int]:
    """Expired leases of bulletins not yet finished: what was in flight goes back to `pending` (resend)
    or to `failed` (outcome unknown), and each batch is settled.

    With `tokens`, those leases instead, expired or not (their worker is known to be dead). The rows
    keep the batch's token in `leased_by`, so a worker that was only slow can still record the outcome
    it learnt (`record_accepted`). Every recovered row counts an ambiguous attempt. Returns
    {bulletin id: rows}.
    """
    b, d, sb = BULLETIN.c, DELIVERY.c, SEND_BATCH.c
    which = (
        sb.lease_expires_at < bind_time(now, sb.lease_expires_at)
        if tokens is None
        else sb.leased_by.in_(list(tokens))
    )
    open_bulletin = sa.exists().where(
        b.id == sb.bulletin_id,
        b.status.in_([BulletinStatus.SENDING, BulletinStatus.PAUSED, BulletinStatus.CANCELLED]),
    )
    expired = conn.execute(
        skip_locked(
            conn,
            sa.select(sb.id, sb.bulletin_id, sb.variant, sb.first_id, sb.last_id, sb.leased_at, sb.leased_by)
            .where(sb.status == BatchStatus.SENDING, which, open_bulletin)
            .order_by(sb.id),
        )
    ).fetchall()
    values: dict[str, Any] = (
        {"last_error": LEASE_EXPIRED}
        if resend
        else {"status": D.FAILED, "last_error": UNKNOWN_OUTCOME, "attempts": d.attempts + 1}
    )
    out: dict[int, int] = {}
    for row in expired:
        held = Lease(*row)
        n = conn.execute(
            sa.update(DELIVERY)
            .where(*_in_flight(conn, held))
            .values(
                lease_expires_at=None,
                updated_at=bind_time(now, d.updated_at),
                ambiguous=d.ambiguous + 1,
                leased_by=held.token,
                **values,
            )
        ).rowcount
        _settle(conn, held, now)
        if n:
            out[held.bulletin_id] = out.get(held.bulletin_id, 0) + n
    return out


def next_retry_at(conn: sa.Connection, bulletin_id: int) -> datetime | None:
    """When the earliest batch of the bulletin waiting for a later time falls due, or None."""
    sb = SEND_BATCH.c
    return conn.execute(
        sa.select(sa.func.min(sb.not_before)).where(
            sb.bulletin_id == bulletin_id, sb.status == BatchStatus.PENDING
        )
    ).scalar()


def earliest_lease_expiry(conn: sa.Connection, bulletin_id: int) -> datetime | None:
    sb = SEND_BATCH.c
    return conn.execute(
        sa.select(sa.func.min(sb.lease_expires_at)).where(
            sb.bulletin_id == bulletin_id, sb.status == BatchStatus.SENDING
        )
    ).scalar()


def live_leases(
    conn: sa.Connection, now: datetime | None, bulletin_id: int | None = None
) -> list[tuple[int, str, datetime, int]]:
    """(bulletin id, lease token, expiry, deliveries in flight) of every lease unexpired at `now` (every
    lease not yet recovered, when None), of one bulletin or all: whose batches are in flight."""
    sb = SEND_BATCH.c
    where = [sb.status == BatchStatus.SENDING]
    if now is not None:
        where.append(sb.lease_expires_at >= bind_time(now, sb.lease_expires_at))
    if bulletin_id is not None:
        where.append(sb.bulletin_id == bulletin_id)
    fields = (sb.id, sb.bulletin_id, sb.variant, sb.first_id, sb.last_id, sb.leased_at, sb.leased_by)
    rows = conn.execute(sa.select(*fields, sb.lease_expires_at).where(*where).order_by(sb.id)).fetchall()
    out = []
    for row in rows:
        held = Lease(*row[:-1])
        n = conn.execute(sa.select(sa.func.count()).where(*_in_flight(conn, held))).scalar_one()
        out.append((held.bulletin_id, held.token, row[-1], int(n)))
    return out


def retriable_failures(bulletin_id: int) -> list[sa.ColumnElement[bool]]:
    """The failed deliveries `send --retry-failed` queues again: all but those the ESP refused for the
    address itself (sending those again would only be refused again)."""
    d = DELIVERY.c
    return [d.bulletin_id == bulletin_id, d.status == D.FAILED, d.refused == sa.false()]


def count_retriable(conn: sa.Connection, bulletin_id: int) -> int:
    """How many failed deliveries `send --retry-failed` would queue again."""
    stmt = sa.select(sa.func.count()).select_from(DELIVERY).where(*retriable_failures(bulletin_id))
    return int(conn.execute(stmt).scalar_one())


def requeue_failed(conn: sa.Connection, bulletin_id: int, now: datetime) -> int:
    """Failed deliveries the ESP did not refuse for the address itself go back to `pending` with fresh
    attempts (`send --retry-failed`), in batches cut anew. Returns how many."""
    d, sb = DELIVERY.c, SEND_BATCH.c
    stmt = (
        sa.update(DELIVERY)
        .where(*retriable_failures(bulletin_id))
        .values(
            status=D.PENDING,
            attempts=0,
            not_before=None,
            updated_at=bind_time(now, d.updated_at),
        )
    )
    queued: int = conn.execute(stmt).rowcount
    if queued:
        # A sent bulletin has no batch in flight: the old ones go, and the pending rows are cut afresh,
        # so that no two batches can ever share a delivery.
        conn.execute(sa.delete(SEND_BATCH).where(sb.bulletin_id == bulletin_id))
        cut_batches(conn, bulletin_id, 0, now)
    return queued
