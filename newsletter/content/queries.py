"""Every statement about bulletins, their items and the regions they are grouped by.

Services in `content` (and the groups above it) ask here instead of writing their own `select`, so that
"regions in display order" or "the items of one region" is one query, read in one place. Statements work
in the caller's transaction and never commit. Nothing here differs between SQLite and PostgreSQL; a
statement that must differ asks `newsletter.core.dialect`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from sqlmodel import Session, col, func, select

from newsletter.core.models import Bulletin, Item, Region
from newsletter.core.status import BulletinStatus

# --- regions --------------------------------------------------------------------------------------------


def regions_in_order(session: Session) -> list[Region]:
    """Every region in display order (position, then id so that ties stay stable)."""
    return list(session.exec(select(Region).order_by(col(Region.position), col(Region.id))).all())


def region_ids(session: Session, codes: Iterable[str] | None = None) -> dict[str, int]:
    """Region id by code: of every region, or of those among `codes` (unknown codes are left out)."""
    query = select(Region.code, Region.id)
    if codes is not None:
        query = query.where(col(Region.code).in_(list(codes)))
    return {code: rid for code, rid in session.exec(query).all() if rid is not None}


def regions_by_code(session: Session) -> dict[str, Region]:
    return {r.code: r for r in session.exec(select(Region)).all()}


# --- bulletins ------------------------------------------------------------------------------------------


def bulletins_with_item_counts(session: Session, limit: int) -> list[tuple[Bulletin, int]]:
    """Newest first, each with its item count."""
    counts = select(Item.bulletin_id, func.count().label("n")).group_by(col(Item.bulletin_id)).subquery()
    rows = session.exec(
        select(Bulletin, func.coalesce(counts.c.n, 0))
        .outerjoin(counts, counts.c.bulletin_id == Bulletin.id)
        .order_by(col(Bulletin.id).desc())
        .limit(limit)
    ).all()
    return [(b, int(n)) for b, n in rows]


# --- items ----------------------------------------------------------------------------------------------


def has_items(session: Session, bulletin_id: int) -> bool:
    return session.exec(select(Item.id).where(Item.bulletin_id == bulletin_id).limit(1)).first() is not None


def items_in_order(session: Session, bulletin_id: int) -> list[Item]:
    """A bulletin's items in their stored order (position, then id)."""
    return list(
        session.exec(
            select(Item).where(Item.bulletin_id == bulletin_id).order_by(col(Item.position), col(Item.id))
        ).all()
    )


def items_with_regions(session: Session, bulletin_id: int) -> Sequence[tuple[Item, Region]]:
    """A bulletin's items with their region, in region display order and item order within a region."""
    return session.exec(
        select(Item, Region)
        .join(Region, col(Region.id) == col(Item.region_id))
        .where(Item.bulletin_id == bulletin_id)
        .order_by(col(Region.position), col(Region.id), col(Item.position), col(Item.id))
    ).all()


def items_of_region(session: Session, bulletin_id: int, region_id: int) -> list[Item]:
    """The items one region shows in one bulletin, in order (an item moves among these)."""
    return list(
        session.exec(
            select(Item)
            .where(Item.bulletin_id == bulletin_id, Item.region_id == region_id)
            .order_by(col(Item.position), col(Item.id))
        ).all()
    )


def last_item_position(session: Session, bulletin_id: int) -> int:
    """The highest item position in a bulletin, 0 when it has none."""
    last = session.exec(select(func.max(Item.position)).where(Item.bulletin_id == bulletin_id)).one()
    return int(last or 0)


# --- the admin home page ---------------------------------------------------------------------------
_UPCOMING = [BulletinStatus.READY, BulletinStatus.SENDING, BulletinStatus.PAUSED]


def upcoming(session: Session, limit: int = 5) -> list[Bulletin]:
    """Ready, sending or paused bulletins, the soonest first (unscheduled ones last)."""
    return list(
        session.exec(
            select(Bulletin)
            .where(col(Bulletin.status).in_(_UPCOMING))
            .order_by(col(Bulletin.send_at).is_(None), col(Bulletin.send_at), col(Bulletin.id))
            .limit(limit)
        ).all()
    )


def last_sent(session: Session) -> Bulletin | None:
    return session.exec(
        select(Bulletin)
        .where(Bulletin.status == BulletinStatus.SENT)
        .order_by(col(Bulletin.finished_at).desc(), col(Bulletin.id).desc())
        .limit(1)
    ).first()
