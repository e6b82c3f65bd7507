"""A welcome with the latest bulletin: sent on confirming when the setting is on, recorded, never twice."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa

from newsletter.core.config import get_settings
from newsletter.core.models import DELIVERY
from newsletter.core.status import DeliveryStatus
from tests.fixtures_web import start_live_server
from tests.web.test_web_public import (
    _LIVE,
    confirmation_emails,
    headings,
    link_in,
    read_eml,
    send_bulletin,
    subscriber,
)


@pytest.fixture
def welcoming(settings, monkeypatch):
    monkeypatch.setenv("WELCOME_LATEST_BULLETIN", "true")
    with start_live_server(get_settings()) as live:
        yield live


def deliveries_of(engine, subscriber_id: int) -> list[tuple[int, str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(DELIVERY.c.bulletin_id, DELIVERY.c.variant, DELIVERY.c.status).where(
                DELIVERY.c.subscriber_id == subscriber_id
            )
        )
        return [tuple(r) for r in rows]


def subscribe_and_confirm(server, settings, email: str, regions: list[str]) -> str:
    _LIVE[:] = [server]  # emails go out after the response: wait for them before reading the outbox
    answer = server.client.post("/subscribe", data={"email": email, "name": "Ada", "regions": regions})
    assert answer.status_code == 200, answer.text[:300]
    (message,) = confirmation_emails(settings, email)
    link = server.local(link_in(message, "confirm"))
    assert "You are subscribed" in server.client.post(link).text  # (GET only shows the button)
    return link


def test_a_new_supporter_gets_the_latest_bulletin_once(
    welcoming, settings, engine, make_bulletin, make_subscriber
):
    make_subscriber("someone.else@example.org")
    older = make_bulletin()
    send_bulletin(settings, engine, older.id)
    latest = make_bulletin()
    send_bulletin(settings, engine, latest.id)

    link = subscribe_and_confirm(welcoming, settings, "ada@example.org", ["south-asia", "global"])
    ada = subscriber(engine, "ada@example.org")
    assert ada is not None and ada.id is not None
    ((bulletin_id, variant, status),) = deliveries_of(engine, ada.id)
    assert (bulletin_id, variant, status) == (latest.id, "south-asia,global", DeliveryStatus.ACCEPTED)
    files = [read_eml(p) for p in (Path(settings.OUTBOX_DIR) / f"bulletin-{latest.id}").glob("*.eml")]
    (welcome,) = [m for m in files if m["To"].addresses[0].addr_spec == "ada@example.org"]
    assert headings(welcome) == ["SOUTH ASIA", "HQ & GLOBAL PARTNERS"]

    welcoming.client.post(link)  # a second click changes nothing and sends nothing
    assert len(deliveries_of(engine, ada.id)) == 1
    assert len(list((Path(settings.OUTBOX_DIR) / f"bulletin-{latest.id}").glob("*.eml"))) == len(files)


def test_no_welcome_when_the_setting_is_off(live_server, settings, engine, make_bulletin, make_subscriber):
    make_subscriber("someone.else@example.org")
    send_bulletin(settings, engine, make_bulletin().id)
    subscribe_and_confirm(live_server, settings, "ada@example.org", ["africa"])
    ada = subscriber(engine, "ada@example.org")
    assert ada is not None and ada.id is not None and deliveries_of(engine, ada.id) == []
