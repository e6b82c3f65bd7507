"""The admin's suppressions page and engagement report over HTTP: staff only, CSRF-checked, bounces
and complaints with the email service's own words, charts with text alternatives, no personal data."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from lxml import html as lxml_html
from sqlmodel import Session, select

from newsletter.accounts import create_user
from newsletter.audience import suppressions
from newsletter.core.models import AuditEntry, Delivery, Subscriber, Suppression, email_hash
from newsletter.core.status import Role, SuppressionReason
from newsletter.esp.sendgrid.events import parse_events
from newsletter.sending.events import apply_events
from tests.factories import MakeBulletin, MakeSubscriber
from tests.fixtures_web import LiveServer
from tests.web.test_admin import PASSWORD, STAFF, VOLUNTEER, csrf_of, login

NOW = int(datetime(2026, 11, 20, 9, 30, tzinfo=UTC).timestamp())


@pytest.fixture
def staff(live_server: LiveServer, session: Session) -> Iterator[httpx.Client]:
    create_user(session, STAFF, PASSWORD, Role.STAFF)
    create_user(session, VOLUNTEER, PASSWORD, Role.VOLUNTEER)
    session.commit()
    with login(live_server, STAFF) as client:
        yield client


@pytest.fixture
def volunteer(live_server: LiveServer, staff: httpx.Client) -> Iterator[httpx.Client]:
    with login(live_server, VOLUNTEER) as client:
        yield client


def sendgrid(session: Session, events: list[dict[str, object]]) -> None:
    """Apply events exactly as the webhook does (its signature is tested in test_webhooks)."""
    apply_events(session, parse_events(json.dumps(events)))
    session.commit()


@pytest.fixture
def suppressed(
    session: Session, make_subscriber: MakeSubscriber, planned_bulletin: MakeBulletin
) -> dict[str, int]:
    """A bounce and a complaint from SendGrid, a manual entry and an erased one."""
    for name in ("bea", "cal"):
        make_subscriber(f"{name}@example.org", regions=["africa"])
    bulletin = planned_bulletin()
    ids = {
        d.subscriber_id: d.id
        for d in session.exec(select(Delivery).where(Delivery.bulletin_id == bulletin.id))
    }
    session.commit()
    people = {
        p.email: p.id
        for p in (suppressions_subject(session, e) for e in ("bea@example.org", "cal@example.org"))
    }
    sendgrid(
        session,
        [
            {
                "email": "bea@example.org",
                "event": "bounce",
                "type": "bounce",
                "timestamp": NOW,
                "sg_event_id": "b-1",
                "delivery_id": str(ids[people["bea@example.org"]]),
                "reason": "550 5.1.1 The email account does not exist",
            },
            {
                "email": "cal@example.org",
                "event": "spamreport",
                "timestamp": NOW + 60,
                "sg_event_id": "s-1",
                "delivery_id": str(ids[people["cal@example.org"]]),
            },
        ],
    )
    suppressions.add(session, "manual@example.org", SuppressionReason.MANUAL, note="asked by phone")
    session.add(
        Suppression(email_hash=email_hash("gone@example.org"), email=None, reason=SuppressionReason.ERASED)
    )
    session.commit()
    found = {s.email or "erased": int(s.id or 0) for s in session.exec(select(Suppression)).all()}
    session.commit()  # end the read: on SQLite an open transaction holds the write lock
    return found


def suppressions_subject(session: Session, email: str) -> Subscriber:
    found = session.exec(select(Subscriber).where(Subscriber.email == email)).one()
    session.commit()
    return found


def rows(page: str) -> list[list[str]]:
    doc = lxml_html.fromstring(page)
    return [
        [" ".join(td.text_content().split()) for td in tr.xpath("td")]
        for tr in doc.xpath('//table[@id="suppressions"]/tbody/tr')
    ]


def test_staff_see_bounces_and_complaints_with_the_services_reason_and_date(staff, suppressed):
    page = staff.get("/admin/suppressions")
    assert page.status_code == 200
    table = {r[0]: r for r in rows(page.text)}
    assert set(table) == {"bea@example.org", "cal@example.org", "manual@example.org", "(erased)"}
    bea = table["bea@example.org"]
    assert bea[1] == "bounce" and "550 5.1.1 The email account does not exist" in bea[3]
    assert "20 Nov 2026, 09:30" in bea[3]  # when SendGrid saw it (Europe/London = UTC in November)
    assert table["cal@example.org"][1] == "complaint" and "spamreport" in table["cal@example.org"][3]
    assert table["manual@example.org"][4] == "asked by phone"
    doc = lxml_html.fromstring(page.text)
    assert len(doc.xpath('//form[contains(@action, "/remove")]')) == 3  # never for an erased address
    # Search: an address prefix (any case; LIKE wildcards are plain characters) and/or a reason.
    assert [r[0] for r in rows(staff.get("/admin/suppressions", params={"q": "BE"}).text)] == [
        "bea@example.org"
    ]
    by_reason = rows(staff.get("/admin/suppressions", params={"reason": "complaint"}).text)
    assert [r[0] for r in by_reason] == ["cal@example.org"]
    assert "No suppression matches" in staff.get("/admin/suppressions", params={"q": "%"}).text
    assert staff.get("/admin/suppressions", params={"reason": "bogus"}).status_code == 400


def test_staff_add_and_remove_suppressions_audited(staff, volunteer, suppressed, session: Session):
    assert volunteer.get("/admin/suppressions").status_code == 403
    forged = staff.post(
        f"/admin/suppressions/{suppressed['manual@example.org']}/remove", data={"csrf_token": "forged"}
    )
    assert forged.status_code == 403
    assert suppressions.is_suppressed(session, "manual@example.org")
    session.commit()
    token = csrf_of(staff, "/admin/suppressions")
    added = staff.post(
        "/admin/suppressions",
        data={"email": " New@Example.org ", "reason": "manual", "note": "typo trap", "csrf_token": token},
    )
    assert added.status_code == 303
    assert "new@example.org is suppressed" in staff.get(added.headers["location"]).text
    assert suppressions.find(session, "new@example.org").note == "typo trap"  # type: ignore[union-attr]
    session.commit()
    bad = staff.post(
        "/admin/suppressions", data={"email": "not an address", "reason": "manual", "csrf_token": token}
    )
    assert "not a valid email address" in staff.get(bad.headers["location"]).text
    erased = staff.post(f"/admin/suppressions/{suppressed['erased']}/remove", data={"csrf_token": token})
    assert "erased address stays suppressed" in staff.get(erased.headers["location"]).text
    removed = staff.post(
        f"/admin/suppressions/{suppressed['bea@example.org']}/remove", data={"csrf_token": token}
    )
    assert removed.status_code == 303
    assert not suppressions.is_suppressed(session, "bea@example.org")
    session.commit()
    actions = [
        a.action for a in session.exec(select(AuditEntry).where(AuditEntry.actor == "staff@example.org"))
    ]
    assert actions.count("suppression.add") == 1 and actions.count("suppression.remove") == 1


def test_the_report_page_has_charts_with_text_alternatives_and_no_names(staff, suppressed, session: Session):
    bulletin_id = session.exec(select(Delivery.bulletin_id)).first()
    session.commit()
    page = staff.get(f"/admin/bulletins/{bulletin_id}/report")
    assert page.status_code == 200
    doc = lxml_html.fromstring(page.text)
    svgs = doc.xpath("//svg")
    assert len(svgs) >= 2
    for svg in svgs:
        assert svg.get("role") == "img"
        labelled = svg.get("aria-labelledby").split()
        assert [doc.get_element_by_id(i).tag for i in labelled] == ["title", "desc"]
        assert doc.get_element_by_id(labelled[1]).text_content().strip()
    assert doc.xpath("//script") == []
    figures = {e.get("data-metric"): int(e.text_content()) for e in doc.xpath('//*[@class="figure"]')}
    assert figures["bounced"] == 1 and figures["complained"] == 1
    assert "estimates" in page.text and "Apple Mail Privacy Protection" in page.text
    assert "@example.org" not in page.text.replace("staff@example.org", "")
    assert staff.get("/admin/bulletins/9999/report").status_code == 404
