"""Factories as fixtures: subscribers and bulletins created through the real code paths."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path

import pytest
from sqlmodel import Session, select

from newsletter.audience.subscribers import import_subscribers
from newsletter.content.bulletins import parse_bulletin, store_bulletin
from newsletter.content.regions import RegionIndex
from newsletter.core.config import Settings
from newsletter.core.models import Bulletin, Subscriber
from newsletter.core.status import BulletinStatus, SubscriberStatus
from newsletter.sending import lifecycle

REGION_CODES = ("africa", "latin-america", "south-asia", "southeast-asia", "global")
SAMPLE = Path(__file__).parent / "data" / "prayer-bulletin.txt"

MakeSubscriber = Callable[..., Subscriber]
MakeSubscribers = Callable[..., int]
MakeBulletin = Callable[..., Bulletin]


def csv_for(rows: Sequence[tuple[str, str, Sequence[str], str]]) -> str:
    lines = ["email,name,regions,status"]
    for email, name, regions, status in rows:
        lines.append(f'{email},"{name}",{";".join(regions)},{status}')
    return "\n".join(lines) + "\n"


@pytest.fixture
def make_subscriber(session: Session, settings: Settings) -> MakeSubscriber:
    """Create one subscriber through the importer (committed); returns the row."""
    counter = iter(range(1, 10**9))

    def make(
        email: str | None = None,
        regions: Sequence[str] = REGION_CODES,
        status: str = SubscriberStatus.ACTIVE,
        name: str = "",
    ) -> Subscriber:
        n = next(counter)
        email = email or f"person{n}@example.org"
        report = import_subscribers(
            session,
            csv_for([(email, name or f"Person {n}", regions, status)]),
            RegionIndex.from_db(session, settings),
            source="test",
        )
        assert report.ok, report.problems
        session.commit()
        subscriber = session.exec(select(Subscriber).where(Subscriber.email == email.lower())).one()
        session.commit()  # end the read: on SQLite an open transaction holds the write lock
        return subscriber

    return make


@pytest.fixture
def make_subscribers(session: Session, settings: Settings) -> MakeSubscribers:
    """Create `n` active subscribers with random region mixes (seeded); returns how many were stored."""

    def make(n: int, seed: int = 1, domain: str = "example.org") -> int:
        rng = random.Random(seed)
        rows = []
        for i in range(n):
            regions = rng.sample(REGION_CODES, rng.randint(1, len(REGION_CODES)))
            rows.append((f"user{i}@{domain}", f"User {i}", regions, "active"))
        report = import_subscribers(session, csv_for(rows), RegionIndex.from_db(session, settings))
        assert report.ok, report.problems[:3]
        session.commit()
        return report.created

    return make


@pytest.fixture
def make_bulletin(session: Session, settings: Settings) -> MakeBulletin:
    """Store a bulletin (the sample by default) with the given status and send time (committed)."""

    def make(
        text: str | None = None,
        status: str = BulletinStatus.READY,
        send_at: datetime | None = None,
    ) -> Bulletin:
        content = parse_bulletin(text if text is not None else SAMPLE.read_text("utf-8"), settings)
        bulletin = store_bulletin(session, content, status=BulletinStatus(status), send_at=send_at)
        session.commit()
        return bulletin

    return make


@pytest.fixture
def planned_bulletin(session: Session, make_bulletin: MakeBulletin) -> MakeBulletin:
    """A bulletin (the sample by default) already started: `sending`, its deliveries planned (committed)."""

    def make(text: str | None = None) -> Bulletin:
        bulletin = make_bulletin(text)
        assert bulletin.id is not None
        lifecycle.send_now(session, bulletin.id)
        session.commit()
        return bulletin

    return make
