"""What the admin home page shows: the next bulletins to go out and the last one sent."""

from __future__ import annotations

from sqlmodel import Session, col, select

from newsletter.core.models import Bulletin
from newsletter.core.status import BulletinStatus

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
