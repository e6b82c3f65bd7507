"""Scale-out on PostgreSQL: several worker processes share one bulletin; everyone is sent exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlmodel import Session

from newsletter.core.config import Settings
from newsletter.core.status import BulletinStatus, DeliveryStatus
from newsletter.sending import lifecycle
from newsletter.sending.summary import send_summary
from newsletter.testing.fake_esp import FakeEsp
from tests.db.test_crash_recovery import start_worker, worker_env
from tests.db.test_dispatch import deliveries
from tests.factories import MakeBulletin

WORKERS = 4


@pytest.mark.slow
def test_four_workers_on_one_bulletin_send_every_delivery_exactly_once(
    settings: Settings,
    session: Session,
    make_subscribers: Callable[..., int],
    make_bulletin: MakeBulletin,
    fake_esp: FakeEsp,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if settings.is_sqlite:
        pytest.skip("SQLite serves one process; scale-out is PostgreSQL's")
    make_subscribers(1500)
    bulletin = make_bulletin()
    assert bulletin.id is not None
    planned = lifecycle.send_now(session, bulletin.id)
    session.commit()
    fake_esp.configure(latency=0.02)
    env = worker_env(settings, fake_esp, BATCH_SIZE=20, SEND_CONCURRENCY=2)
    log = tmp_path / "workers.log"

    workers = [start_worker(env, log) for _ in range(WORKERS)]
    codes = [w.wait(timeout=180) for w in workers]
    assert codes == [0] * WORKERS, log.read_text()[-3000:]

    summary = send_summary(session, bulletin.id)
    assert summary.status == BulletinStatus.SENT
    assert summary.counts == {DeliveryStatus.ACCEPTED: planned}
    ledger = deliveries(session, bulletin.id)
    sent = Counter(fake_esp.delivery_ids())
    per_worker = Counter(d.leased_by.rsplit(":", 1)[0] for d in ledger if d.leased_by)
    with capsys.disabled():
        print(
            f"\n{WORKERS} workers: {len(ledger)} recipients, {sum(n - 1 for n in sent.values())} duplicates, "
            f"{len({d.id for d in ledger} - set(sent))} lost; sent per worker {sorted(per_worker.values())}"
        )
    assert sorted(sent) == sorted(d.id for d in ledger) and max(sent.values()) == 1
    processes = {d.leased_by.rsplit(":", 1)[0] for d in ledger if d.leased_by}  # host:pid of the sender
    assert len(processes) >= 2, (
        f"the work was shared: {Counter(d.leased_by.rsplit(':', 1)[0] for d in ledger if d.leased_by)}"
    )
