"""Bulletin-level send-path statements: start one (exactly one process wins), fire a schedule slot
once across all processes, list and finish the bulletins being sent."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from newsletter.core import zones
from newsletter.core.dialect import bind_time, skip_locked
from newsletter.core.dialect import insert as dialect_insert
from newsletter.core.models import (
    BULLETIN,
    DELIVERY,
    SCHEDULE_SLOT,
    SCHEDULER_HEARTBEAT,
    SEND_BATCH,
)
from newsletter.core.status import OPEN_DELIVERY, BatchStatus, BulletinStatus, DeliveryStatus

D = DeliveryStatus


def _start_values(now: datetime) -> dict[str, Any]:
    return {
        "status": BulletinStatus.SENDING,
        "started_at": sa.func.coalesce(BULLETIN.c.started_at, bind_time(now, BULLETIN.c.started_at)),
        "updated_at": bind_time(now, BULLETIN.c.updated_at),
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
        [b.status == BulletinStatus.READY, b.send_at.is_not(None), b.send_at <= bind_time(now, b.send_at)],
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
    """`sending` → `sent` when no batch is open and no delivery pending or sending; True for the one
    caller that did it."""
    b, d, sb = BULLETIN.c, DELIVERY.c, SEND_BATCH.c
    still_open = sa.or_(
        sa.exists().where(sb.bulletin_id == bulletin_id, sb.status != BatchStatus.DONE),
        sa.exists().where(d.bulletin_id == bulletin_id, d.status.in_(list(OPEN_DELIVERY))),
    )
    stmt = (
        sa.update(BULLETIN)
        .where(b.id == bulletin_id, b.status == BulletinStatus.SENDING, ~still_open)
        .values(
            status=BulletinStatus.SENT,
            finished_at=bind_time(now, b.finished_at),
            updated_at=bind_time(now, b.updated_at),
        )
        .returning(b.id)
    )
    return conn.execute(stmt).scalar() is not None


def fire_slot(conn: sa.Connection, slot_at: datetime, now: datetime, worker: str) -> bool:
    """Record a schedule slot as fired; True only for the first process to do so (unique key on the slot)."""
    stmt = (
        dialect_insert(conn, SCHEDULE_SLOT)
        .values(
            slot_at=bind_time(slot_at, SCHEDULE_SLOT.c.slot_at),
            fired_at=bind_time(now, SCHEDULE_SLOT.c.fired_at),
            worker=worker[:80],
        )
        .on_conflict_do_nothing(index_elements=["slot_at"])
        .execution_options(preserve_rowcount=True)
    )
    return conn.execute(stmt).rowcount == 1


def set_slot_bulletin(conn: sa.Connection, slot_at: datetime, bulletin_id: int) -> None:
    conn.execute(
        sa.update(SCHEDULE_SLOT)
        .where(SCHEDULE_SLOT.c.slot_at == bind_time(slot_at, SCHEDULE_SLOT.c.slot_at))
        .values(bulletin_id=bulletin_id)
    )


def set_local_slot(conn: sa.Connection, bulletin_id: int, wall: datetime) -> None:
    """Make a bulletin a local-time send of the wall-clock slot `wall`, before it is planned."""
    b = BULLETIN.c
    first, _ = zones.first_and_last(wall)
    conn.execute(
        sa.update(BULLETIN)
        .where(b.id == bulletin_id)
        .values(local_send_at=zones.format_wall(wall), send_at=bind_time(first, b.send_at))
    )


def due_now(conn: sa.Connection, now: datetime) -> bool:
    """Whether any work of a `sending` bulletin is due now or in flight: a batch whose time has come, one
    waiting for a retry (a retry is part of the send under way), or a leased one."""
    b, sb = BULLETIN.c, SEND_BATCH.c
    sending = sa.select(b.id).where(b.status == BulletinStatus.SENDING)
    ready = sa.or_(
        sb.status == BatchStatus.SENDING,
        sa.and_(
            sb.status == BatchStatus.PENDING,
            sa.or_(sb.not_before.is_(None), sb.not_before <= bind_time(now, sb.not_before), sb.retrying),
        ),
    )
    return bool(conn.execute(sa.select(sa.exists().where(sb.bulletin_id.in_(sending), ready))).scalar())


def next_due(conn: sa.Connection) -> datetime | None:
    """When the next delivery falls due: the earliest `not_before` of a pending batch of a `sending`
    bulletin, or the earliest `send_at` of a `ready` one; None when nothing is waiting."""
    b, sb = BULLETIN.c, SEND_BATCH.c
    sending = sa.select(b.id).where(b.status == BulletinStatus.SENDING)
    waiting = conn.execute(
        sa.select(sa.func.min(sb.not_before)).where(
            sb.bulletin_id.in_(sending), sb.status == BatchStatus.PENDING
        )
    ).scalar()
    ready = conn.execute(
        sa.select(sa.func.min(b.send_at)).where(b.status == BulletinStatus.READY, b.send_at.is_not(None))
    ).scalar()
    times = [t for t in (waiting, ready) if t is not None]
    return min(times) if times else None


def due_bulletins(conn: sa.Connection, now: datetime) -> list[int]:
    """`ready` bulletins whose own `send_at` has come, earliest first. A plain read, not SKIP LOCKED: a
    bulletin another process is starting right now still counts (so `worker --until-idle` waits for it)."""
    b = BULLETIN.c
    rows = conn.execute(
        sa.select(b.id)
        .where(
            b.status == BulletinStatus.READY, b.send_at.is_not(None), b.send_at <= bind_time(now, b.send_at)
        )
        .order_by(b.send_at, b.id)
    )
    return [r[0] for r in rows]


def slot_queue(conn: sa.Connection) -> list[int]:
    """`ready` bulletins without a `send_at`, in the order schedule slots send them (one per slot)."""
    b = BULLETIN.c
    rows = conn.execute(
        sa.select(b.id)
        .where(b.status == BulletinStatus.READY, b.send_at.is_(None))
        .order_by(b.created_at, b.id)
    )
    return [r[0] for r in rows]


def slot_fired(conn: sa.Connection, slot_at: datetime) -> bool:
    t = SCHEDULE_SLOT.c
    return (
        conn.execute(
            sa.select(sa.func.count()).where(t.slot_at == bind_time(slot_at, t.slot_at))
        ).scalar_one()
        > 0
    )


def empty_slots(conn: sa.Connection, since: datetime) -> list[datetime]:
    """Slots fired since `since` that sent nothing (no bulletin was ready), newest first."""
    t = SCHEDULE_SLOT.c
    rows = conn.execute(
        sa.select(t.slot_at)
        .where(t.bulletin_id.is_(None), t.slot_at >= bind_time(since, t.slot_at))
        .order_by(t.slot_at.desc())
    )
    return [r[0] for r in rows]


def still_paused(conn: sa.Connection, bulletin_ids: Iterable[int]) -> list[tuple[int, str]]:
    """(id, why) of those of `bulletin_ids` that are paused now, by id."""
    b = BULLETIN.c
    ids = sorted(set(bulletin_ids))
    if not ids:
        return []
    rows = conn.execute(
        sa.select(b.id, b.last_error).where(b.id.in_(ids), b.status == BulletinStatus.PAUSED).order_by(b.id)
    )
    return [(r[0], r[1] or "") for r in rows]


def outage_paused(conn: sa.Connection) -> list[int]:
    """Bulletins paused because their ESP stopped answering (the worker resumes them)."""
    b = BULLETIN.c
    rows = conn.execute(
        sa.select(b.id).where(b.status == BulletinStatus.PAUSED, b.esp_down_since.is_not(None)).order_by(b.id)
    )
    return [r[0] for r in rows]


def beat(conn: sa.Connection, worker: str, now: datetime, started_at: datetime) -> None:
    """Write this scheduler's heartbeat row (one per process, rewritten every tick)."""
    h = SCHEDULER_HEARTBEAT.c
    stmt = dialect_insert(conn, SCHEDULER_HEARTBEAT).values(
        worker=worker[:80],
        started_at=bind_time(started_at, h.started_at),
        ticked_at=bind_time(now, h.ticked_at),
    )
    conn.execute(
        stmt.on_conflict_do_update(index_elements=["worker"], set_={"ticked_at": stmt.excluded.ticked_at})
    )


def last_beat(conn: sa.Connection) -> datetime | None:
    """When any scheduler last ticked, or None if none ever did."""
    return conn.execute(sa.select(sa.func.max(SCHEDULER_HEARTBEAT.c.ticked_at))).scalar()
