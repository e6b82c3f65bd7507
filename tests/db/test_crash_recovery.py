"""A `newsletter worker` killed with SIGKILL mid-send and restarted: nothing lost; duplicates only from the
batches in flight at a kill, and none at all with RESEND_ON_UNKNOWN off (those become `failed`)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import Session

from newsletter.core.config import Settings
from newsletter.core.status import BulletinStatus, DeliveryStatus
from newsletter.sending import lifecycle, queries
from newsletter.sending.summary import send_summary
from newsletter.testing.fake_esp import FakeEsp
from tests.db.test_dispatch import deliveries
from tests.factories import MakeBulletin
from tests.fixtures_esp import FAKE_API_KEY

AFRICA_ONLY = """Week 13

"Let justice roll on like a river."

- Amos 5:24

Africa

Pray for the families in Ghana.
"""
"""One section, so one variant: a restarted worker renders once and gets straight back to sending."""

KILLS = 5
BATCH = 10
CONCURRENCY = 2


def worker_env(settings: Settings, fake: FakeEsp, **extra: object) -> dict[str, str]:
    """The environment of a worker process sending through `fake` to the test's database."""
    env = dict(os.environ)
    env.update(
        DATABASE_URL=settings.DATABASE_URL,
        ESP_BACKEND="sendgrid",
        SENDGRID_API_KEY=FAKE_API_KEY,
        SENDGRID_HOST=fake.url,
        SENDGRID_TIMEOUT="5",
        SCHEDULER_TICK_SECONDS="0.2",
        RETRY_BASE_SECONDS="0.05",
        RETRY_MAX_SECONDS="0.2",
        LOG_LEVEL="INFO",
    )
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "newsletter", "worker", "--until-idle"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


@pytest.mark.slow
@pytest.mark.parametrize("resend", [True, False], ids=["resend", "at-most-once"])
def test_a_worker_killed_mid_send_and_restarted_loses_nobody(
    settings: Settings,
    session: Session,
    make_subscribers: Callable[..., int],
    make_bulletin: MakeBulletin,
    fake_esp: FakeEsp,
    tmp_path: Path,
    resend: bool,
    capsys: pytest.CaptureFixture[str],
) -> None:
    make_subscribers(800)
    bulletin = make_bulletin(AFRICA_ONLY)
    assert bulletin.id is not None
    planned = lifecycle.send_now(session, bulletin.id)
    session.commit()
    assert planned > 300
    fake_esp.configure(latency=0.08)  # each request takes a while: kills land mid-send
    env = worker_env(
        settings,
        fake_esp,
        BATCH_SIZE=BATCH,
        SEND_CONCURRENCY=CONCURRENCY,
        LEASE_SECONDS=1,
        RESEND_ON_UNKNOWN="true" if resend else "false",
    )
    log = tmp_path / "worker.log"
    rng = random.Random(4)

    kills = 0
    deadline = time.monotonic() + 90
    while kills < KILLS:
        worker = start_worker(env, log)
        seen = len(fake_esp.delivery_ids())
        while len(fake_esp.delivery_ids()) == seen and worker.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # until this worker is sending
        assert worker.poll() is None, (
            f"the worker finished before kill {kills + 1}: {log.read_text()[-2000:]}"
        )
        time.sleep(rng.uniform(0.0, 0.4))
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        kills += 1
    last = start_worker(env, log)
    assert last.wait(timeout=120) == 0, log.read_text()[-3000:]

    summary = send_summary(session, bulletin.id)
    assert summary.status == BulletinStatus.SENT and summary.open == 0, "nothing left behind"
    # Subscribers without an Africa section get nothing (NO_SECTION=skip): the rest is the list.
    ledger = [d for d in deliveries(session, bulletin.id) if d.last_error != queries.NO_SECTION_REASON]
    sent = Counter(fake_esp.delivery_ids())
    in_flight_at_kills = KILLS * CONCURRENCY * BATCH
    accepted = {d.id for d in ledger if d.status == DeliveryStatus.ACCEPTED}
    with capsys.disabled():
        print(
            f"\nkill -9 x{KILLS} ({'RESEND_ON_UNKNOWN=true' if resend else 'false'}, {settings.DATABASE_URL[:10]}): "
            f"{len(ledger)} recipients, {sum(n - 1 for n in sent.values())} duplicates, "
            f"{len({d.id for d in ledger} - set(sent))} never reached the ESP "
            f"({sum(1 for d in ledger if d.status == DeliveryStatus.FAILED)} failed as outcome unknown), "
            f"{sum(1 for d in ledger if d.ambiguous)} marked ambiguous in the ledger"
        )
    if resend:
        assert accepted == {d.id for d in ledger}, "everyone was accepted"
        assert set(sent) == accepted, "and reached the ESP"
        duplicates = sum(n - 1 for n in sent.values())
        assert duplicates <= in_flight_at_kills
    else:
        failed = {d.id for d in ledger if d.status == DeliveryStatus.FAILED}
        assert accepted | failed == {d.id for d in ledger}
        assert max(sent.values()) == 1, "nobody was sent twice"
        assert accepted <= set(sent), "everyone recorded as accepted reached the ESP"
        assert set(sent) <= accepted | failed
        assert 0 < len(failed) <= in_flight_at_kills
        assert all(d.last_error == queries.UNKNOWN_OUTCOME for d in ledger if d.id in failed)
