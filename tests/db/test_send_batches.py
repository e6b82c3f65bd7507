"""Send batches (`send_batch`): planning cuts them, a claim leases one row, settling ends the lease.

The invariant the rest rests on: every pending delivery of a bulletin belongs to exactly one batch (its
variant, an id range), so two workers can never hold the same delivery. Checked on both databases.
"""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime, timedelta

import pytest
import sqlalchemy as sa
from alembic import command
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from newsletter.audience import timezones
from newsletter.core.config import Settings
from newsletter.core.db import alembic_config, migrate
from newsletter.core.models import BULLETIN, DELIVERY, SEND_BATCH, Subscriber, utcnow
from newsletter.core.status import BatchStatus, BulletinStatus, DeliveryStatus
from newsletter.sending import lifecycle, queries
from newsletter.sending.dispatcher import Dispatcher
from newsletter.sending.queries.planning import BATCH_WINDOW
from tests.db.test_localtime import start_local
from tests.factories import MakeBulletin, MakeSubscriber, MakeSubscribers

D = DeliveryStatus


def batches(engine: Engine, bulletin_id: int) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(SEND_BATCH).where(SEND_BATCH.c.bulletin_id == bulletin_id).order_by(SEND_BATCH.c.id)
        )
        return [dict(r._mapping) for r in rows]


def ledger(engine: Engine, bulletin_id: int) -> list[dict[str, object]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(DELIVERY).where(DELIVERY.c.bulletin_id == bulletin_id).order_by(DELIVERY.c.id)
        )
        return [dict(r._mapping) for r in rows]


def owners(engine: Engine, bulletin_id: int, statuses: set[str]) -> dict[int, list[int]]:
    """Each delivery in `statuses` → the batches (in `statuses` of their own or any) that hold it."""
    held: dict[int, list[int]] = {}
    rows = ledger(engine, bulletin_id)
    for b in batches(engine, bulletin_id):
        for d in rows:
            if d["variant"] == b["variant"] and b["first_id"] <= d["id"] <= b["last_id"]:  # type: ignore[operator]
                held.setdefault(d["id"], []).append(b["id"])  # type: ignore[arg-type]
    return {d["id"]: held.get(d["id"], []) for d in rows if d["status"] in statuses}  # type: ignore[misc]


def test_planning_puts_every_pending_delivery_in_exactly_one_batch_of_its_variant(
    engine: Engine, make_subscribers: MakeSubscribers, planned_bulletin: MakeBulletin
) -> None:
    make_subscribers(2500)
    bulletin = planned_bulletin()
    held = owners(engine, bulletin.id, {D.PENDING})
    assert len(held) == 2500
    assert all(len(b) == 1 for b in held.values())
    cut = batches(engine, bulletin.id)
    assert {b["status"] for b in cut} == {BatchStatus.PENDING}
    sizes = Counter(b for (b,) in held.values())
    assert max(sizes.values()) <= BATCH_WINDOW
    variants = {d["variant"] for d in ledger(engine, bulletin.id)}
    # Planning inserts in variant order: about one batch per variant and window, not one per row.
    assert len(cut) <= len(variants) + 2500 // 1000 + 1


def test_planning_again_adds_only_the_subscribers_the_ledger_lacks_each_in_one_batch(
    engine: Engine, make_subscriber: MakeSubscriber, make_bulletin: MakeBulletin
) -> None:
    """Re-planning (a paused bulletin resumed) leaves out who has a delivery by an anti-join, not by
    ON CONFLICT: whoever joined since gets one, nobody gets two, and the new row has its own batch."""
    from tests.db.test_dispatch import THREE_REGIONS

    first = [make_subscriber(regions=["africa"]) for _ in range(3)]
    bulletin = make_bulletin(THREE_REGIONS)
    assert bulletin.id is not None
    with engine.begin() as conn:
        assert queries.plan(conn, bulletin.id, utcnow()) == 3
    late = make_subscriber(regions=["south-asia"])
    lonely = make_subscriber(regions=["latin-america"])  # no section in this bulletin
    with engine.begin() as conn:
        assert queries.plan(conn, bulletin.id, utcnow()) == 2
        assert queries.plan(conn, bulletin.id, utcnow()) == 0
    rows = ledger(engine, bulletin.id)
    assert sorted(d["subscriber_id"] for d in rows) == sorted(s.id for s in [*first, late, lonely])
    mine = {d["subscriber_id"]: d for d in rows}
    assert (mine[late.id]["variant"], mine[late.id]["status"]) == ("south-asia", D.PENDING)
    assert mine[lonely.id]["status"] == D.SKIPPED
    assert mine[lonely.id]["last_error"] == queries.NO_SECTION_REASON
    held = owners(engine, bulletin.id, {D.PENDING})
    assert len(held) == 4 and all(len(b) == 1 for b in held.values())


def test_recording_an_outcome_writes_no_index_entry_on_postgresql(
    engine: Engine, make_subscribers: MakeSubscribers, planned_bulletin: MakeBulletin
) -> None:
    """PostgreSQL records every outcome as a heap-only update: no index holds a column that recording
    writes, and planning leaves room on each page for the recorded version of its rows (fillfactor).
    With full pages, or with `status` in an index, each outcome would add an entry to every index."""
    if engine.dialect.name != "postgresql":
        pytest.skip("heap-only updates are PostgreSQL's")
    make_subscribers(700)
    bulletin = planned_bulletin()
    now = utcnow()
    recorded = 0
    with engine.begin() as conn:
        for n in range(100):
            token = f"dispatcher-{n:02d}.internal.example.org:123456:{n:012x}"  # as long as a real one
            claimed = queries.claim_batch(conn, bulletin.id, 1000, token, now, now + timedelta(minutes=5))
            if claimed is None:
                break
            accepted = [(r.delivery_id, f"{n:04d}kD9xQzR3TumzXb5sPw") for r in claimed.recipients]
            recorded += queries.record_accepted(conn, bulletin.id, token, accepted, now)
            queries.settle(conn, token, now)
        counted = conn.exec_driver_sql(
            "SELECT pg_stat_get_xact_tuples_updated('delivery'::regclass),"
            " pg_stat_get_xact_tuples_hot_updated('delivery'::regclass)"
        ).one()
    assert recorded == 700
    assert tuple(counted) == (700, 700)


def test_cutting_batches_leaves_the_planner_settings_as_it_found_them(
    engine: Engine, make_subscribers: MakeSubscribers, make_bulletin: MakeBulletin
) -> None:
    """Cutting batches turns PostgreSQL's sorting off for its one statement (`hash_grouping`), and puts
    back whatever the transaction had, on or off, for the statements after it."""
    if engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL planner setting")
    make_subscribers(30)
    for before in ("on", "off"):
        bulletin = make_bulletin()
        assert bulletin.id is not None
        with engine.begin() as conn:
            conn.exec_driver_sql(f"SET LOCAL enable_sort = {before}")
            assert queries.plan(conn, bulletin.id, utcnow()) == 30
            assert conn.exec_driver_sql("SHOW enable_sort").scalar() == before
        assert len(batches(engine, bulletin.id)) >= 1


def test_a_claim_leases_one_batch_row_and_leaves_the_ledger_untouched_until_an_outcome(
    engine: Engine, make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin
) -> None:
    for _ in range(6):
        make_subscriber()  # every region: one variant, one batch
    bulletin = planned_bulletin()
    before = ledger(engine, bulletin.id)
    now = utcnow()
    with engine.begin() as conn:
        claimed = queries.claim_batch(conn, bulletin.id, 100, "w:1:a", now, now + timedelta(minutes=5))
    assert claimed is not None and len(claimed.recipients) == 6
    assert ledger(engine, bulletin.id) == before  # not one delivery written by the claim
    (batch,) = batches(engine, bulletin.id)
    assert batch["status"] == BatchStatus.SENDING and batch["leased_by"] == "w:1:a"
    with engine.connect() as conn:
        assert queries.status_counts(conn, bulletin.id) == {D.SENDING: 6}
        assert [(b, t, n) for b, t, _, n in queries.live_leases(conn, now)] == [(bulletin.id, "w:1:a", 6)]

    ids = [r.delivery_id for r in claimed.recipients]
    with engine.begin() as conn:
        queries.record_accepted(conn, bulletin.id, "w:1:a", [(i, "msg-1") for i in ids], now)
        queries.settle(conn, "w:1:a", now)
    assert {(d["status"], d["message_id"], d["leased_by"]) for d in ledger(engine, bulletin.id)} == {
        (D.ACCEPTED, "msg-1", "w:1:a")
    }
    (batch,) = batches(engine, bulletin.id)
    assert batch["status"] == BatchStatus.DONE and batch["leased_by"] is None


def test_a_claim_smaller_than_the_batch_splits_it_and_the_parts_never_overlap(
    engine: Engine, make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin
) -> None:
    for _ in range(10):
        make_subscriber()
    bulletin = planned_bulletin()
    now = utcnow()
    taken: list[int] = []
    for n in range(4):
        with engine.begin() as conn:
            claimed = queries.claim_batch(conn, bulletin.id, 3, f"w:1:{n}", now, now + timedelta(minutes=5))
        assert claimed is not None
        taken += [r.delivery_id for r in claimed.recipients]
        assert len(claimed.recipients) == (3 if n < 3 else 1)
    with engine.begin() as conn:
        assert queries.claim_batch(conn, bulletin.id, 3, "w:1:x", now, now + timedelta(minutes=5)) is None
    assert sorted(taken) == [d["id"] for d in ledger(engine, bulletin.id)]
    assert all(len(b) == 1 for b in owners(engine, bulletin.id, {D.PENDING}).values())


def test_retries_wait_in_their_batch_until_their_time(
    engine: Engine, make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin
) -> None:
    for _ in range(4):
        make_subscriber()
    bulletin = planned_bulletin()
    now = utcnow()
    later = now + timedelta(minutes=2)
    with engine.begin() as conn:
        claimed = queries.claim_batch(conn, bulletin.id, 100, "w:1:a", now, now + timedelta(minutes=5))
        assert claimed is not None
        ids = [r.delivery_id for r in claimed.recipients]
        queries.record_accepted(conn, bulletin.id, "w:1:a", [(i, "m") for i in ids[:2]], now)
        assert queries.record_retry(conn, bulletin.id, "w:1:a", ids[2:], "421 later", later, 5, now) == (2, 0)
        queries.settle(conn, "w:1:a", now)
        assert queries.next_retry_at(conn, bulletin.id) == later
        assert queries.due_now(conn, now)  # a retry is part of the send under way
        assert queries.claim_batch(conn, bulletin.id, 100, "w:1:b", now, now + timedelta(minutes=5)) is None
        again = queries.claim_batch(conn, bulletin.id, 100, "w:1:c", later, later + timedelta(minutes=5))
    assert again is not None and [r.delivery_id for r in again.recipients] == ids[2:]
    assert again.attempts == 1


def test_a_worker_that_lost_its_lease_cannot_change_what_is_in_flight(
    engine: Engine, make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin
) -> None:
    for _ in range(3):
        make_subscriber()
    bulletin = planned_bulletin()
    now = utcnow()
    with engine.begin() as conn:
        claimed = queries.claim_batch(conn, bulletin.id, 100, "old:1:a", now, now - timedelta(seconds=1))
        assert claimed is not None
        ids = [r.delivery_id for r in claimed.recipients]
        assert queries.recover_expired(conn, now, resend=True) == {bulletin.id: 3}
        again = queries.claim_batch(conn, bulletin.id, 100, "new:2:b", now, now + timedelta(minutes=5))
        assert again is not None and [r.delivery_id for r in again.recipients] == ids
        # The old lease is gone: none of these may touch the rows the new lease holds.
        assert queries.record_failed(conn, bulletin.id, "old:1:a", ids, "550 no", now) == 0
        assert queries.record_retry(conn, bulletin.id, "old:1:a", ids, "421", now, 5, now) == (0, 0)
        assert queries.record_skipped(conn, bulletin.id, "old:1:a", ids, "why", now) == 0
        assert queries.release(conn, bulletin.id, "old:1:a", now) == 0
    rows = ledger(engine, bulletin.id)
    assert {d["status"] for d in rows} == {D.PENDING}
    assert {d["ambiguous"] for d in rows} == {1}  # the recovered attempt, counted once


def two_of_five_in_flight(
    engine: Engine, make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin
) -> tuple[int, datetime, list[int]]:
    """A planned bulletin of five, two of them claimed under the token "w:1:a": (bulletin id, the
    claim's time, the delivery ids in flight)."""
    for _ in range(5):
        make_subscriber()
    bulletin = planned_bulletin()
    assert bulletin.id is not None
    now = utcnow()
    with engine.begin() as conn:
        claimed = queries.claim_batch(conn, bulletin.id, 2, "w:1:a", now, now + timedelta(minutes=5))
    assert claimed is not None
    return bulletin.id, now, [r.delivery_id for r in claimed.recipients]


def test_cancel_skips_what_waits_but_not_what_is_in_flight(
    engine: Engine, session: Session, make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin
) -> None:
    bulletin_id, now, in_flight = two_of_five_in_flight(engine, make_subscriber, planned_bulletin)
    flying = set(in_flight)
    assert lifecycle.cancel(session, bulletin_id) == 3
    session.commit()
    with engine.begin() as conn:
        queries.record_accepted(conn, bulletin_id, "w:1:a", [(i, "m") for i in flying], now)
        queries.settle(conn, "w:1:a", now)
    rows = {d["id"]: d["status"] for d in ledger(engine, bulletin_id)}
    assert {i for i, s in rows.items() if s == D.ACCEPTED} == flying
    assert Counter(rows.values()) == Counter({D.SKIPPED: 3, D.ACCEPTED: 2})
    assert {b["status"] for b in batches(engine, bulletin_id)} == {BatchStatus.DONE}


@pytest.mark.parametrize("outcome", ["retry", "release", "lease expired"])
def test_what_comes_back_from_flight_after_a_cancel_is_skipped_not_left_pending(
    engine: Engine,
    session: Session,
    make_subscriber: MakeSubscriber,
    planned_bulletin: MakeBulletin,
    outcome: str,
) -> None:
    """The cancel spares what is in flight; what the worker then gives back (a soft bounce to retry, a
    release, a lease that expired with RESEND_ON_UNKNOWN on) must not wait for a claim that will never
    come: it is skipped as cancelled, and no batch of the bulletin is left to claim."""
    bulletin_id, now, flying = two_of_five_in_flight(engine, make_subscriber, planned_bulletin)
    assert lifecycle.cancel(session, bulletin_id) == 3
    session.commit()
    with engine.begin() as conn:
        if outcome == "retry":
            later = now + timedelta(minutes=1)
            assert queries.record_retry(
                conn, bulletin_id, "w:1:a", flying, "421 try later", later, 5, now
            ) == (2, 0)
            queries.settle(conn, "w:1:a", now)
        elif outcome == "release":
            assert queries.release(conn, bulletin_id, "w:1:a", now, "stopped") == 2
        else:
            expired = queries.recover_expired(conn, now + timedelta(minutes=6), resend=True)
            assert expired == {bulletin_id: 2}
    rows = ledger(engine, bulletin_id)
    assert Counter(d["status"] for d in rows) == Counter({D.SKIPPED: 5})
    assert {d["last_error"] for d in rows if d["id"] in flying} == {queries.CANCELLED_REASON}
    assert {b["status"] for b in batches(engine, bulletin_id)} == {BatchStatus.DONE}


def test_a_send_the_esp_took_is_recorded_even_after_a_cancel_and_a_recovered_lease(
    engine: Engine, session: Session, make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin
) -> None:
    """A slow worker is still at the ESP; the bulletin is cancelled and the lease recovered, which skips
    what was in flight. When the ESP's answer comes, those people were mailed: the ledger says so."""
    bulletin_id, now, flying = two_of_five_in_flight(engine, make_subscriber, planned_bulletin)
    lifecycle.cancel(session, bulletin_id)
    session.commit()
    with engine.begin() as conn:
        assert queries.recover_expired(conn, now + timedelta(minutes=6), resend=True) == {bulletin_id: 2}
    with engine.begin() as conn:
        assert queries.record_accepted(conn, bulletin_id, "w:1:a", [(i, "msg-1") for i in flying], now) == 2
        # Another token's late answer takes nothing: those rows were never its own.
        assert queries.record_accepted(conn, bulletin_id, "w:1:b", [(i, "msg-2") for i in flying], now) == 0
    rows = ledger(engine, bulletin_id)
    assert {(d["status"], d["message_id"]) for d in rows if d["id"] in flying} == {(D.ACCEPTED, "msg-1")}
    assert Counter(d["status"] for d in rows) == Counter({D.ACCEPTED: 2, D.SKIPPED: 3})


def test_a_settle_that_races_a_cancel_leaves_nothing_for_the_next_tick_to_miss(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscriber: MakeSubscriber,
    planned_bulletin: MakeBulletin,
) -> None:
    """On PostgreSQL a worker can settle its batch while a cancel's transaction is still open: it reads
    the bulletin as `sending` and puts back as pending what comes back from flight, which the cancel had
    spared. The next tick of any worker skips it, and no batch of the cancelled bulletin is left."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: a settle cannot run inside a cancel")
    bulletin_id, now, flying = two_of_five_in_flight(engine, make_subscriber, planned_bulletin)
    assert lifecycle.cancel(session, bulletin_id) == 3  # not committed yet
    with engine.begin() as conn:
        later = now + timedelta(minutes=1)
        assert queries.record_retry(conn, bulletin_id, "w:1:a", flying, "421", later, 5, now) == (2, 0)
        queries.settle(conn, "w:1:a", now)
    session.commit()
    assert Counter(d["status"] for d in ledger(engine, bulletin_id)) == Counter({D.SKIPPED: 3, D.PENDING: 2})
    Dispatcher(settings, engine).recover()
    assert Counter(d["status"] for d in ledger(engine, bulletin_id)) == Counter({D.SKIPPED: 5})
    assert {b["status"] for b in batches(engine, bulletin_id)} == {BatchStatus.DONE}


def test_retry_failed_cuts_fresh_batches_over_what_it_queues(
    settings: Settings,
    engine: Engine,
    make_subscribers: MakeSubscribers,
    planned_bulletin: MakeBulletin,
    session: Session,
) -> None:
    make_subscribers(40)
    bulletin = planned_bulletin()
    Dispatcher(settings, engine).run_until_done(bulletin.id)
    first = [d["id"] for d in ledger(engine, bulletin.id)][::3]
    with engine.begin() as conn:  # some failed for a reason not the address's own
        conn.execute(
            sa.update(DELIVERY).where(DELIVERY.c.id.in_(first)).values(status=D.FAILED, last_error="503")
        )
    assert lifecycle.retry_failed(session, bulletin.id) == len(first)
    session.commit()
    held = owners(engine, bulletin.id, {D.PENDING})
    assert sorted(held) == sorted(first) and all(len(b) == 1 for b in held.values())
    result = Dispatcher(settings, engine).run_until_done(bulletin.id)
    assert result.status == BulletinStatus.SENT and result.counts == {D.ACCEPTED: 40}


def test_the_upgrade_batches_open_deliveries_and_takes_back_those_in_flight(
    engine: Engine, make_subscribers: MakeSubscribers, planned_bulletin: MakeBulletin
) -> None:
    make_subscribers(30)
    bulletin = planned_bulletin()
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "bulk_references")
    ids = [d["id"] for d in ledger(engine, bulletin.id)]
    with engine.begin() as conn:  # the old way: a worker had leased five rows when it was stopped
        conn.execute(
            sa.update(DELIVERY)
            .where(DELIVERY.c.id.in_(ids[:5]))
            .values(status="sending", leased_by="old:1:a", lease_expires_at=utcnow())
        )
        conn.execute(sa.update(DELIVERY).where(DELIVERY.c.id.in_(ids[5:8])).values(status=D.ACCEPTED))
    migrate(engine)
    rows = {d["id"]: d for d in ledger(engine, bulletin.id)}
    assert [rows[i]["ambiguous"] for i in ids[:5]] == [1] * 5
    held = owners(engine, bulletin.id, {D.PENDING})
    assert sorted(held) == sorted(ids[:5] + ids[8:]) and all(len(b) == 1 for b in held.values())


def test_a_zone_change_never_puts_a_delivery_in_flight_that_was_not_claimed(
    session: Session, settings: Settings, engine: Engine, make_bulletin: MakeBulletin
) -> None:
    bulletin_id, clock, _ = start_local(session, settings, engine, make_bulletin)
    t0 = clock.now
    with engine.begin() as conn:  # the first zone's slot: its recipients are claimed
        claimed = queries.claim_batch(conn, bulletin_id, 100, "w:1:a", t0, t0 + timedelta(minutes=5))
    assert claimed is not None
    sent = [r.delivery_id for r in claimed.recipients]
    late = session.exec(select(Subscriber).where(Subscriber.email == "z9p0@example.org")).one()
    # While that batch is in flight, a subscriber of the last zone moves to the first one.
    assert timezones.change_timezone(session, late, "Pacific/Kiritimati", now=t0 + timedelta(seconds=1))
    session.commit()
    with engine.begin() as conn:
        assert queries.record_accepted(conn, bulletin_id, "w:1:a", [(i, "m1") for i in sent], t0) == len(sent)
        queries.settle(conn, "w:1:a", t0)
    (theirs,) = [d for d in ledger(engine, bulletin_id) if d["subscriber_id"] == late.id]
    assert theirs["status"] == D.PENDING and theirs["message_id"] is None, (
        "never sent, never recorded as sent"
    )


def test_a_zone_change_to_an_earlier_zone_brings_its_batch_forward(
    session: Session, settings: Settings, engine: Engine, make_bulletin: MakeBulletin
) -> None:
    bulletin_id, clock, _ = start_local(session, settings, engine, make_bulletin)
    t0 = clock.now
    with engine.begin() as conn:
        claimed = queries.claim_batch(conn, bulletin_id, 100, "w:1:a", t0, t0 + timedelta(minutes=5))
        assert claimed is not None
        queries.record_accepted(
            conn, bulletin_id, "w:1:a", [(r.delivery_id, "m") for r in claimed.recipients], t0
        )
        queries.settle(conn, "w:1:a", t0)
    t1 = t0 + timedelta(minutes=10)
    moving = session.exec(select(Subscriber).where(Subscriber.email == "z9p1@example.org")).one()
    assert timezones.change_timezone(session, moving, "Pacific/Kiritimati", now=t1)  # its slot has passed
    session.commit()
    with engine.begin() as conn:
        again = queries.claim_batch(conn, bulletin_id, 100, "w:1:b", t1, t1 + timedelta(minutes=5))
    assert again is not None and [r.email for r in again.recipients] == ["z9p1@example.org"]


def test_a_cancel_racing_a_claim_spares_what_the_claim_took(
    engine: Engine, make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin
) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: a cancel cannot run inside a claim")
    for _ in range(4):
        make_subscriber()
    bulletin = planned_bulletin()
    now = utcnow()
    claiming = engine.connect()
    tx = claiming.begin()
    claimed = queries.claim_batch(claiming, bulletin.id, 100, "w:1:a", now, now + timedelta(minutes=5))
    assert claimed is not None and len(claimed.recipients) == 4
    skipped: list[int] = []

    def cancel() -> None:
        with engine.begin() as conn:
            conn.execute(sa.update(BULLETIN).where(BULLETIN.c.id == bulletin.id).values(status="cancelled"))
            skipped.append(queries.skip_open(conn, bulletin.id, queries.CANCELLED_REASON, utcnow()))

    canceller = threading.Thread(target=cancel)
    canceller.start()
    canceller.join(timeout=1.0)  # the cancel waits for the claim's lock on the batch
    tx.commit()
    claiming.close()
    canceller.join()
    with engine.begin() as conn:  # the worker mails the four it claimed, and records them
        mailed = [(r.delivery_id, "msg") for r in claimed.recipients]
        assert queries.record_accepted(conn, bulletin.id, "w:1:a", mailed, now) == 4
        queries.settle(conn, "w:1:a", now)
    assert skipped == [0]
    assert {d["status"] for d in ledger(engine, bulletin.id)} == {D.ACCEPTED}


def test_recording_a_batch_reads_by_key_not_by_walking_the_bulletin(
    engine: Engine, make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin
) -> None:
    """A million-row ledger made recording cost a walk of the bulletin's index per batch on SQLite, which
    keeps no statistics; every record statement must find its rows by key or by the batch's id range."""
    if engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL plans by its statistics")
    for _ in range(5):
        make_subscriber()
    bulletin = planned_bulletin()
    now = utcnow()
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if statement.startswith("UPDATE delivery"):
            statements.append((statement, parameters))

    with engine.begin() as conn:
        claimed = queries.claim_batch(conn, bulletin.id, 100, "w:1:a", now, now + timedelta(minutes=5))
        assert claimed is not None
        ids = [r.delivery_id for r in claimed.recipients]
        sa.event.listen(engine, "before_cursor_execute", capture)
        try:
            # A thousand ids, as in a real batch (the planner weighs the list's length).
            padded = [*ids[:2], *range(10**9, 10**9 + 998)]
            queries.record_accepted(conn, bulletin.id, "w:1:a", [(i, "m") for i in padded], now)
            queries.record_failed(conn, bulletin.id, "w:1:a", [*ids[2:3], *padded[2:]], "550", now)
            queries.record_retry(conn, bulletin.id, "w:1:a", [*ids[3:], *padded[2:]], "421", now, 5, now)
        finally:
            sa.event.remove(engine, "before_cursor_execute", capture)
        plans = [
            " ".join(row[3] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params))  # type: ignore[arg-type]
            for sql, params in statements
        ]
    assert len(plans) >= 3  # accepted (and the resent note), failed, retried
    for plan in plans:
        assert "INTEGER PRIMARY KEY" in plan or "variant=? AND id" in plan, plan
