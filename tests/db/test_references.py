"""References between tables hold on both databases: no delivery or subscription names a missing parent,
erasing a subscriber takes their subscriptions and leaves their deliveries anonymous, deleting a
bulletin takes its deliveries. On PostgreSQL, triggers keep these per statement instead of foreign keys
(`core.dialect.SET_CHECKED_REFERENCES`); the rules must read the same either way."""

from __future__ import annotations

import threading
import time

import psycopg
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from newsletter.audience.preferences import erase
from newsletter.core.dialect import insert_many, is_pg
from newsletter.core.models import DELIVERY, SUBSCRIPTION
from newsletter.core.status import DeliveryStatus
from tests.factories import MakeBulletin, MakeSubscriber

MISSING = 987_654_321


def deliveries_of(engine: Engine, bulletin_id: int) -> list[tuple[int, int | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(DELIVERY.c.id, DELIVERY.c.subscriber_id).where(DELIVERY.c.bulletin_id == bulletin_id)
        )
        return [(r[0], r[1]) for r in rows]


def delivery_row(bulletin_id: int, subscriber_id: int) -> dict[str, object]:
    return {
        "bulletin_id": bulletin_id,
        "subscriber_id": subscriber_id,
        "variant": "africa",
        "status": DeliveryStatus.PENDING,
        "attempts": 0,
        "last_error": "",
        "message_ids": "",
        "ambiguous": 0,
        "refused": False,
    }


def test_a_delivery_for_a_missing_subscriber_or_bulletin_is_refused(
    engine: Engine, make_subscriber: MakeSubscriber, make_bulletin: MakeBulletin
) -> None:
    ruth = make_subscriber()
    bulletin = make_bulletin()
    assert ruth.id is not None and bulletin.id is not None
    for row in (delivery_row(bulletin.id, MISSING), delivery_row(MISSING, ruth.id)):
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(sa.insert(DELIVERY), [row])
    assert deliveries_of(engine, bulletin.id) == []


def test_one_bad_row_refuses_the_whole_bulk_insert(
    engine: Engine, make_subscriber: MakeSubscriber, make_bulletin: MakeBulletin
) -> None:
    """Checked per statement on PostgreSQL: a bulk insert is all or nothing, as with a foreign key."""
    people = [make_subscriber() for _ in range(3)]
    bulletin = make_bulletin()
    assert bulletin.id is not None
    rows = [delivery_row(bulletin.id, p.id) for p in people if p.id is not None]
    rows.append(delivery_row(bulletin.id, MISSING))
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.insert(DELIVERY), rows)
    assert deliveries_of(engine, bulletin.id) == []


def test_a_subscription_to_a_missing_region_or_subscriber_is_refused_even_by_copy(
    engine: Engine, make_subscriber: MakeSubscriber
) -> None:
    """`insert_many` is COPY on PostgreSQL, which the import uses for subscriptions."""
    ruth = make_subscriber(regions=["africa"])
    assert ruth.id is not None
    for row in ({"subscriber_id": ruth.id, "region_id": MISSING}, {"subscriber_id": MISSING, "region_id": 1}):
        # COPY runs on the driver's own connection: its error is the driver's
        with pytest.raises((sa.exc.IntegrityError, psycopg.IntegrityError)), engine.begin() as conn:
            insert_many(conn, SUBSCRIPTION, [row])


def test_moving_a_delivery_to_a_missing_subscriber_is_refused(
    engine: Engine, make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin
) -> None:
    make_subscriber()
    bulletin = planned_bulletin()
    assert bulletin.id is not None
    [(delivery_id, _)] = deliveries_of(engine, bulletin.id)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.update(DELIVERY).where(DELIVERY.c.id == delivery_id).values(subscriber_id=MISSING))


def test_erasing_a_subscriber_takes_their_subscriptions_and_keeps_their_deliveries_anonymous(
    engine: Engine, session: Session, make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin
) -> None:
    ruth, boaz = make_subscriber(), make_subscriber()
    bulletin = planned_bulletin()
    assert bulletin.id is not None and ruth.id is not None
    erase(session, ruth)
    session.commit()
    assert sorted(sid or 0 for _, sid in deliveries_of(engine, bulletin.id)) == [0, boaz.id]
    with engine.connect() as conn:
        left = conn.execute(
            sa.select(sa.func.count()).where(SUBSCRIPTION.c.subscriber_id == ruth.id)
        ).scalar()
    assert left == 0


def test_deleting_a_bulletin_takes_its_deliveries(
    engine: Engine, make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin
) -> None:
    make_subscriber()
    bulletin = planned_bulletin()
    assert bulletin.id is not None and deliveries_of(engine, bulletin.id)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"DELETE FROM bulletin WHERE id = {bulletin.id}")
    assert deliveries_of(engine, bulletin.id) == []


def test_a_subscriber_with_deliveries_keeps_their_id(
    engine: Engine, make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin
) -> None:
    ruth = make_subscriber()
    planned_bulletin()
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE subscriber SET id = {MISSING} WHERE id = {ruth.id}")


def test_erasing_waits_for_a_plan_in_progress_and_then_clears_its_new_rows(
    engine: Engine, make_subscriber: MakeSubscriber, make_bulletin: MakeBulletin
) -> None:
    """PostgreSQL: a delivery inserted by a transaction still open cannot escape an erasure that runs
    meanwhile. The erasure waits for it, then sees the row and clears it."""
    if not is_pg(engine):
        pytest.skip("SQLite has one writer at a time: the erasure cannot run during a plan")
    ruth = make_subscriber()
    bulletin = make_bulletin()
    assert ruth.id is not None and bulletin.id is not None
    erased = threading.Event()

    def erase_ruth() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DELETE FROM subscriber WHERE id = {ruth.id}")
        erased.set()

    with engine.begin() as planning:
        planning.execute(sa.insert(DELIVERY), [delivery_row(bulletin.id, ruth.id)])
        eraser = threading.Thread(target=erase_ruth)
        eraser.start()
        time.sleep(0.5)
        assert not erased.is_set(), "the erasure waits for the transaction that is inserting deliveries"
    eraser.join(timeout=10)
    assert erased.is_set()
    assert deliveries_of(engine, bulletin.id) == [(deliveries_of(engine, bulletin.id)[0][0], None)]
