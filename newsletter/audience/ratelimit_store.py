"""Sliding-window limits kept in the database (`RateEvent`), so they hold across processes and restarts.

    key = window_key("confirm-ip", client_ip)
    if not allowed(session, key, limit=20, window=timedelta(hours=1)):
        ...refuse...
    hit(session, key)                      # count this action (in the caller's transaction)

Counting reads the rows of one key inside the window (indexed on key, time); `hit` also deletes that
key's rows older than the window, so the table holds at most `limit` rows per active key.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from newsletter.core.dialect import lock_key
from newsletter.core.models import RATE_EVENT, utcnow

_TABLE = RATE_EVENT


def window_key(kind: str, value: str) -> str:
    """A key naming what is counted without storing it (an address or an IP is hashed)."""
    return f"{kind}:{hashlib.sha256(value.encode('utf-8')).hexdigest()[:40]}"


def count(session: Session, key: str, window: timedelta, *, now: datetime | None = None) -> int:
    now = now or utcnow()
    return int(
        session.execute(
            sa.select(sa.func.count()).where(_TABLE.c.key == key, _TABLE.c.at > now - window)
        ).scalar_one()
    )


def allowed(
    session: Session, key: str, limit: int, window: timedelta, *, now: datetime | None = None
) -> bool:
    """True while fewer than `limit` actions under `key` were counted within `window` before `now`."""
    return count(session, key, window, now=now) < limit


def take(session: Session, key: str, limit: int, window: timedelta, *, now: datetime | None = None) -> bool:
    """Count one action under `key` if fewer than `limit` were counted within `window`; False if not.

    Atomic across requests and processes: the key is locked for the rest of the transaction
    (`dialect.lock_key`) before counting, so sixty concurrent requests cannot all see nineteen.
    """
    now = now or utcnow()
    lock_key(session, key)
    if not allowed(session, key, limit, window, now=now):
        return False
    hit(session, key, window, now=now)
    return True


def hit(session: Session, key: str, window: timedelta, *, now: datetime | None = None) -> None:
    """Count one action under `key` at `now`, and forget this key's actions older than `window`."""
    now = now or utcnow()
    session.execute(sa.delete(_TABLE).where(_TABLE.c.key == key, _TABLE.c.at <= now - window))
    session.execute(sa.insert(_TABLE).values(key=key, at=now))


def latest(session: Session, key: str) -> datetime | None:
    """When the newest action under `key` was counted, if any is remembered."""
    value: datetime | None = session.execute(
        sa.select(sa.func.max(_TABLE.c.at)).where(_TABLE.c.key == key)
    ).scalar()
    return value


def forget(session: Session, key: str) -> None:
    """Drop every action counted under `key` (a successful login clears its failures)."""
    session.execute(sa.delete(_TABLE).where(_TABLE.c.key == key))
