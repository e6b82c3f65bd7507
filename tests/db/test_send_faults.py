"""An unreliable ESP: whatever fails is retried until every recipient is accepted exactly once."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from sqlalchemy.engine import Engine
from sqlmodel import Session

from newsletter.core.config import Settings
from newsletter.core.status import BulletinStatus, DeliveryStatus
from newsletter.sending.dispatcher import Dispatcher
from newsletter.testing.fake_esp import FakeEsp, Fault
from tests.db.test_dispatch import deliveries, sendgrid
from tests.factories import MakeBulletin

MIXED_FAULTS = [
    Fault("status", status=500, rate=0.05),
    Fault("status", status=503, rate=0.04),
    Fault("status", status=429, rate=0.04),
    Fault("drop", rate=0.04),
    Fault("slow", rate=0.03, delay=2.0),  # longer than the client's timeout: abandoned, not accepted
]
"""20% of requests fail, in five different ways."""


def test_a_fifth_of_requests_failing_in_mixed_ways_still_delivers_everyone_exactly_once(
    settings: Settings,
    engine: Engine,
    session: Session,
    make_subscribers: Callable[..., int],
    planned_bulletin: MakeBulletin,
    fake_esp: FakeEsp,
) -> None:
    assert abs(sum(f.rate for f in MIXED_FAULTS) - 0.20) < 1e-9
    make_subscribers(400)
    bulletin = planned_bulletin()
    fake_esp.configure(faults=MIXED_FAULTS, rate_limit_reset=0.05, seed=7)
    # Scattered faults, not an outage: with four threads, three failed batches in a row (the default
    # ESP_OUTAGE_BATCHES) happen by chance, and the pause for an outage has tests of its own.
    s = sendgrid(
        settings,
        fake_esp,
        BATCH_SIZE=15,
        SEND_CONCURRENCY=4,
        MAX_ATTEMPTS=12,
        SENDGRID_TIMEOUT=1.0,  # under the slow fault's 2 s, with room for a loaded machine
        ESP_OUTAGE_BATCHES=1000,
    )

    result = Dispatcher(s, engine).run_until_done(bulletin.id)

    assert result.status == BulletinStatus.SENT
    assert result.counts == {DeliveryStatus.ACCEPTED: 400}
    ledger = deliveries(session, bulletin.id)
    sent = Counter(fake_esp.delivery_ids())
    assert sorted(sent) == sorted(d.id for d in ledger), "every recipient reached the ESP"
    assert max(sent.values()) == 1, "nobody was accepted twice"
    outcomes = Counter(r.outcome for r in fake_esp.requests())
    assert {"500", "503", "429", "dropped"} <= set(outcomes), outcomes
    assert outcomes["abandoned"] + outcomes["202"] < len(fake_esp.requests())
    assert any(d.attempts > 1 for d in ledger), "some recipients needed a retry"
