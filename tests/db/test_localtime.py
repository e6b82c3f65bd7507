"""Local-time delivery on both databases: subscribers in ten zones, each receiving the bulletin when the
slot comes in their own zone. Time moves through the dispatcher's injected clock, never a sleep."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from newsletter.audience import suppressions, timezones
from newsletter.audience.subscribers import import_subscribers
from newsletter.content.regions import RegionIndex
from newsletter.core.config import Settings
from newsletter.core.models import Bulletin, Delivery, Subscriber
from newsletter.core.status import BulletinStatus, DeliveryStatus, SuppressionReason
from newsletter.sending import lifecycle, queries
from newsletter.sending.dispatcher import Dispatcher
from newsletter.sending.summary import SendSummary, send_summary
from tests.factories import MakeBulletin

ZONES = (
    "Pacific/Kiritimati",
    "Pacific/Auckland",
    "Australia/Lord_Howe",
    "Asia/Manila",
    "Asia/Kathmandu",
    "Africa/Nairobi",
    "Europe/London",
    "America/Santiago",
    "America/Guatemala",
    "Etc/GMT+12",
)
SLOT = datetime(2026, 11, 30, 7, 0)
"""Monday 07:00, wall clock: Santiago and Lord Howe are on summer time then, London is not."""


def expected_due(zone: str) -> datetime:
    """The due time straight from zoneinfo, as the specification of the planner's answer."""
    return SLOT.replace(tzinfo=ZoneInfo(zone)).astimezone(UTC)


def add_people(session: Session, settings: Settings, per_zone: int = 2) -> None:
    """`per_zone` subscribers in each zone, and two with no zone (the default, TIMEZONE) through an import."""
    lines = ["email,name,regions,status,timezone"]
    for z, zone in enumerate(ZONES):
        lines += [f"z{z}p{i}@example.org,P,africa,active,{zone}" for i in range(per_zone)]
    lines += ["nozone0@example.org,N,africa,active,", "nozone1@example.org,N,africa,active,"]
    report = import_subscribers(session, "\n".join(lines) + "\n", RegionIndex.from_db(session, settings))
    assert report.ok, report.problems
    session.commit()


def summary(session: Session, bulletin_id: int, settings: Settings | None = None) -> SendSummary:
    """The send summary, read in a transaction of its own (an open read would block the writers on SQLite)."""
    result = send_summary(session, bulletin_id, default_zone=settings.TIMEZONE if settings else None)
    session.commit()
    return result


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def start_local(
    session: Session, settings: Settings, engine: Engine, make_bulletin: MakeBulletin
) -> tuple[int, Clock, Dispatcher]:
    """A bulletin scheduled for SLOT local time, started by the dispatcher when the first zone's slot came."""
    add_people(session, settings)
    bulletin = make_bulletin(status=BulletinStatus.DRAFT)
    assert bulletin.id is not None
    lifecycle.schedule_local(session, bulletin.id, SLOT)
    session.commit()
    clock = Clock(expected_due("Pacific/Kiritimati"))
    dispatcher = Dispatcher(settings, engine, clock=clock)
    assert dispatcher.start_due() == [bulletin.id]
    return bulletin.id, clock, dispatcher


def due_by_email(session: Session, bulletin_id: int) -> dict[str, tuple[datetime | None, str]]:
    rows = session.exec(
        select(Subscriber.email, Delivery.not_before, Delivery.status)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)  # type: ignore[arg-type]
        .where(Delivery.bulletin_id == bulletin_id)
        .execution_options(populate_existing=True)
    ).all()
    session.commit()
    return {email: (due, status) for email, due, status in rows}


def test_scheduling_starts_with_the_first_zone_on_earth(
    session: Session, make_bulletin: MakeBulletin
) -> None:
    bulletin = make_bulletin(status=BulletinStatus.DRAFT)
    assert bulletin.id is not None
    lifecycle.schedule_local(session, bulletin.id, SLOT)
    session.commit()
    row = session.get(Bulletin, bulletin.id, populate_existing=True)
    assert row is not None and row.status == BulletinStatus.READY
    assert row.local_send_at == "2026-11-30T07:00"
    assert row.send_at == expected_due("Pacific/Kiritimati") == datetime(2026, 11, 29, 17, 0, tzinfo=UTC)


def test_every_delivery_is_due_at_the_slot_in_its_own_zone(
    session: Session, settings: Settings, engine: Engine, make_bulletin: MakeBulletin
) -> None:
    bulletin_id, _, _ = start_local(session, settings, engine, make_bulletin)
    due = due_by_email(session, bulletin_id)
    assert len(due) == 2 * len(ZONES) + 2
    for z, zone in enumerate(ZONES):
        for i in range(2):
            assert due[f"z{z}p{i}@example.org"] == (expected_due(zone), DeliveryStatus.PENDING), zone
    assert due["nozone0@example.org"][0] == expected_due(settings.TIMEZONE)
    # Spot checks against the offsets themselves: Kathmandu +05:45, Lord Howe +11 (summer), Santiago −03.
    assert expected_due("Asia/Kathmandu") == datetime(2026, 11, 30, 1, 15, tzinfo=UTC)
    assert expected_due("Australia/Lord_Howe") == datetime(2026, 11, 29, 20, 0, tzinfo=UTC)
    assert expected_due("America/Santiago") == datetime(2026, 11, 30, 10, 0, tzinfo=UTC)
    assert expected_due("Etc/GMT+12") == datetime(2026, 11, 30, 19, 0, tzinfo=UTC)


def test_only_due_deliveries_are_sent_and_the_last_zone_finishes_it(
    session: Session, settings: Settings, engine: Engine, make_bulletin: MakeBulletin
) -> None:
    bulletin_id, clock, dispatcher = start_local(session, settings, engine, make_bulletin)
    planned = {email: due for email, (due, _) in due_by_email(session, bulletin_id).items()}
    times = sorted({expected_due(z) for z in (*ZONES, settings.TIMEZONE)})
    for n, at in enumerate(times):
        clock.now = at - timedelta(seconds=1)
        dispatcher.work()
        assert summary(session, bulletin_id).sent == sum(
            2 for z in (*ZONES, settings.TIMEZONE) if expected_due(z) < at
        )
        clock.now = at
        dispatcher.work()
        for email, (_, status) in due_by_email(session, bulletin_id).items():
            assert (status == DeliveryStatus.ACCEPTED) == (planned[email] <= at), (email, n)  # type: ignore[operator]
        with engine.begin() as conn:
            assert queries.due_now(conn, at) is False
            assert queries.next_due(conn) == (times[n + 1] if n + 1 < len(times) else None)
        status = summary(session, bulletin_id).status
        assert status == (BulletinStatus.SENT if n == len(times) - 1 else BulletinStatus.SENDING)
    files = list((settings.OUTBOX_DIR / f"bulletin-{bulletin_id}").glob("*.eml"))
    recipients = Counter(f.read_text("utf-8").split("\nTo: ", 1)[1].split("\n", 1)[0] for f in files)
    assert len(recipients) == 2 * len(ZONES) + 2 and set(recipients.values()) == {1}


def test_status_reports_each_zone(
    session: Session, settings: Settings, engine: Engine, make_bulletin: MakeBulletin
) -> None:
    bulletin_id, clock, dispatcher = start_local(session, settings, engine, make_bulletin)
    clock.now = expected_due("Asia/Manila")
    dispatcher.work()
    zones = summary(session, bulletin_id, settings).as_dict()["zones"]
    assert [z["timezone"] for z in zones][:4] == [
        "Pacific/Kiritimati",
        "Pacific/Auckland",
        "Australia/Lord_Howe",
        "Asia/Manila",
    ]
    assert [z["due_at"] for z in zones] == sorted(z["due_at"] for z in zones)
    by_zone = {z["timezone"]: z for z in zones}
    assert by_zone["Asia/Manila"]["due_at"] == expected_due("Asia/Manila").isoformat()
    assert (by_zone["Asia/Manila"]["sent"], by_zone["Asia/Manila"]["pending"]) == (2, 0)
    assert (by_zone["Etc/GMT+12"]["sent"], by_zone["Etc/GMT+12"]["pending"]) == (0, 2)
    assert by_zone[settings.TIMEZONE]["total"] == 4  # two in London, two without a zone of their own


def test_suppression_and_zone_change_before_the_due_time_are_honoured(
    session: Session, settings: Settings, engine: Engine, make_bulletin: MakeBulletin
) -> None:
    bulletin_id, clock, dispatcher = start_local(session, settings, engine, make_bulletin)
    london = ZONES.index("Europe/London")
    suppressions.add(session, f"z{london}p0@example.org", SuppressionReason.MANUAL)
    mover = session.exec(select(Subscriber).where(Subscriber.email == f"z{london}p1@example.org")).one()
    assert timezones.change_timezone(session, mover, "Asia/Manila", now=clock.now)
    kiritimati = session.exec(select(Subscriber).where(Subscriber.email == "z0p0@example.org")).one()
    session.commit()
    dispatcher.work()  # Kiritimati's slot: its two subscribers are sent
    # Too late to move a delivery already sent: the zone changes, the ledger does not.
    assert timezones.change_timezone(session, kiritimati, "Etc/GMT+12", now=clock.now)
    session.commit()
    due = due_by_email(session, bulletin_id)
    assert due[f"z{london}p1@example.org"][0] == expected_due("Asia/Manila")
    assert due["z0p0@example.org"][1] == DeliveryStatus.ACCEPTED
    clock.now = expected_due("Etc/GMT+12")
    dispatcher.work()
    by_status = {email: status for email, (_, status) in due_by_email(session, bulletin_id).items()}
    assert by_status[f"z{london}p0@example.org"] == DeliveryStatus.SKIPPED
    assert by_status[f"z{london}p1@example.org"] == DeliveryStatus.ACCEPTED
    assert summary(session, bulletin_id).status == BulletinStatus.SENT


def test_pause_resume_and_cancel_act_on_the_remaining_zones(
    session: Session, settings: Settings, engine: Engine, make_bulletin: MakeBulletin
) -> None:
    bulletin_id, clock, dispatcher = start_local(session, settings, engine, make_bulletin)
    dispatcher.work()
    lifecycle.pause(session, bulletin_id)
    session.commit()
    clock.now = expected_due("Asia/Kathmandu")
    dispatcher.work()
    assert summary(session, bulletin_id).sent == 2  # only Kiritimati, before the pause
    lifecycle.resume(session, bulletin_id, default_zone=settings.TIMEZONE)
    session.commit()
    dispatcher.work()  # the zones that came during the pause go out at once
    sent_zones = (
        "Pacific/Kiritimati",
        "Pacific/Auckland",
        "Australia/Lord_Howe",
        "Asia/Manila",
        "Asia/Kathmandu",
    )
    assert summary(session, bulletin_id).sent == 2 * len(sent_zones)
    skipped = lifecycle.cancel(session, bulletin_id)
    session.commit()
    assert skipped == 2 * (len(ZONES) - len(sent_zones)) + 2
    clock.now = expected_due("Etc/GMT+12")
    dispatcher.work()
    assert summary(session, bulletin_id).sent == 2 * len(sent_zones)


@pytest.mark.parametrize("local", [True, False])
def test_a_schedule_slot_in_local_time_fires_at_the_first_zone(
    session: Session, settings: Settings, engine: Engine, make_bulletin: MakeBulletin, local: bool
) -> None:
    from newsletter.sending.scheduler import SendScheduler

    add_people(session, settings, per_zone=1)
    bulletin = make_bulletin(status=BulletinStatus.READY)
    local_settings = settings.model_copy(update={"SEND_LOCAL_TIME": local})
    slot_in_london = SLOT.replace(tzinfo=ZoneInfo(settings.TIMEZONE))
    first = expected_due("Pacific/Kiritimati") if local else slot_in_london.astimezone(UTC)
    scheduler = SendScheduler(local_settings, engine)
    assert scheduler.fire_slot(first - timedelta(minutes=1)) is None
    assert scheduler.fire_slot(first) == bulletin.id
    assert scheduler.fire_slot(first + timedelta(minutes=5)) is None  # once
    row = session.get(Bulletin, bulletin.id, populate_existing=True)
    assert row is not None and row.status == BulletinStatus.SENDING
    assert row.local_send_at == ("2026-11-30T07:00" if local else None)
    due = due_by_email(session, bulletin.id)  # type: ignore[arg-type]
    assert due["z7p0@example.org"][0] == (expected_due("America/Santiago") if local else None)


def test_planning_again_adds_only_newcomers_each_at_their_own_time(
    session: Session, settings: Settings, engine: Engine, make_bulletin: MakeBulletin
) -> None:
    bulletin_id, clock, _ = start_local(session, settings, engine, make_bulletin)
    report = import_subscribers(
        session,
        "email,name,regions,timezone\nlate@example.org,L,africa,Asia/Kathmandu\n",
        RegionIndex.from_db(session, settings),
    )
    assert report.ok
    session.commit()
    with engine.begin() as conn:
        assert queries.plan(conn, bulletin_id, clock.now, default_zone=settings.TIMEZONE) == 1
        assert queries.plan(conn, bulletin_id, clock.now, default_zone=settings.TIMEZONE) == 0
    assert due_by_email(session, bulletin_id)["late@example.org"][0] == expected_due("Asia/Kathmandu")


def test_who_has_no_section_gets_the_global_one_at_their_own_local_time(
    session: Session, settings: Settings, engine: Engine, make_bulletin: MakeBulletin
) -> None:
    """NO_SECTION=global in a local-time send: someone whose regions have no section this week gets the
    global section when the slot comes in their zone, like everyone else, not when the first zone's does."""
    from tests.db.test_dispatch import THREE_REGIONS

    csv = "email,name,regions,status,timezone\n"
    csv += "with@example.org,W,africa,active,Asia/Manila\nwithout@example.org,O,latin-america,active,Asia/Manila\n"
    report = import_subscribers(session, csv, RegionIndex.from_db(session, settings))
    assert report.ok, report.problems
    bulletin = make_bulletin(THREE_REGIONS, status=BulletinStatus.DRAFT)
    assert bulletin.id is not None
    lifecycle.schedule_local(session, bulletin.id, SLOT)
    session.commit()
    with engine.begin() as conn:
        planned = queries.plan(
            conn,
            bulletin.id,
            expected_due("Pacific/Kiritimati"),
            default_zone=settings.TIMEZONE,
            no_section="global",
        )
    assert planned == 2
    rows = session.exec(
        select(Subscriber.email, Delivery.variant, Delivery.status, Delivery.not_before)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)  # type: ignore[arg-type]
        .where(Delivery.bulletin_id == bulletin.id)
    ).all()
    session.commit()
    manila = expected_due("Asia/Manila")
    assert sorted(rows) == [
        ("with@example.org", "africa", DeliveryStatus.PENDING, manila),
        ("without@example.org", "global", DeliveryStatus.PENDING, manila),
    ]
