"""A local-time send with a `newsletter worker` killed with SIGKILL while the first zones go out: the zones
whose time has come are all sent (duplicates only from the batches in flight at a kill), the zones still
to come are untouched, and a later pass sends them once."""

from __future__ import annotations

import random
import signal
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from newsletter.audience.subscribers import import_subscribers
from newsletter.content.regions import RegionIndex
from newsletter.core import zones
from newsletter.core.config import Settings
from newsletter.core.models import Delivery, Subscriber
from newsletter.core.status import BulletinStatus, DeliveryStatus
from newsletter.sending import lifecycle
from newsletter.sending.dispatcher import Dispatcher
from newsletter.testing.fake_esp import FakeEsp
from tests.db.test_crash_recovery import AFRICA_ONLY, BATCH, CONCURRENCY, start_worker, worker_env
from tests.db.test_localtime import summary
from tests.factories import MakeBulletin

DUE_NOW = ("Pacific/Kiritimati", "Australia/Lord_Howe", "Asia/Manila", "Asia/Kathmandu")
LATER = ("Europe/London", "America/Santiago", "America/Guatemala", "Etc/GMT+12")
PER_ZONE = 25
KILLS = 1


def ledger(session: Session, bulletin_id: int) -> dict[int, tuple[str, str]]:
    """delivery id → (subscriber's zone, status)."""
    rows = session.exec(
        select(Delivery.id, Subscriber.timezone, Delivery.status)
        .join(Subscriber, Subscriber.id == Delivery.subscriber_id)  # type: ignore[arg-type]
        .where(Delivery.bulletin_id == bulletin_id)
        .execution_options(populate_existing=True)
    ).all()
    session.commit()
    return {did: (zone or "", status) for did, zone, status in rows}


@pytest.mark.slow
def test_kill_9_between_zones_loses_and_repeats_nothing_beyond_the_batches_in_flight(
    settings: Settings,
    session: Session,
    engine: Engine,
    make_bulletin: MakeBulletin,
    fake_esp: FakeEsp,
    tmp_path: Path,
) -> None:
    lines = ["email,name,regions,timezone"]
    lines += [
        f"p{i}.{z}@example.org,P,africa,{zone}"
        for z, zone in enumerate(DUE_NOW + LATER)
        for i in range(PER_ZONE)
    ]
    assert import_subscribers(session, "\n".join(lines) + "\n", RegionIndex.from_db(session, settings)).ok
    # Two hours ahead on UTC's clock: already come where clocks are 2+ hours ahead, not yet west of there.
    wall = (datetime.now(UTC) + timedelta(hours=2)).replace(tzinfo=None, second=0, microsecond=0)
    assert all(zones.due_at(wall, z) < datetime.now(UTC) for z in DUE_NOW)
    assert all(zones.due_at(wall, z) > datetime.now(UTC) + timedelta(minutes=30) for z in LATER)
    bulletin = make_bulletin(AFRICA_ONLY, status=BulletinStatus.DRAFT)
    assert bulletin.id is not None
    lifecycle.schedule_local(session, bulletin.id, wall)
    session.commit()
    assert Dispatcher(settings, engine).start_due() == [bulletin.id]

    fake_esp.configure(latency=0.08)  # each request takes a while: kills land mid-send
    env = worker_env(settings, fake_esp, BATCH_SIZE=BATCH, SEND_CONCURRENCY=CONCURRENCY, LEASE_SECONDS=1)
    log = tmp_path / "worker.log"
    rng = random.Random(14)
    for _ in range(KILLS):
        worker = start_worker(env, log)
        seen = len(fake_esp.delivery_ids())
        deadline = time.monotonic() + 60
        while len(fake_esp.delivery_ids()) == seen and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # until this worker is sending
        assert worker.poll() is None, log.read_text()[-2000:]
        time.sleep(rng.uniform(0.0, 0.3))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
    last = start_worker(env, log)
    assert last.wait(timeout=120) == 0, log.read_text()[-3000:]  # returns: nothing more is due now

    rows = ledger(session, bulletin.id)
    sent = Counter(fake_esp.delivery_ids())
    due_ids = {did for did, (zone, _) in rows.items() if zone in DUE_NOW}
    later_ids = {did for did, (zone, _) in rows.items() if zone in LATER}
    assert {rows[d][1] for d in due_ids} == {DeliveryStatus.ACCEPTED}, "every due zone was sent"
    assert {rows[d][1] for d in later_ids} == {DeliveryStatus.PENDING}, "no zone still to come was touched"
    assert set(sent) == due_ids
    assert sum(n - 1 for n in sent.values()) <= KILLS * CONCURRENCY * BATCH
    assert summary(session, bulletin.id).status == BulletinStatus.SENDING

    # The last zone's time comes (an injected clock): the rest go out, each once.
    end = max(zones.due_at(wall, z) for z in LATER)
    Dispatcher(settings.model_copy(update=env_settings(env)), engine, clock=lambda: end).run_until_done(
        bulletin.id
    )
    sent_after = Counter(fake_esp.delivery_ids())
    assert {d: sent_after[d] for d in later_ids} == {d: 1 for d in later_ids}
    assert summary(session, bulletin.id).status == BulletinStatus.SENT


def env_settings(env: dict[str, str]) -> dict[str, object]:
    """The worker's ESP settings, for a dispatcher in this process."""
    keys = ("ESP_BACKEND", "SENDGRID_API_KEY", "SENDGRID_HOST")
    return {k: env[k] for k in keys}
