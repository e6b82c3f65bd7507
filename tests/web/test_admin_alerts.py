"""The admin tells staff what needs them: a banner for a paused send, for failures, and when no scheduler
ticks; the dashboard retries failed deliveries (never an address the ESP refused)."""

from __future__ import annotations

from datetime import timedelta

import httpx
from sqlalchemy.engine import Engine
from sqlmodel import Session

from newsletter.core.models import utcnow
from newsletter.core.status import BulletinStatus, DeliveryStatus
from newsletter.sending import lifecycle, queries
from newsletter.sending.outage import outage_reason
from tests.db.test_dispatch import deliveries
from tests.web import test_admin
from tests.web.test_admin import csrf_of

accounts = test_admin.accounts
staff = test_admin.staff
"""The admin tests' fixtures: a staff account, and a client logged in with it."""


def test_banners_say_what_is_wrong_and_the_dashboard_retries_failures(
    staff: httpx.Client, engine: Engine, session: Session, make_subscriber, planned_bulletin
) -> None:
    for _ in range(6):
        make_subscriber()  # every region: one variant, one batch
    paused = planned_bulletin()
    lifecycle.stop_sending(
        session, paused.id, outage_reason(paused.id, utcnow(), "503"), esp_down_since=utcnow()
    )
    session.commit()
    page = staff.get("/admin").text
    assert "No scheduler has ever ticked" in page and "scheduled bulletins will not go out" in page
    assert f"Bulletin {paused.id}" in page and "ESP unavailable since" in page

    with engine.begin() as conn:  # a scheduler ticked just now: no banner about it
        queries.beat(conn, "host:1", utcnow(), utcnow() - timedelta(hours=1))
    assert "scheduled bulletins will not go out" not in staff.get("/admin").text

    done = planned_bulletin()
    now = utcnow()
    with engine.begin() as conn:  # two deliveries fail: one refused address, one out of attempts
        _, rows, *_ = queries.claim_batch(conn, done.id, 100, "w:1:t", now, now + timedelta(minutes=5))  # type: ignore[misc]
        ids = [r.delivery_id for r in rows]
        queries.record_failed(conn, done.id, "w:1:t", ids[:1], "550 no such user", now, refused=True)
        queries.record_retry(conn, done.id, "w:1:t", ids[1:2], "450 try later", now, 1, now)
        queries.record_accepted(conn, done.id, "w:1:t", [(i, "m") for i in ids[2:]], now)
        assert not queries.finish_if_done(conn, done.id, now), "its batch is still leased"
        queries.settle(conn, "w:1:t", now)
        assert queries.finish_if_done(conn, done.id, now)
    board = staff.get(f"/admin/bulletins/{done.id}/dashboard").text
    assert "Retry 2 failed deliveries" in board
    assert "finished with 2 of 6 recipients failed" in staff.get("/admin").text

    token = csrf_of(staff, f"/admin/bulletins/{done.id}/dashboard")
    answer = staff.post(f"/admin/bulletins/{done.id}/retry-failed", data={"csrf_token": token})
    assert answer.status_code in (200, 303)
    ledger = {d.id: d for d in deliveries(session, done.id)}
    assert ledger[ids[0]].status == DeliveryStatus.FAILED, "a refused address is never queued again"
    assert ledger[ids[1]].status == DeliveryStatus.PENDING and ledger[ids[1]].attempts == 0
    session.expire_all()
    assert lifecycle.locked(session, done.id).status == BulletinStatus.SENDING
    session.commit()
