"""The send path in one process: planning, batches, outcomes, lifecycle, leases (SQLite and PostgreSQL)."""

from __future__ import annotations

import email
import itertools
import threading
from collections import Counter
from datetime import timedelta
from email import policy
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from newsletter.audience import suppressions
from newsletter.core.config import Settings, get_settings
from newsletter.core.errors import InvalidTransition
from newsletter.core.models import DELIVERY, Bulletin, Delivery, Subscriber, utcnow
from newsletter.core.status import BulletinStatus, DeliveryStatus, SubscriberStatus, SuppressionReason
from newsletter.sending import lifecycle, queries
from newsletter.sending.dispatcher import Dispatcher
from newsletter.sending.summary import send_summary, variant_counts
from newsletter.testing.fake_esp import FakeEsp
from tests.factories import MakeBulletin, MakeSubscriber, MakeSubscribers
from tests.fixtures_esp import FAKE_API_KEY

THREE_REGIONS = """Week 12

"Seek justice, defend the oppressed."

- Isaiah 1:17

Africa

Pray for the conference in Accra.

South Asia

Pray for the investigators.

IJM HQ & Global Partners

Pray for the recruiting team.
"""
"""A bulletin with sections for africa, south-asia and global only."""


def deliveries(session: Session, bulletin_id: int) -> list[Delivery]:
    """The ledger, read in a transaction of its own (on SQLite an open read would block the writers)."""
    query = select(Delivery).where(Delivery.bulletin_id == bulletin_id).order_by(Delivery.id)
    rows = list(session.exec(query.execution_options(populate_existing=True)))
    session.commit()
    return rows


def sendgrid(settings: Settings, fake: FakeEsp, **overrides: object) -> Settings:
    return settings.model_copy(
        update={
            "ESP_BACKEND": "sendgrid",
            "SENDGRID_API_KEY": FAKE_API_KEY,
            "SENDGRID_HOST": fake.url,
            "SENDGRID_TIMEOUT": 2.0,
            "RETRY_BASE_SECONDS": 0.01,
            "RETRY_MAX_SECONDS": 0.05,
            **overrides,
        }
    )


@pytest.fixture
def people(make_subscriber: MakeSubscriber, session: Session) -> dict[str, Subscriber]:
    """Subscribers covering every planning rule; keys say what each one is."""
    made = {
        "africa": make_subscriber("a@example.org", ["africa"]),
        "africa+global": make_subscriber("ag@example.org", ["global", "africa"]),
        "all": make_subscriber(
            "all@example.org", ["africa", "latin-america", "south-asia", "southeast-asia", "global"]
        ),
        "south-asia+latam": make_subscriber("sl@example.org", ["south-asia", "latin-america"]),
        "latam only": make_subscriber("l@example.org", ["latin-america"]),
        "pending": make_subscriber("p@example.org", ["africa"], status=SubscriberStatus.PENDING),
        "unsubscribed": make_subscriber("u@example.org", ["africa"], status=SubscriberStatus.UNSUBSCRIBED),
        "suppressed": make_subscriber("s@example.org", ["africa"]),
        "paused": make_subscriber("z@example.org", ["africa"]),
        "pause over": make_subscriber("zz@example.org", ["south-asia"]),
    }
    suppressions.add(session, "s@example.org", SuppressionReason.BOUNCE)
    made["paused"].paused_until = utcnow() + timedelta(days=30)
    made["pause over"].paused_until = utcnow() - timedelta(days=1)
    session.add(made["paused"])
    session.add(made["pause over"])
    session.commit()
    return made


EXPECTED = {
    "africa": "africa",
    "africa+global": "africa,global",
    "all": "africa,south-asia,global",
    "south-asia+latam": "south-asia",
    "pause over": "south-asia",
}


def test_planning_creates_one_pending_delivery_per_eligible_subscriber_with_its_variant(
    engine: Engine, session: Session, people: dict[str, Subscriber], make_bulletin: MakeBulletin
) -> None:
    bulletin = make_bulletin(THREE_REGIONS)
    assert bulletin.id is not None
    with engine.begin() as conn:
        assert queries.plan(conn, bulletin.id, utcnow()) == len(EXPECTED) + 1
    got = {d.subscriber_id: (d.variant, d.status) for d in deliveries(session, bulletin.id)}
    # Who has no section this week gets nothing, and the ledger says why (NO_SECTION=skip).
    no_section = {people["latam only"].id: ("", DeliveryStatus.SKIPPED)}
    assert got == {people[k].id: (v, DeliveryStatus.PENDING) for k, v in EXPECTED.items()} | no_section

    with engine.begin() as conn:
        assert queries.plan(conn, bulletin.id, utcnow()) == 0, "planning again inserts nothing twice"
    assert len(deliveries(session, bulletin.id)) == len(EXPECTED) + 1


def test_variant_counts_follow_the_planning_rule(
    session: Session, people: dict[str, Subscriber], make_bulletin: MakeBulletin
) -> None:
    bulletin = make_bulletin(THREE_REGIONS)
    assert bulletin.id is not None
    assert variant_counts(session, bulletin.id) == dict(Counter(EXPECTED.values()))


def test_send_now_through_the_outbox_writes_one_message_per_recipient_with_their_sections(
    settings: Settings,
    engine: Engine,
    session: Session,
    people: dict[str, Subscriber],
    planned_bulletin: MakeBulletin,
) -> None:
    bulletin = planned_bulletin(THREE_REGIONS)
    result = Dispatcher(settings, engine).run_until_done(bulletin.id)

    assert result.status == BulletinStatus.SENT
    assert result.counts == {DeliveryStatus.ACCEPTED: len(EXPECTED), DeliveryStatus.SKIPPED: 1}  # no section
    assert result.finished_at is not None and result.rate is not None
    files = sorted((Path(settings.OUTBOX_DIR) / f"bulletin-{bulletin.id}").glob("*.eml"))
    by_address = {}
    for path in files:
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        by_address[str(message["To"]).split("<")[-1].rstrip(">")] = message
    assert set(by_address) == {people[k].email for k in EXPECTED}
    for key, variant in EXPECTED.items():
        text = by_address[people[key].email].get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert ("Pray for the conference in Accra" in text) == ("africa" in variant)
        assert ("Pray for the investigators" in text) == ("south-asia" in variant)
        assert ("Pray for the recruiting team" in text) == ("global" in variant)
    sent = [d for d in deliveries(session, bulletin.id) if d.status == DeliveryStatus.ACCEPTED]
    assert all(d.message_id and d.sent_at and d.attempts == 1 for d in sent)


def test_sendgrid_batches_carry_every_recipient_once_with_delivery_ids(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscribers: MakeSubscribers,
    planned_bulletin: MakeBulletin,
    fake_esp: FakeEsp,
) -> None:
    make_subscribers(250)
    bulletin = planned_bulletin()
    s = sendgrid(settings, fake_esp, BATCH_SIZE=40, SEND_CONCURRENCY=3)
    result = Dispatcher(s, engine).run_until_done(bulletin.id)

    ledger = deliveries(session, bulletin.id)
    assert result.status == BulletinStatus.SENT and result.sent == 250 == len(ledger)
    assert sorted(fake_esp.delivery_ids()) == sorted(d.id for d in ledger)
    assert all(len(r.personalizations and [r]) for r in fake_esp.requests())
    assert max(r.personalizations for r in fake_esp.requests()) <= 40
    variant_of = {d.id: d.variant for d in ledger}
    for rec in fake_esp.accepted():
        assert rec.bulletin_id == str(bulletin.id)
        assert rec.subject == bulletin.subject
        assert rec.delivery_id is not None and int(rec.delivery_id) in variant_of
    message_ids = {d.message_id for d in ledger}
    assert message_ids == {r.message_id for r in fake_esp.requests() if r.outcome == "202"}


def test_a_suppression_or_unsubscribe_after_planning_is_honoured_at_claim(
    settings: Settings,
    engine: Engine,
    session: Session,
    people: dict[str, Subscriber],
    planned_bulletin: MakeBulletin,
    fake_esp: FakeEsp,
) -> None:
    bulletin = planned_bulletin(THREE_REGIONS)
    suppressions.add(session, people["africa"].email, SuppressionReason.COMPLAINT)
    suppressions.unsubscribe(session, session.get(Subscriber, people["all"].id))  # type: ignore[arg-type]
    session.commit()

    result = Dispatcher(sendgrid(settings, fake_esp), engine).run_until_done(bulletin.id)

    sent_to = {r.email for r in fake_esp.accepted()}
    assert people["africa"].email not in sent_to and people["all"].email not in sent_to
    assert len(sent_to) == len(EXPECTED) - 2
    assert result.counts == {DeliveryStatus.ACCEPTED: len(EXPECTED) - 2, DeliveryStatus.SKIPPED: 2 + 1}
    reasons = {
        d.subscriber_id: d.last_error for d in deliveries(session, bulletin.id) if d.status == "skipped"
    }
    assert reasons == {
        people["africa"].id: "address suppressed",
        people["all"].id: "address suppressed",
        people["latam only"].id: queries.NO_SECTION_REASON,
    }


def test_a_refused_batch_is_split_until_only_the_bad_recipients_fail(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscribers: MakeSubscribers,
    planned_bulletin: MakeBulletin,
    fake_esp: FakeEsp,
) -> None:
    make_subscribers(64)
    fake_esp.reject_addresses(r"^user(7|40)@")
    bulletin = planned_bulletin()
    result = Dispatcher(
        sendgrid(settings, fake_esp, BATCH_SIZE=64, SEND_CONCURRENCY=1), engine
    ).run_until_done(bulletin.id)
    assert result.status == BulletinStatus.SENT
    assert result.counts == {DeliveryStatus.ACCEPTED: 62, DeliveryStatus.FAILED: 2}
    failed = [d for d in deliveries(session, bulletin.id) if d.status == DeliveryStatus.FAILED]
    emails = {session.get(Subscriber, d.subscriber_id).email for d in failed}  # type: ignore[union-attr]
    assert emails == {"user7@example.org", "user40@example.org"}
    assert all("400" in d.last_error for d in failed)
    assert len(fake_esp.accepted()) == 62
    # Bisecting to find 2 among 64: a few refused requests per bad address, not one request per recipient.
    refused = [r for r in fake_esp.requests() if r.outcome == "400"]
    assert len(refused) <= 2 * 2 * 6 and len(fake_esp.requests()) < 32


def test_retryable_errors_are_retried_and_pause_the_bulletin_after_max_attempts(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscriber: MakeSubscriber,
    planned_bulletin: MakeBulletin,
    fake_esp: FakeEsp,
) -> None:
    for _ in range(10):
        make_subscriber()  # every region: one variant, one batch
    bulletin = planned_bulletin()
    fake_esp.fail(503, count=2)
    fake_esp.fail(429, count=1)
    result = Dispatcher(sendgrid(settings, fake_esp, SEND_CONCURRENCY=1), engine).run_until_done(bulletin.id)
    assert result.counts == {DeliveryStatus.ACCEPTED: 10}
    assert {d.attempts for d in deliveries(session, bulletin.id)} == {3}, "two 503s counted, the 429 not"

    second = planned_bulletin()
    fake_esp.fail(500)
    result = Dispatcher(sendgrid(settings, fake_esp, MAX_ATTEMPTS=3), engine).run_until_done(second.id)
    assert result.status == BulletinStatus.PAUSED, "a batch out of attempts on a 500 is an outage"
    assert result.counts == {DeliveryStatus.PENDING: 10}, "nobody failed for the ESP's fault"
    assert all("500" in d.last_error for d in deliveries(session, second.id))


def test_refused_credentials_pause_the_bulletin_with_nothing_lost(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscribers: MakeSubscribers,
    planned_bulletin: MakeBulletin,
    fake_esp: FakeEsp,
) -> None:
    make_subscribers(30)
    bulletin = planned_bulletin()
    fake_esp.configure(api_key="SG.some-other-key")
    result = Dispatcher(sendgrid(settings, fake_esp, BATCH_SIZE=10), engine).run_until_done(bulletin.id)
    assert result.status == BulletinStatus.PAUSED
    assert "refused our credentials" in result.last_error and "resume" in result.last_error
    assert result.counts == {DeliveryStatus.PENDING: 30}

    fake_esp.configure(api_key=FAKE_API_KEY)
    lifecycle.resume(session, bulletin.id)
    session.commit()
    result = Dispatcher(sendgrid(settings, fake_esp, BATCH_SIZE=10), engine).run_until_done(bulletin.id)
    assert result.status == BulletinStatus.SENT and result.counts == {DeliveryStatus.ACCEPTED: 30}
    assert result.last_error == ""


@pytest.mark.parametrize("smtputf8", [False, True], ids=["without-smtputf8", "with-smtputf8"])
def test_internationalised_addresses_over_smtp_never_pause_the_bulletin(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscriber: MakeSubscriber,
    planned_bulletin: MakeBulletin,
    smtputf8: bool,
) -> None:
    """One subscriber at an internationalised domain goes out through a relay with or without SMTPUTF8
    (her domain in ASCII on the envelope); one whose local part is not ASCII needs SMTPUTF8, and without
    it only he fails, for good. Everyone else gets the bulletin, once; it is never paused as an outage."""
    from tests.fixtures_esp import SmtpTestServer

    server = SmtpTestServer(smtputf8=smtputf8).start()
    try:
        for email in ["aaa@example.org", "carol@bücher.de", "josé@example.org"]:
            make_subscriber(email)
        for i in range(6):
            make_subscriber(f"zed{i}@example.org")
        bulletin = planned_bulletin()
        smtp = settings.model_copy(
            update={
                "ESP_BACKEND": "smtp",
                "SMTP_HOST": server.host,
                "SMTP_PORT": server.port,
                "SMTP_STARTTLS": False,
                "SMTP_TIMEOUT": 5.0,
                "RETRY_BASE_SECONDS": 0.01,
                "RETRY_MAX_SECONDS": 0.05,
            }
        )
        result = Dispatcher(smtp, engine).run_until_done(bulletin.id, max_wait=2.0)
    finally:
        server.stop()

    assert result.status == BulletinStatus.SENT and result.last_error == ""
    received = Counter(address for m in server.messages for address in m.rcpt_tos)
    assert received["carol@xn--bcher-kva.de"] == 1 and received["aaa@example.org"] == 1
    assert set(received.values()) == {1}
    if smtputf8:
        assert result.counts == {DeliveryStatus.ACCEPTED: 9} and received["josé@example.org"] == 1
        return
    assert result.counts == {DeliveryStatus.ACCEPTED: 8, DeliveryStatus.FAILED: 1}
    (failed,) = [d for d in deliveries(session, bulletin.id) if d.status == DeliveryStatus.FAILED]
    assert session.get(Subscriber, failed.subscriber_id).email == "josé@example.org"  # type: ignore[union-attr]
    assert "SMTPUTF8" in failed.last_error and failed.attempts == 1
    assert "josé@example.org" not in received


def test_pause_stops_claims_and_cancel_skips_what_is_left(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscribers: MakeSubscribers,
    make_bulletin: MakeBulletin,
) -> None:
    make_subscribers(20)
    bulletin = make_bulletin()
    assert bulletin.id is not None
    lifecycle.send_now(session, bulletin.id)
    lifecycle.pause(session, bulletin.id)
    session.commit()
    assert Dispatcher(settings, engine).work().recipients == 0
    with engine.begin() as conn:
        assert queries.claim_batch(conn, bulletin.id, 10, "t", utcnow(), utcnow()) is None

    assert lifecycle.cancel(session, bulletin.id) == 20
    session.commit()
    summary = send_summary(session, bulletin.id)
    assert summary.status == BulletinStatus.CANCELLED and summary.counts == {DeliveryStatus.SKIPPED: 20}
    with pytest.raises(InvalidTransition):
        lifecycle.resume(session, bulletin.id)


def test_schedule_sets_the_send_time_and_the_tick_starts_it_when_due(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscribers: MakeSubscribers,
    make_bulletin: MakeBulletin,
) -> None:
    make_subscribers(5)
    later = make_bulletin(status=BulletinStatus.DRAFT)
    due = make_bulletin(status=BulletinStatus.DRAFT)
    assert later.id is not None and due.id is not None
    lifecycle.schedule(session, later.id, utcnow() + timedelta(hours=1))
    lifecycle.schedule(session, due.id, utcnow() - timedelta(minutes=1))
    session.commit()
    report = Dispatcher(settings, engine).tick()
    assert report.finished == [due.id]
    session.expire_all()
    assert session.get(Bulletin, due.id).status == BulletinStatus.SENT  # type: ignore[union-attr]
    assert session.get(Bulletin, later.id).status == BulletinStatus.READY  # type: ignore[union-attr]


@pytest.mark.parametrize("resend", [True, False])
def test_an_expired_lease_is_resent_or_failed_as_configured(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscriber: MakeSubscriber,
    planned_bulletin: MakeBulletin,
    resend: bool,
) -> None:
    for _ in range(12):
        make_subscriber()  # every region: one variant
    bulletin = planned_bulletin()
    now = utcnow()
    with engine.begin() as conn:  # a worker that claimed 5 and died: its lease ran out a second ago
        claimed = queries.claim_batch(conn, bulletin.id, 5, "dead:1:abc", now, now - timedelta(seconds=1))
    assert claimed is not None and len(claimed[1]) == 5
    dead = {r.delivery_id for r in claimed[1]}

    s = settings.model_copy(update={"RESEND_ON_UNKNOWN": resend})
    result = Dispatcher(s, engine).run_until_done(bulletin.id)
    ledger = {d.id: d for d in deliveries(session, bulletin.id)}
    assert result.status == BulletinStatus.SENT
    if resend:
        assert result.counts == {DeliveryStatus.ACCEPTED: 12}
    else:
        assert result.counts == {DeliveryStatus.ACCEPTED: 7, DeliveryStatus.FAILED: 5}
        assert {i for i, d in ledger.items() if d.status == DeliveryStatus.FAILED} == dead
        assert all(ledger[i].last_error == queries.UNKNOWN_OUTCOME for i in dead)


def test_a_slow_worker_records_its_outcome_even_after_its_lease_was_recovered(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscriber: MakeSubscriber,
    planned_bulletin: MakeBulletin,
) -> None:
    for _ in range(3):
        make_subscriber()  # every region: one variant
    bulletin = planned_bulletin()
    now = utcnow()
    with engine.begin() as conn:
        claimed = queries.claim_batch(conn, bulletin.id, 3, "slow:1:abc", now, now - timedelta(seconds=1))
        assert claimed is not None
        queries.recover_expired(conn, now, resend=False)
        queries.record_accepted(
            conn, bulletin.id, "slow:1:abc", [(r.delivery_id, "m1") for r in claimed[1]], now
        )
    assert {d.status for d in deliveries(session, bulletin.id)} == {DeliveryStatus.ACCEPTED}


def test_concurrent_claims_take_disjoint_batches(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscribers: MakeSubscribers,
    planned_bulletin: MakeBulletin,
) -> None:
    make_subscribers(300)
    bulletin = planned_bulletin()
    seen: list[int] = []
    lock = threading.Lock()
    batches = itertools.count()

    def claim_all(n: int) -> None:
        while True:
            now = utcnow()
            with engine.begin() as conn:
                token = f"w{n}:{next(batches)}"  # a lease token is unique to its batch
                got = queries.claim_batch(conn, bulletin.id, 7, token, now, now + timedelta(minutes=5))  # type: ignore[arg-type]
            if got is None:
                return
            with lock:
                seen.extend(r.delivery_id for r in got[1])

    threads = [threading.Thread(target=claim_all, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == len(set(seen)) == 300


def test_nothing_ready_means_no_pass_and_no_error(settings: Settings, engine: Engine) -> None:
    report = Dispatcher(settings, engine).tick()
    assert report.recipients == 0 and report.finished == []


def test_summary_reports_rate_and_errors(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscribers: MakeSubscribers,
    planned_bulletin: MakeBulletin,
) -> None:
    make_subscribers(4)
    bulletin = planned_bulletin()
    with engine.begin() as conn:
        conn.execute(sa.update(DELIVERY).where(DELIVERY.c.id == 1).values(last_error="boom"))
    summary = send_summary(session, bulletin.id)
    assert summary.total == 4 and summary.open == 4 and summary.sent == 0
    assert [(e.status, e.error, e.count) for e in summary.errors] == [("pending", "boom", 1)]
    data = summary.as_dict()
    assert data["counts"] == {"pending": 4} and data["status"] == "sending"


def test_settings_fixture_is_not_shared(settings: Settings) -> None:
    assert get_settings().DATABASE_URL == settings.DATABASE_URL
