"""The admin for everyday work: readable times, a finished send's figures (over HTTP, both databases)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from newsletter.core.models import AuditEntry, Bulletin
from tests.web.test_admin import STAFF, login


@pytest.fixture
def staff_client(live_server, session):
    from newsletter.accounts import create_user
    from newsletter.core.status import Role
    from tests.web.test_admin import PASSWORD

    create_user(session, STAFF, PASSWORD, Role.STAFF)
    session.commit()
    with login(live_server, STAFF) as client:
        yield client


def test_audit_times_are_local_readable_and_exact_on_hover(staff_client, session):
    at = datetime(2026, 7, 8, 21, 35, 55, 929420, tzinfo=UTC)  # summer: London is UTC+1
    changes = {"confirmed_at": [None, str(at)], "name": ["A", "B"]}
    session.add(
        AuditEntry(
            actor="cli",
            action="subscriber.update",
            entity_type="subscriber",
            entity_id=None,
            changes=json.dumps(changes),
            at=at,
        )
    )
    session.commit()
    page = staff_client.get("/admin/audit").text
    tag = (
        '<time datetime="2026-07-08T21:35:55+00:00" '
        'title="Wednesday 08 July 2026, 22:35:55 BST (UTC+0100)">08 Jul 2026, 22:35 BST</time>'
    )
    assert page.count(tag) == 2  # when it happened, and the time in its changes
    assert "21:35:55.929420" not in page
    assert "<strong>name</strong>: A → B" in page


def test_a_finished_send_shows_its_duration_and_average_rate(
    staff_client, make_bulletin, make_subscribers, session, settings
):
    from newsletter.core.db import make_engine
    from newsletter.sending import dispatcher, lifecycle

    make_subscribers(20)
    bulletin = make_bulletin()
    lifecycle.send_now(session, bulletin.id)
    session.commit()
    engine = make_engine(settings.DATABASE_URL)
    dispatcher.Dispatcher(settings, engine).run_until_done(bulletin.id)
    engine.dispose()
    start = datetime(2026, 7, 8, 7, 0, tzinfo=UTC)
    session.execute(
        sa.update(Bulletin)
        .where(Bulletin.id == bulletin.id)  # type: ignore[arg-type]
        .values(started_at=start, finished_at=start + timedelta(seconds=130))
    )
    session.commit()
    page = staff_client.get(f"/admin/bulletins/{bulletin.id}/dashboard").text
    assert "Took 2 min 10 s: 0.2 recipients/s on average." in page
    assert "over the last minute" not in page


def test_staff_see_branding_and_the_missing_postal_address_on_the_home_page(staff_client):
    page = staff_client.get("/admin").text
    # the test settings have an address: only the example sender is warned about
    assert "ORG_POSTAL_ADDRESS is empty" not in page
    assert "FROM_EMAIL is still the example address bulletin@example.org" in page
    assert "<dt>ACCENT_COLOUR</dt>" in page and "#1d4e89" in page
    assert "<dt>ORG_POSTAL_ADDRESS</dt><dd>1 Example Street" in page


def test_the_home_page_warns_when_the_postal_address_is_empty(live_server, session, monkeypatch):
    from newsletter.accounts import create_user
    from newsletter.core.status import Role
    from tests.web.test_admin import PASSWORD

    live_server.app.state.settings = live_server.app.state.settings.model_copy(
        update={"ORG_POSTAL_ADDRESS": ""}
    )
    create_user(session, STAFF, PASSWORD, Role.STAFF)
    session.commit()
    with login(live_server, STAFF) as client:
        page = client.get("/admin").text
    assert "ORG_POSTAL_ADDRESS is empty: bulk-mail law (CAN-SPAM, PECR) requires" in page


def csrf(client, path: str) -> str:
    from tests.web.test_admin import csrf_of

    return csrf_of(client, path)


def test_cancel_asks_first_and_changes_nothing_until_confirmed(staff_client, make_bulletin, session):
    bulletin = make_bulletin(status="draft")
    token = csrf(staff_client, f"/admin/bulletins/{bulletin.id}")
    url = f"/admin/bulletins/{bulletin.id}/status"
    asked = staff_client.post(url, data={"csrf_token": token, "action": "cancel"})
    assert asked.status_code == 200 and f"Cancel “{bulletin.title}”?" in asked.text
    assert 'name="confirmed" value="yes"' in asked.text and 'name="action" value="cancel"' in asked.text
    session.expire_all()
    assert session.get(Bulletin, bulletin.id).status == "draft"
    session.commit()
    done = staff_client.post(url, data={"csrf_token": token, "action": "cancel", "confirmed": "yes"})
    assert done.status_code == 303
    session.expire_all()
    assert session.get(Bulletin, bulletin.id).status == "cancelled"


def test_deleting_an_item_asks_first(staff_client, make_bulletin, session):
    from sqlmodel import select

    from newsletter.core.models import Item

    bulletin = make_bulletin(status="draft")
    item_id = session.exec(select(Item.id).where(Item.bulletin_id == bulletin.id)).first()
    session.commit()
    token = csrf(staff_client, f"/admin/bulletins/{bulletin.id}")
    url = f"/admin/bulletins/{bulletin.id}/items/{item_id}/delete"
    asked = staff_client.post(url, data={"csrf_token": token})
    assert asked.status_code == 200 and "Delete this item?" in asked.text and "Keep it" in asked.text
    assert session.get(Item, item_id) is not None
    session.commit()
    assert staff_client.post(url, data={"csrf_token": token, "confirmed": "yes"}).status_code == 303
    session.expire_all()
    assert session.get(Item, item_id) is None


def test_duplicate_makes_a_new_draft_and_opens_it(staff_client, make_bulletin, session):
    bulletin = make_bulletin(status="draft")
    token = csrf(staff_client, f"/admin/bulletins/{bulletin.id}")
    answer = staff_client.post(f"/admin/bulletins/{bulletin.id}/duplicate", data={"csrf_token": token})
    assert answer.status_code == 303 and answer.headers["location"] == f"/admin/bulletins/{bulletin.id + 1}"
    page = staff_client.get(answer.headers["location"]).text
    assert f"a new draft copied from bulletin {bulletin.id}" in page


def test_after_a_dry_run_the_checked_file_imports_without_a_second_upload(staff_client, session):
    import re

    from sqlmodel import select

    from newsletter.core.models import Subscriber
    from tests.factories import csv_for

    token = csrf(staff_client, "/admin/subscribers/import")
    data = csv_for([("ada@example.org", "Ada", ["africa"], "active"), ("bad", "X", ["africa"], "active")])
    checked = staff_client.post(
        "/admin/subscribers/import",
        data={"csrf_token": token, "dry_run": "true"},
        files={"file": ("people.csv", data.encode(), "text/csv")},
    )
    assert "(1 row would be stored)" in checked.text and "Import these rows now" in checked.text
    assert session.exec(select(Subscriber)).all() == []
    staged = re.search(r'name="staged" value="([^"]+)"', checked.text).group(1)
    session.commit()
    done = staff_client.post("/admin/subscribers/import", data={"csrf_token": token, "staged": staged})
    assert done.status_code == 200 and "(1 row was stored)" in done.text
    assert [s.email for s in session.exec(select(Subscriber)).all()] == ["ada@example.org"]
    session.commit()
    again = staff_client.post("/admin/subscribers/import", data={"csrf_token": token, "staged": staged})
    assert again.status_code == 400 and "no longer available: upload it again" in again.text
