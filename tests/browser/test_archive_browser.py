"""The public archive and the engagement report in a real browser (Debian's chromium): the home page, the
archive and a bulletin on a phone (375 px) and a desktop (1280 px), the no-JavaScript region filter, and
the report's charts. Screenshots for the README with NEWSLETTER_SCREENSHOTS=1 (`docs/screenshots/`)."""

from __future__ import annotations

import json
import os
import random
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlmodel import Session, select

from newsletter.accounts import create_user
from newsletter.core.models import Bulletin, Delivery
from newsletter.core.status import Role
from newsletter.esp.sendgrid.events import parse_events
from newsletter.sending.events import apply_events
from tests.factories import MakeBulletin, MakeSubscribers

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser]

PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SAMPLE = Path(__file__).parents[1] / "data" / "prayer-bulletin.txt"
WIDTHS = {"phone": 375, "desktop": 1280}


def shoot(page, name: str) -> None:
    if os.environ.get("NEWSLETTER_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sent(session: Session, planned_bulletin: MakeBulletin, title: str, days_ago: int) -> Bulletin:
    text = SAMPLE.read_text("utf-8").replace("IJM Prayer Request", title, 1)
    text = text.replace("Lake Volta.", "Lake Volta ([read more](https://example.org/volta)).")
    bulletin = planned_bulletin(text)
    bulletin.started_at = datetime.now(UTC) - timedelta(days=days_ago)
    bulletin.status = "sent"
    session.add(bulletin)
    session.commit()
    return bulletin


def test_home_archive_and_a_bulletin_on_a_phone_and_a_desktop(
    browser, live_server, session, make_subscribers: MakeSubscribers, planned_bulletin: MakeBulletin
):
    make_subscribers(5)
    for week in range(3):
        sent(session, planned_bulletin, f"Prayer bulletin, week {week + 1}", days_ago=7 * (2 - week))
    for name, width in WIDTHS.items():
        context = browser.new_context(base_url=live_server.url, viewport={"width": width, "height": 900})
        context.set_extra_http_headers({"Cache-Control": "no-cache"})
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto("/")
        expect(page.get_by_role("heading", name="Latest bulletins")).to_be_visible()
        expect(page.get_by_label("Email address")).to_be_visible()
        shoot(page, f"archive-home-{name}")
        page.get_by_role("link", name="All past bulletins").click()
        expect(page.get_by_role("heading", name="Past bulletins")).to_be_visible()
        expect(page.locator("ol.bulletin-list li")).to_have_count(3)
        shoot(page, f"archive-list-{name}")
        page.get_by_role("link", name="Prayer bulletin, week 3").click()
        expect(page.get_by_role("heading", name="Prayer bulletin, week 3")).to_be_visible()
        expect(page.locator(".bulletin-body h2")).to_have_count(5)
        assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing wider than the screen
        shoot(page, f"archive-bulletin-{name}")
        # The region filter is a plain form: it works with JavaScript off too (checked below).
        for box in page.locator(".region-filter input[type=checkbox]").all():
            box.uncheck()
        page.get_by_label("South Asia", exact=True).check()
        page.get_by_role("button", name="Show").click()
        expect(page).to_have_url(re.compile(r"regions=south-asia"))
        expect(page.locator(".bulletin-body h2")).to_have_text(["South Asia"])
        context.close()
    no_js = browser.new_context(base_url=live_server.url, java_script_enabled=False)
    page = no_js.new_page()
    page.goto("/archive")
    page.get_by_role("link", name="Prayer bulletin, week 1").click()
    page.get_by_label("Africa", exact=True).uncheck()
    page.get_by_role("button", name="Show").click()
    expect(page.locator(".bulletin-body h2")).to_have_count(4)
    no_js.close()


def test_the_report_page_draws_its_charts(
    browser, live_server, session, make_subscribers: MakeSubscribers, planned_bulletin: MakeBulletin
):
    create_user(session, "staff@example.org", PASSWORD, Role.STAFF)
    session.commit()
    make_subscribers(150)
    rng = random.Random(3)
    last = None
    for week in range(6):
        last = sent(session, planned_bulletin, f"Week {week + 1}", days_ago=7 * (5 - week))
        ids = session.exec(select(Delivery.id).where(Delivery.bulletin_id == last.id)).all()
        session.commit()
        events = []
        for did in ids:
            for kind, chance in (
                ("delivered", 0.97),
                ("open", 0.35 + week * 0.04),
                ("click", 0.1 + week * 0.02),
            ):
                if rng.random() < chance:
                    extra = {"url": "https://example.org/volta"} if kind == "click" else {}
                    events.append(
                        {
                            "event": kind,
                            "sg_event_id": f"{did}-{kind}",
                            "timestamp": 1_800_000_000,
                            "delivery_id": str(did),
                            **extra,
                        }
                    )
        apply_events(session, parse_events(json.dumps(events)))
        session.commit()
    assert last is not None
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto("/admin/login")
    page.get_by_label("Email address").fill("staff@example.org")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.goto(f"/admin/bulletins/{last.id}/report")
    expect(page.get_by_role("heading", name="Engagement report")).to_be_visible()
    charts = page.get_by_role("img")
    expect(charts).to_have_count(3)
    expect(page.get_by_role("img", name="Open and click rates by region")).to_be_visible()
    expect(page.get_by_role("img", name="Open and click rates over the last 6 bulletins")).to_be_visible()
    box = page.locator("svg.chart").first.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100
    expect(page.locator("#trend-table tbody tr")).to_have_count(6)
    expect(page.locator("#links-table")).to_contain_text("africa #1")
    shoot(page, "admin-report")
    context.close()
