"""A send never fails silently (SQLite and PostgreSQL): an ESP outage pauses with everyone pending and
resumes by itself, a hanging or ambiguous ESP honours RESEND_ON_UNKNOWN with every outcome in the ledger,
a backend that cannot be built stops the send, a dead worker's lease is taken over at once.

Each test asserts the bulletin's status, that nobody failed for a fault not theirs, and that once the
cause is gone the same bulletin reaches everyone exactly once (at most once with RESEND_ON_UNKNOWN off).
"""

from __future__ import annotations

import logging
import math
import socket
import subprocess
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from newsletter.core.config import Settings
from newsletter.core.errors import ConfigError
from newsletter.core.models import utcnow
from newsletter.core.status import BulletinStatus, DeliveryStatus
from newsletter.esp.sendgrid import SendGridBackend
from newsletter.sending import queries
from newsletter.sending.batch import REQUEST_SECONDS
from newsletter.sending.dispatcher import Dispatcher, SendStopped
from newsletter.sending.outage import OUTAGE_REASON
from newsletter.testing.fake_esp import FakeEsp
from tests.db.test_dispatch import deliveries, sendgrid
from tests.factories import MakeBulletin, MakeSubscriber

D = DeliveryStatus
FAST = {
    "BATCH_SIZE": 5,
    "SEND_CONCURRENCY": 2,
    "ESP_OUTAGE_BATCHES": 2,
    "ESP_PROBE_MAX_SECONDS": 0.2,
    "RETRY_BASE_SECONDS": 0.02,
    "RETRY_MAX_SECONDS": 0.05,
    "SENDGRID_TIMEOUT": 0.3,
}


@pytest.fixture
def twenty(make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin) -> int:
    """A sending bulletin with 20 recipients of one variant (every region); its id."""
    for _ in range(20):
        make_subscriber()
    bulletin = planned_bulletin()
    assert bulletin.id is not None
    return bulletin.id


def tick_until_sent(dispatcher: Dispatcher, session: Session, bulletin_id: int, limit: float = 20.0) -> None:
    """What a running worker does after an outage: tick until the bulletin is sent."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        dispatcher.tick()
        if {d.status for d in deliveries(session, bulletin_id)} <= {D.ACCEPTED} and not dispatcher.sending():
            return
        time.sleep(0.05)
    raise AssertionError(
        f"not sent after {limit}s: {Counter(d.status for d in deliveries(session, bulletin_id))}"
    )


def no_failures(session: Session, bulletin_id: int) -> None:
    ledger = deliveries(session, bulletin_id)
    assert not [d for d in ledger if d.status == D.FAILED], "nobody failed for the ESP's fault"


@pytest.mark.parametrize("fault", ["503", "refused"])
def test_an_outage_pauses_with_everyone_pending_and_the_worker_resumes_it(
    settings: Settings, engine: Engine, session: Session, twenty: int, fake_esp: FakeEsp, fault: str
) -> None:
    s = sendgrid(settings, fake_esp, **FAST)
    if fault == "503":
        fake_esp.fail(503, seconds=1.0)
    else:
        fake_esp.refuse_connections()
    try:
        result = Dispatcher(s, engine).run_until_done(twenty)
        assert result.status == BulletinStatus.PAUSED
        assert (
            result.last_error.startswith(OUTAGE_REASON) and f"newsletter send {twenty}" in result.last_error
        )
        assert result.counts == {D.PENDING: 20}, "everyone still pending"
        assert max(d.attempts for d in deliveries(session, twenty)) < s.MAX_ATTEMPTS, "attempts not burnt"
    finally:
        if fault == "refused":
            fake_esp.accept_connections()
    tick_until_sent(Dispatcher(s, engine), session, twenty)
    sent = Counter(fake_esp.delivery_ids())
    assert sorted(sent) == sorted(d.id for d in deliveries(session, twenty)) and max(sent.values()) == 1


def test_a_person_who_pauses_a_bulletin_paused_for_an_outage_keeps_it_paused_when_the_esp_is_back(
    settings: Settings, engine: Engine, session: Session, twenty: int, fake_esp: FakeEsp
) -> None:
    from newsletter.sending import lifecycle

    s = sendgrid(settings, fake_esp, **FAST)
    fake_esp.fail(503, seconds=1.0)
    assert Dispatcher(s, engine).run_until_done(twenty).status == BulletinStatus.PAUSED
    assert queries.outage_paused(session.connection()) == [twenty]
    session.rollback()
    lifecycle.pause(session, twenty, reason="wrong scripture reference")
    session.commit()
    fake_esp.clear_faults()
    worker = Dispatcher(s, engine)
    for _ in range(5):
        worker.tick()
        time.sleep(0.05)
    ledger = deliveries(session, twenty)
    assert {d.status for d in ledger} == {D.PENDING} and not fake_esp.delivery_ids()
    bulletin = lifecycle.locked(session, twenty)
    assert bulletin.status == BulletinStatus.PAUSED and bulletin.last_error == "wrong scripture reference"
    session.rollback()
    lifecycle.resume(session, twenty)
    session.commit()
    assert Dispatcher(s, engine).run_until_done(twenty).counts == {D.ACCEPTED: 20}


def test_a_400_that_blames_the_request_pauses_instead_of_failing_everyone(
    settings: Settings, engine: Engine, session: Session, twenty: int, fake_esp: FakeEsp
) -> None:
    s = sendgrid(settings, fake_esp, **FAST, FROM_EMAIL="not an address")
    result = Dispatcher(s, engine).run_until_done(twenty)
    assert result.status == BulletinStatus.PAUSED and "refused the request itself" in result.last_error
    assert result.counts == {D.PENDING: 20}
    assert len(fake_esp.requests()) <= 2, "no splitting down to single recipients"
    # A timeout long enough that a loaded machine cannot turn an accepted batch into an unknown outcome,
    # which would be sent again by design (RESEND_ON_UNKNOWN) and read here as a duplicate.
    s = sendgrid(settings, fake_esp, **{**FAST, "SENDGRID_TIMEOUT": 10.0})
    from newsletter.sending import lifecycle

    lifecycle.resume(session, twenty)
    session.commit()
    assert Dispatcher(s, engine).run_until_done(twenty).counts == {D.ACCEPTED: 20}
    assert sorted(Counter(fake_esp.delivery_ids()).values()) == [1] * 20


def test_a_bulletin_too_large_for_the_esp_pauses_instead_of_failing_everyone(
    settings: Settings, engine: Engine, session: Session, twenty: int, fake_esp: FakeEsp
) -> None:
    """Each batch is halved until one recipient's request is refused too: at most log2(batch size)
    splits per thread, then the pause."""
    s = sendgrid(settings, fake_esp, **FAST)
    fake_esp.fail(413)
    result = Dispatcher(s, engine).run_until_done(twenty)
    assert result.status == BulletinStatus.PAUSED and "too large" in result.last_error
    assert result.counts == {D.PENDING: 20}, "nobody failed for the bulletin's size"
    per_batch = 1 + math.floor(math.log2(s.BATCH_SIZE))  # 5, then 2, then 1 recipient
    assert len(fake_esp.requests()) <= s.SEND_CONCURRENCY * per_batch


def test_a_batch_too_large_for_the_esp_goes_out_in_halves_that_fit_each_exactly_once(
    settings: Settings, engine: Engine, session: Session, twenty: int, fake_esp: FakeEsp
) -> None:
    """A 413 splits a batch; only a request for one recipient that is still too large pauses the send.
    Once half a batch fits, the bulletin goes out in halves and nobody gets two copies."""
    s = sendgrid(settings, fake_esp, **{**FAST, "BATCH_SIZE": 20, "SEND_CONCURRENCY": 1})
    fake_esp.configure(max_body_bytes=1000)  # under any request
    result = Dispatcher(s, engine).run_until_done(twenty)
    assert result.status == BulletinStatus.PAUSED and "too large" in result.last_error
    assert result.counts == {D.PENDING: 20}, "nobody failed for the bulletin's size"
    refused = fake_esp.requests()
    assert [r.outcome for r in refused] == ["413"] * 5, "20, 10, 5, 2, then 1 recipient"
    sizes = [r.size for r in refused]
    assert sizes == sorted(sizes, reverse=True)

    from newsletter.sending import lifecycle

    fake_esp.reset()
    fake_esp.configure(max_body_bytes=(sizes[0] + sizes[1]) // 2)  # 20 recipients are too many, 10 fit
    lifecycle.resume(session, twenty)
    session.commit()
    result = Dispatcher(s, engine).run_until_done(twenty)
    assert result.status == BulletinStatus.SENT and result.counts == {D.ACCEPTED: 20}
    assert [(r.outcome, r.personalizations) for r in fake_esp.requests()] == [
        ("413", 0),
        ("202", 10),
        ("202", 10),
    ]
    assert sorted(Counter(fake_esp.delivery_ids()).values()) == [1] * 20


def test_a_split_half_never_waits_out_a_rate_limit_past_its_lease(
    settings: Settings, engine: Engine, session: Session, twenty: int, fake_esp: FakeEsp
) -> None:
    """A batch refused for one address is split; when its first half is answered 429, the second half
    waits for the reset only if the lease outlasts the wait and a request (`REQUEST_SECONDS`). Otherwise
    lease recovery could hand those rows to another worker while this one still means to send them, and
    both would. The half goes back to pending, due at the reset, and is claimed again then, under a
    lease of its own; nobody gets two copies."""
    lease = int(REQUEST_SECONDS) + 1  # any wait for the gate outlasts it
    s = sendgrid(
        settings, fake_esp, **{**FAST, "BATCH_SIZE": 20, "SEND_CONCURRENCY": 1, "LEASE_SECONDS": lease}
    )
    reset = 2.0

    class RateLimitedAfterTheFirstRequest(SendGridBackend):
        """The real backend; once its first request is answered, the fake ESP answers 429 once."""

        def post(self, body: bytes) -> str | None:
            first = not fake_esp.requests()
            try:
                return super().post(body)
            finally:
                if first:
                    fake_esp.configure(rate_limit_reset=reset)
                    fake_esp.fail(429, count=1)

    fake_esp.reject_addresses(r"person1@")  # the first request is refused for one address: a split
    Dispatcher(s, engine, backend_factory=lambda: RateLimitedAfterTheFirstRequest(s)).work([twenty])
    sent = [(r.outcome, r.personalizations) for r in fake_esp.requests()]
    assert sent[:2] == [("400", 20), ("429", 0)]
    # After the reset the batch is claimed whole again (its rows are due again together), never the
    # second half on the first lease.
    assert sent[2] == ("400", 20), sent
    assert sorted(Counter(fake_esp.delivery_ids()).values()) == [1] * 19
    assert Counter(r.status for r in deliveries(session, twenty)) == {D.ACCEPTED: 19, D.FAILED: 1}


@pytest.mark.parametrize("resend", [True, False], ids=["resend", "at-most-once"])
def test_a_hanging_esp_is_found_fast_and_resend_on_unknown_is_honoured(
    settings: Settings, engine: Engine, session: Session, twenty: int, fake_esp: FakeEsp, resend: bool
) -> None:
    s = sendgrid(settings, fake_esp, **FAST, RESEND_ON_UNKNOWN=resend)
    fake_esp.hang(5.0)  # accepts, then never answers: every batch's outcome is unknown
    began = time.monotonic()
    result = Dispatcher(s, engine).run_until_done(twenty)
    assert time.monotonic() - began < 5, "a hanging ESP is given up on after a few timeouts"
    assert result.status == BulletinStatus.PAUSED
    ledger = deliveries(session, twenty)
    unknown = {d.id for d in ledger if d.ambiguous}
    assert unknown and unknown == set(fake_esp.delivery_ids()), "the ledger says which outcomes are unknown"
    if resend:
        no_failures(session, twenty)
    else:
        failed = {d.id for d in ledger if d.status == D.FAILED}
        assert failed == unknown and all(
            d.last_error.startswith(queries.UNKNOWN_PREFIX) for d in ledger if d.id in failed
        )
    fake_esp.clear_faults()
    from newsletter.sending import lifecycle

    lifecycle.resume(session, twenty)
    session.commit()
    Dispatcher(s, engine).run_until_done(twenty)
    ledger = deliveries(session, twenty)
    sent = Counter(fake_esp.delivery_ids())
    assert set(sent) == {d.id for d in ledger}, "everyone reached the ESP"
    if resend:
        assert {d.status for d in ledger} == {D.ACCEPTED}
        assert {i for i, n in sent.items() if n > 1} <= unknown, (
            "duplicates only where the outcome was unknown"
        )
    else:
        assert max(sent.values()) == 1, "nobody got two copies"


@pytest.mark.parametrize("resend", [True, False], ids=["resend", "at-most-once"])
def test_accept_then_drop_is_ambiguous_and_every_message_id_is_kept(
    settings: Settings, engine: Engine, session: Session, twenty: int, fake_esp: FakeEsp, resend: bool
) -> None:
    s = sendgrid(settings, fake_esp, **{**FAST, "SEND_CONCURRENCY": 1}, RESEND_ON_UNKNOWN=resend)
    fake_esp.drop(count=1, after_accept=True)
    result = Dispatcher(s, engine).run_until_done(twenty)
    assert result.status == BulletinStatus.SENT
    ledger = deliveries(session, twenty)
    sent = Counter(fake_esp.delivery_ids())
    dropped = {d.id for d in ledger if d.ambiguous}
    assert len(dropped) == 5, "the dropped batch is marked ambiguous"
    if resend:
        assert {i for i, n in sent.items() if n == 2} == dropped and result.counts == {D.ACCEPTED: 20}
        assert all(d.message_ids == d.message_id for d in ledger), "every id the ESP gave is kept"
    else:
        assert max(sent.values()) == 1 and result.counts == {D.ACCEPTED: 15, D.FAILED: 5}
        assert "RESEND_ON_UNKNOWN=false" in result.errors[0].error


def test_a_late_answer_after_a_resend_keeps_both_message_ids(
    settings: Settings, engine: Engine, session: Session, twenty: int
) -> None:
    now = utcnow()
    with engine.begin() as conn:  # worker A's lease ran out; B sent the batch again and recorded it
        claimed = queries.claim_batch(conn, twenty, 3, "slow:1:a", now, now - timedelta(seconds=1))
        assert claimed is not None
        ids = [r.delivery_id for r in claimed[1]]
        queries.recover_expired(conn, now, resend=True)
        queries.claim_batch(conn, twenty, 3, "other:2:b", now, now + timedelta(seconds=60))
        queries.record_accepted(conn, twenty, "other:2:b", [(i, "second") for i in ids], now)
        queries.record_accepted(conn, twenty, "slow:1:a", [(i, "first") for i in ids], now)  # A, late
    ledger = {d.id: d for d in deliveries(session, twenty)}
    assert {ledger[i].message_ids for i in ids} == {"second first"}, "both copies are in the ledger"
    assert {ledger[i].ambiguous for i in ids} == {1} and ledger[ids[0]].status == D.ACCEPTED


def test_a_backend_that_cannot_be_built_stops_the_send_instead_of_looping(
    settings: Settings, engine: Engine, session: Session, twenty: int
) -> None:
    def broken() -> object:
        raise ConfigError("SENDGRID_API_KEY is not set")

    with pytest.raises(SendStopped, match="SENDGRID_API_KEY"):
        Dispatcher(settings, engine, backend_factory=broken).run_until_done(twenty)  # type: ignore[arg-type]
    assert {d.status for d in deliveries(session, twenty)} == {D.PENDING}


def test_a_lease_of_a_dead_process_is_taken_over_at_once_and_a_live_one_is_announced(
    settings: Settings, engine: Engine, session: Session, twenty: int, caplog: pytest.LogCaptureFixture
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    host = socket.gethostname()[:40]
    now = utcnow()
    with engine.begin() as conn:  # a worker killed with -9: five minutes of lease left
        queries.claim_batch(conn, twenty, 5, f"{host}:{gone.pid}:dead", now, now + timedelta(seconds=300))
        queries.claim_batch(conn, twenty, 5, "elsewhere:7:live", now, now + timedelta(seconds=1))
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="newsletter"):
        result = Dispatcher(settings, engine).run_until_done(twenty)
    assert result.status == BulletinStatus.SENT and result.counts == {D.ACCEPTED: 20}
    assert time.monotonic() - began < 30, "the dead lease was not waited out"
    assert f"taking over the leases of {host}:{gone.pid}:dead" in caplog.text
    assert "waiting for 5 deliveries leased by worker elsewhere:7 until" in caplog.text


@pytest.mark.parametrize("policy", ["global", "skip"])
def test_who_gets_no_section_is_counted_and_gets_global_or_a_recorded_skip(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscriber: MakeSubscriber,
    make_bulletin: MakeBulletin,
    policy: str,
) -> None:
    from newsletter.sending import lifecycle
    from newsletter.sending.summary import no_section_count, variant_counts
    from tests.db.test_dispatch import THREE_REGIONS

    make_subscriber("a@example.org", ["africa"])
    lonely = make_subscriber("l@example.org", ["latin-america"])
    bulletin = make_bulletin(THREE_REGIONS)
    assert bulletin.id is not None
    assert no_section_count(session, bulletin.id) == 1
    counts = variant_counts(session, bulletin.id, no_section=policy)
    assert counts == ({"africa": 1, "global": 1} if policy == "global" else {"africa": 1})
    session.commit()
    lifecycle.send_now(session, bulletin.id, no_section=policy)
    session.commit()
    mine = next(d for d in deliveries(session, bulletin.id) if d.subscriber_id == lonely.id)
    if policy == "global":
        assert (mine.variant, mine.status) == ("global", D.PENDING)
    else:
        assert (mine.status, mine.last_error) == (D.SKIPPED, queries.NO_SECTION_REASON)


def test_staff_are_told_through_smtp_when_the_esp_is_down(
    settings: Settings,
    engine: Engine,
    twenty: int,
    fake_esp: FakeEsp,
    smtp_server: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = smtp_server  # tests.fixtures_esp.SmtpTestServer
    s = sendgrid(
        settings,
        fake_esp,
        **FAST,
        ALERT_EMAILS="staff@example.org, lead@example.org",
        SMTP_HOST=server.host,  # type: ignore[attr-defined]
        SMTP_PORT=server.port,  # type: ignore[attr-defined]
        SMTP_STARTTLS=False,
    )
    fake_esp.fail(503)
    with caplog.at_level(logging.ERROR, logger="newsletter"):
        assert Dispatcher(s, engine).run_until_done(twenty).status == BulletinStatus.PAUSED
    assert f"ALERT bulletin {twenty} paused" in caplog.text
    alerts = server.messages  # type: ignore[attr-defined]
    assert sorted(a.rcpt_tos[0] for a in alerts) == ["lead@example.org", "staff@example.org"]
    message = alerts[0].parsed()
    assert f"bulletin {twenty} paused" in str(message["Subject"]) and "List-Unsubscribe" not in message
    assert OUTAGE_REASON in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]


def test_worker_until_idle_waits_for_a_bulletin_another_worker_is_starting(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscriber: MakeSubscriber,
    make_bulletin: MakeBulletin,
) -> None:
    if settings.is_sqlite:
        pytest.skip("on SQLite the starting worker holds the one write lock: the others simply wait for it")
    import threading

    from newsletter.sending.scheduler import IdleResult, run_until_idle

    for _ in range(5):
        make_subscriber()
    bulletin = make_bulletin(send_at=utcnow())
    starter = engine.connect()
    tx = starter.begin()  # another worker is planning: `sending`, not yet committed
    assert queries.claim_due(starter, utcnow()) == bulletin.id
    queries.plan(starter, bulletin.id, utcnow())  # type: ignore[arg-type]
    result: list[object] = []
    other = threading.Thread(
        target=lambda: result.append(run_until_idle(settings, threading.Event(), engine=engine))
    )
    other.start()
    other.join(timeout=2.0)
    assert other.is_alive(), "it did not quit while the bulletin was being started elsewhere"
    tx.commit()
    starter.close()
    other.join(timeout=60)
    assert result and result[0] == IdleResult(handled=5, paused=[], next_due=None), (
        "it then shared the sending"
    )
