"""The subscribe form in a Chromium whose time zone is set: the browser's zone is what gets stored."""

from __future__ import annotations

import re
from datetime import datetime

import pytest
from playwright.sync_api import expect
from sqlalchemy.engine import Engine

from newsletter.core import zones
from tests.fixtures_web import LiveServer
from tests.web.test_web_public import subscriber

ALIASES = {"Asia/Kathmandu": "Asia/Katm?andu"}


@pytest.mark.parametrize("zone", ["Asia/Kathmandu", "America/Santiago"])
def test_the_subscribe_form_stores_the_browsers_time_zone(
    browser: object, live_server: LiveServer, engine: Engine, zone: str
) -> None:
    context = browser.new_context(base_url=live_server.url, timezone_id=zone)  # type: ignore[attr-defined]
    # The form posts to, and loads its script from, BASE_URL (the public address): here, this server.
    base = live_server.base_url
    context.route(f"{base}/**", lambda route: route.continue_(url=live_server.local(route.request.url)))
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto("/subscribe")
        # Chromium's ICU may name a zone by its older IANA alias (Asia/Katmandu): also a zoneinfo name.
        expect(page.locator("#nl-timezone")).to_have_value(re.compile(ALIASES.get(zone, zone)))
        reported = page.locator("#nl-timezone").input_value()
        page.get_by_label("Email address").fill("traveller@example.org")
        page.get_by_role("button", name="Subscribe").click()
        expect(page.get_by_role("heading", level=1)).to_be_visible()
    finally:
        context.close()
    found = subscriber(engine, "traveller@example.org")
    assert found is not None and found.timezone == reported
    slot = datetime(2026, 11, 30, 7)
    assert zones.due_at(slot, reported) == zones.due_at(slot, zone)
