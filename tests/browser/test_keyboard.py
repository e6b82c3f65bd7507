"""Keyboard journeys (Playwright driving Debian's chromium, on both databases): subscribe, preferences,
log in, edit a subscriber, edit a bulletin.

On each form, Tab reaches every control in document order with a visible focus. After a failed submit
the title starts with "Error:", focus is on the error summary, whose links lead to each bad field;
each bad field is `aria-invalid` and described by its message; what was typed is still there; and the
error state passes axe-core. Then the person fixes the field by keyboard and the form goes through.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from sqlmodel import select

from newsletter.accounts import create_user
from newsletter.core.models import Subscriber
from newsletter.core.status import BulletinStatus, Role
from newsletter.mail.links import Links
from tests.browser.a11y import assert_keyboard_order, focused, run_axe

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser]

PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(
        base_url=live_server.url, viewport={"width": 1280, "height": 900}, bypass_csp=True
    )
    live_server.route_base_url(context)  # the subscription form posts to BASE_URL
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def submit_with(page, key: str = "Enter") -> None:
    with page.expect_navigation():
        page.keyboard.press(key)


def assert_error_state(page, fields: dict[str, str]) -> None:
    """`fields`: id of each bad control → a word its message must contain, in the summary's order."""
    assert page.title().startswith("Error: ")
    summary = page.locator("#error-summary")
    # `autofocus` is applied when the browser next renders, which on a busy machine can come after the
    # load event that ends the navigation: wait for it rather than read the focus at once.
    expect(summary).to_be_focused()
    assert (focused(page) or {}).get("key") == "error-summary"
    expect(summary.get_by_role("heading", name="There is a problem")).to_be_visible()
    links = summary.get_by_role("link")
    assert [links.nth(i).get_attribute("href") for i in range(links.count())] == [f"#{f}" for f in fields]
    for field_id, word in fields.items():
        control = page.locator(f"#{field_id}")
        assert control.get_attribute("aria-invalid") == "true", field_id
        described = control.get_attribute("aria-describedby") or page.locator(
            f"fieldset:has(#{field_id})"
        ).get_attribute("aria-describedby")
        assert described, f"{field_id} has no description"
        message = " ".join(page.locator(f"#{i}").inner_text() for i in described.split())
        assert word.lower() in message.lower(), (field_id, message)
    report = run_axe(page, page.url)
    assert [str(v) for v in report.violations] == []


def follow_summary_link(page, index: int, field_id: str) -> None:
    """From the focused summary: Tab to link `index`, Enter, and focus is in the field."""
    for _ in range(index + 1):
        page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    expect(page.locator(f"#{field_id}")).to_be_focused()


def log_in(page, email: str) -> None:
    page.goto("/admin/login")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name=re.compile("Welcome"))).to_be_visible()


def test_subscribe_by_keyboard(page, settings):
    page.goto("/subscribe")
    order = assert_keyboard_order(page)
    assert order[:3] == ["#main", "nl-email", "nl-name"]
    page.goto("/subscribe")
    page.keyboard.press("Tab")  # the skip link
    page.keyboard.press("Tab")
    page.keyboard.type("ruth@")
    page.keyboard.press("Tab")
    page.keyboard.type("Ruth")
    boxes = page.get_by_role("checkbox")
    for _ in range(boxes.count()):  # every region is ticked to start with: untick them all
        page.keyboard.press("Tab")
        page.keyboard.press("Space")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Subscribe")).to_be_focused()
    submit_with(page)

    assert_error_state(page, {"nl-email": "email address", "nl-regions": "region"})
    expect(page.locator("#nl-email")).to_have_value("ruth@")
    expect(page.locator("#nl-name")).to_have_value("Ruth")
    if os.environ.get("NEWSLETTER_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / "keyboard-error-summary.png"), full_page=True)

    follow_summary_link(page, 0, "nl-email")
    page.keyboard.press("End")
    page.keyboard.type("example.org")
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    expect(page.locator("#nl-regions")).to_be_focused()
    page.keyboard.press("Space")
    for _ in range(boxes.count()):
        page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Subscribe")).to_be_focused()
    submit_with(page)
    expect(page.get_by_role("heading", name="Check your inbox")).to_be_visible()
    assert not page.title().startswith("Error")


def test_preferences_by_keyboard(page, settings, make_subscriber, live_server):
    ruth = make_subscriber("ruth@example.org", name="Ruth")
    page.goto(live_server.local(Links(settings).preferences_url(ruth.id, ruth.link_secret)))
    assert_keyboard_order(page)

    ticked = page.eval_on_selector_all("input[name=regions]:checked", "els => els.map(e => e.id)")
    for box_id in ticked:
        page.locator(f"#{box_id}").focus()
        page.keyboard.press("Space")
    page.keyboard.press("Tab")
    expect(page.get_by_role("button", name="Save regions")).to_be_focused()
    submit_with(page)
    assert_error_state(page, {"regions": "region"})
    expect(page.get_by_role("checkbox", checked=True)).to_have_count(0)

    page.locator("#weeks").focus()
    page.keyboard.press("Control+A")
    page.keyboard.type("99")
    submit_with(page)  # Enter in the field sends its form with its one button, Pause
    assert_error_state(page, {"weeks": "weeks"})
    expect(page.locator("#weeks")).to_have_value("99")

    follow_summary_link(page, 0, "weeks")
    page.keyboard.press("Control+A")
    page.keyboard.type("2")
    submit_with(page)
    expect(page.get_by_text("Paused: we will not email you until")).to_be_visible()


def test_login_by_keyboard(page, session, settings):
    create_user(session, "staff@example.org", PASSWORD, Role.STAFF)
    session.commit()
    page.goto("/admin/login")
    expect(page.locator("#email")).to_be_focused()  # the page's one job: it starts in the first field
    assert assert_keyboard_order(page) == ["password", "Log in"]

    page.locator("#email").focus()
    page.keyboard.type("staff@example.org")
    page.keyboard.press("Tab")
    page.keyboard.type("not the password")
    submit_with(page)
    assert_error_state(page, {"email": "wrong", "password": "password"})
    expect(page.locator("#email")).to_have_value("staff@example.org")
    expect(page.locator("#password")).to_have_value("")

    follow_summary_link(page, 1, "password")
    page.keyboard.type(PASSWORD)
    submit_with(page)
    expect(page.get_by_role("heading", name=re.compile("Welcome"))).to_be_visible()


def test_subscriber_edit_by_keyboard(page, session, settings, make_subscriber):
    create_user(session, "vol@example.org", PASSWORD, Role.VOLUNTEER)
    session.commit()
    ruth = make_subscriber("ruth@example.org", name="Ruth", regions=("africa", "global"))
    log_in(page, "vol@example.org")
    page.goto(f"/admin/subscribers/{ruth.id}")
    assert_keyboard_order(page)

    page.locator("#name").focus()
    page.keyboard.press("Control+A")
    page.keyboard.insert_text("Ruth\u2028Smith")  # pasted from a document, with a line separator
    page.locator("#regions-latin-america").focus()
    page.keyboard.press("Space")
    page.locator("#name").focus()
    submit_with(page)
    assert_error_state(page, {"name": "line break"})
    value = page.locator("#name").input_value()
    assert value.startswith("Ruth") and value.endswith("Smith")
    expect(page.locator("#regions-latin-america")).to_be_checked()  # what was ticked is kept too

    follow_summary_link(page, 0, "name")
    page.keyboard.press("Control+A")
    page.keyboard.type("Ruth Smith")
    submit_with(page)
    expect(page.get_by_text("Saved.")).to_be_visible()
    stored = session.exec(select(Subscriber).where(Subscriber.id == ruth.id)).one()
    session.refresh(stored)
    assert stored.name == "Ruth Smith"
    session.commit()


def test_bulletin_editor_by_keyboard(page, session, settings, make_bulletin):
    create_user(session, "staff@example.org", PASSWORD, Role.STAFF)
    session.commit()
    bulletin = make_bulletin(status=BulletinStatus.DRAFT)
    log_in(page, "staff@example.org")
    page.goto(f"/admin/bulletins/{bulletin.id}")
    assert_keyboard_order(page, limit=40)

    page.locator("#new-region").focus()
    page.keyboard.press("End")  # the last region
    page.locator("#new-body").focus()
    page.keyboard.type("Pray for the volunteers who answer the phones.")
    page.keyboard.press("Tab")  # the editor is one form: its save button follows the last field
    expect(page.get_by_role("button", name="Save all changes")).to_be_focused()
    submit_with(page)
    expect(page.get_by_text("Saved.")).to_be_visible()

    page.locator("#send-at").fill("2020-01-06T07:00:00")
    page.locator("#send-at").focus()
    submit_with(page)
    assert_error_state(page, {"send-at": "passed"})
    expect(page.locator("#send-at")).to_have_value("2020-01-06T07:00")
