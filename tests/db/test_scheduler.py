"""The scheduler: slots of SEND_SCHEDULE fire once, due bulletins go out, ticks survive failures."""

from __future__ import annotations

import email
import logging
import threading
import time
from datetime import UTC, datetime, timedelta
from email import policy
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from newsletter.core.config import Settings
from newsletter.core.db import make_engine
from newsletter.core.models import Bulletin, ScheduleSlot, Subscriber, utcnow
from newsletter.core.status import BulletinStatus, DeliveryStatus
from newsletter.sending.batch import PassReport
from newsletter.sending.dispatcher import Dispatcher
from newsletter.sending.scheduler import SendScheduler, latest_slot, run_scheduler, send_trigger
from newsletter.sending.summary import send_summary
from tests.db.test_dispatch import EXPECTED, THREE_REGIONS, people  # noqa: F401  (people is a fixture)
from tests.factories import MakeBulletin, MakeSubscribers

LONDON = "Europe/London"
# Monday 2026-03-02 is in winter time (UTC+0); Monday 2026-06-01 in summer time (UTC+1).
WINTER_SLOT = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)
SUMMER_SLOT = datetime(2026, 6, 1, 6, 0, tzinfo=UTC)


def status_of(session: Session, bulletin_id: int) -> str:
    bulletin = session.get(Bulletin, bulletin_id, populate_existing=True)
    session.commit()
    assert bulletin is not None
    return bulletin.status


def slots(session: Session) -> list[ScheduleSlot]:
    rows = list(session.exec(select(ScheduleSlot).execution_options(populate_existing=True)))
    session.commit()
    return rows


def wait_until(condition: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_latest_slot_is_the_last_cron_time_within_the_grace_period(settings: Settings) -> None:
    trigger = send_trigger(settings)  # Monday 07:00 in Europe/London
    assert latest_slot(trigger, WINTER_SLOT + timedelta(hours=2), 6 * 3600) == WINTER_SLOT
    assert latest_slot(trigger, SUMMER_SLOT + timedelta(minutes=1), 6 * 3600) == SUMMER_SLOT
    assert latest_slot(trigger, WINTER_SLOT, 60) == WINTER_SLOT
    assert latest_slot(trigger, WINTER_SLOT - timedelta(seconds=1), 6 * 3600) is None
    assert latest_slot(trigger, WINTER_SLOT + timedelta(hours=7), 6 * 3600) is None, "too late to catch up"


def test_a_bulletin_scheduled_in_the_past_is_sent_by_the_running_scheduler(
    settings: Settings,
    engine: Engine,
    session: Session,
    people: dict[str, Subscriber],  # noqa: F811
    make_bulletin: MakeBulletin,
) -> None:
    bulletin = make_bulletin(
        THREE_REGIONS, status=BulletinStatus.READY, send_at=utcnow() - timedelta(hours=1)
    )
    assert bulletin.id is not None
    fast = settings.model_copy(update={"SCHEDULER_TICK_SECONDS": 0.2})
    stop = threading.Event()
    runner = threading.Thread(target=run_scheduler, args=(fast, stop))
    runner.start()
    try:
        assert wait_until(lambda: status_of(session, bulletin.id) == BulletinStatus.SENT)  # type: ignore[arg-type]
    finally:
        stop.set()
        runner.join(30)
    assert not runner.is_alive()

    files = list((Path(settings.OUTBOX_DIR) / f"bulletin-{bulletin.id}").glob("*.eml"))
    received: dict[str, list[str]] = {}
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        address = str(message["To"]).split("<")[-1].rstrip(">")
        regions = [
            code
            for code, marker in (
                ("africa", "Accra"),
                ("south-asia", "investigators"),
                ("global", "recruiting team"),
            )
            if marker in text
        ]
        received.setdefault(address, []).append(",".join(regions))
    assert received == {people[key].email: [variant] for key, variant in EXPECTED.items()}, (
        "each eligible subscriber gets exactly one email with exactly their regions; nobody else gets any"
    )
    summary = send_summary(session, bulletin.id)
    assert summary.status == BulletinStatus.SENT
    assert summary.counts == {DeliveryStatus.ACCEPTED: len(EXPECTED), DeliveryStatus.SKIPPED: 1}  # no section
    assert summary.sent == len(EXPECTED) and summary.finished_at is not None and summary.rate
    expected_variants = {v: list(EXPECTED.values()).count(v) for v in set(EXPECTED.values())}
    assert summary.variants == expected_variants | {"": 1}, "the skipped no-section delivery has no variant"


def test_a_slot_starts_the_oldest_ready_bulletin_without_its_own_send_time(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscribers: MakeSubscribers,
    make_bulletin: MakeBulletin,
) -> None:
    make_subscribers(5)
    timed = make_bulletin(send_at=utcnow() + timedelta(days=3))
    draft = make_bulletin(status=BulletinStatus.DRAFT)
    oldest = make_bulletin()
    newer = make_bulletin()
    scheduler = SendScheduler(settings, engine)
    assert scheduler.fire_slot(WINTER_SLOT + timedelta(minutes=1)) == oldest.id
    assert [s.bulletin_id for s in slots(session)] == [oldest.id]
    for bulletin, expected in (
        (oldest, BulletinStatus.SENDING),
        (newer, BulletinStatus.READY),
        (timed, BulletinStatus.READY),
        (draft, BulletinStatus.DRAFT),
    ):
        assert status_of(session, bulletin.id) == expected  # type: ignore[arg-type]


def test_a_slot_fires_once_across_two_schedulers(
    settings: Settings,
    session: Session,
    make_subscribers: MakeSubscribers,
    make_bulletin: MakeBulletin,
) -> None:
    make_subscribers(5)
    first, second = make_bulletin(), make_bulletin()
    engines = [make_engine(settings.DATABASE_URL) for _ in range(2)]
    schedulers = [
        SendScheduler(settings, e, dispatcher=Dispatcher(settings, e, worker=f"host-{n}:1"))
        for n, e in enumerate(engines)
    ]
    results: list[int | None] = []
    barrier = threading.Barrier(2)

    def fire(scheduler: SendScheduler) -> None:
        barrier.wait()
        results.append(scheduler.fire_slot(WINTER_SLOT + timedelta(seconds=30)))

    threads = [threading.Thread(target=fire, args=(s,)) for s in schedulers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in engines:
        e.dispose()
    assert sorted(results, key=str) == [first.id, None]
    assert len(slots(session)) == 1
    assert status_of(session, first.id) == BulletinStatus.SENDING  # type: ignore[arg-type]
    assert status_of(session, second.id) == BulletinStatus.READY, "the second scheduler did not start another"  # type: ignore[arg-type]


def test_a_missed_slot_is_caught_up_once_on_start_and_never_twice(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscribers: MakeSubscribers,
    make_bulletin: MakeBulletin,
) -> None:
    make_subscribers(5)
    first, second = make_bulletin(), make_bulletin()
    two_hours_late = WINTER_SLOT + timedelta(hours=2)
    assert SendScheduler(settings, engine).catch_up(two_hours_late) == first.id
    # A restart (a new process) an hour later: the slot is already taken, the next bulletin waits.
    assert SendScheduler(settings, engine).catch_up(two_hours_late + timedelta(hours=1)) is None
    assert status_of(session, second.id) == BulletinStatus.READY  # type: ignore[arg-type]
    # A slot beyond the grace period is not caught up at all.
    late = settings.model_copy(update={"MISFIRE_GRACE_SECONDS": 3600})
    next_week = WINTER_SLOT + timedelta(days=7, hours=2)
    assert SendScheduler(late, engine).catch_up(next_week) is None
    assert len(slots(session)) == 1


def test_a_slot_with_nothing_ready_logs_so_and_sends_nothing(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_bulletin: MakeBulletin,
    caplog: pytest.LogCaptureFixture,
) -> None:
    draft = make_bulletin(status=BulletinStatus.DRAFT)
    with caplog.at_level(logging.INFO, logger="newsletter"):
        assert SendScheduler(settings, engine).fire_slot(WINTER_SLOT) is None
    assert "no bulletin is ready; nothing sent" in caplog.text
    assert status_of(session, draft.id) == BulletinStatus.DRAFT  # type: ignore[arg-type]
    with engine.begin() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM delivery")).scalar() == 0
    assert [s.bulletin_id for s in slots(session)] == [None]
    assert not list(Path(settings.OUTBOX_DIR).glob("**/*.eml"))


class _Failing(Dispatcher):
    calls = 0

    def tick(self) -> PassReport:
        type(self).calls += 1
        raise RuntimeError("database went away")


def test_a_failing_tick_is_logged_and_the_next_one_runs(
    settings: Settings,
    engine: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fast = settings.model_copy(update={"SCHEDULER_TICK_SECONDS": 0.1})
    scheduler = SendScheduler(fast, engine, dispatcher=_Failing(fast, engine))
    with caplog.at_level(logging.ERROR, logger="newsletter"):
        scheduler.start()
        try:
            assert wait_until(lambda: _Failing.calls >= 3, timeout=10)
        finally:
            scheduler.shutdown()
    assert "scheduler tick failed" in caplog.text and "database went away" in caplog.text
