"""Zoom and text spacing: the supporters' pages and the emails stay usable at 200% zoom (WCAG 1.4.4)
and with WCAG 1.4.12's text spacing. Nothing scrolls sideways, no text is cut off by its box, and every
form control stays inside the window.

200% zoom of a 1280 × 900 window is what a 640 × 450 CSS-pixel viewport at device scale 2 shows, which
is how Chromium lays out a zoomed page. Runs on SQLite only (the pages do not depend on the database).
"""

from __future__ import annotations

import pytest

from newsletter.content.types import Recipient
from newsletter.mail.links import Links
from tests.browser.a11y import add_text_spacing, clipped_text
from tests.browser.test_accessibility_emails import emails

pytestmark = [pytest.mark.browser]

ZOOMED = {"width": 640, "height": 450}

_CONTROLS_OUTSIDE = """() => Array.from(document.querySelectorAll('input:not([type=hidden]), select, textarea, button'))
  .filter(el => !el.closest('.hp-field') && el.getClientRects().length)
  .filter(el => { const b = el.getBoundingClientRect(); return b.left < 0 || b.right > document.documentElement.clientWidth + 1; })
  .map(el => el.id || el.name || el.textContent.trim())"""


def check(page, where: str) -> None:
    overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"{where} scrolls sideways by {overflow}px"
    assert clipped_text(page) == [], where
    assert page.evaluate(_CONTROLS_OUTSIDE) == [], where


def public_pages(live_server, settings, make_subscriber) -> dict[str, str]:
    ruth = make_subscriber("ruth@example.org", name="Ruth")
    return {
        "subscribe": "/subscribe",
        "preferences": live_server.local(Links(settings).preferences_url(ruth.id, ruth.link_secret))[
            len(live_server.url) :
        ],
        "unsubscribe": live_server.local(
            Links(settings).values(Recipient(ruth.email, ruth.name, ruth.id, link_secret=ruth.link_secret))[
                "unsubscribe_url"
            ]
        )[len(live_server.url) :],
        "bad link": "/preferences/not-a-real-token",
    }


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_public_pages_and_emails_at_200_percent_zoom(
    browser, live_server, settings, make_subscriber, sample_text
):
    context = browser.new_context(viewport=ZOOMED, device_scale_factor=2)
    live_server.route_base_url(context)  # the subscription form posts to BASE_URL
    page = context.new_page()
    try:
        for name, path in public_pages(live_server, settings, make_subscriber).items():
            page.goto(live_server.url + path)
            check(page, f"{name} at 200%")
        page.goto(live_server.url + "/subscribe")
        page.get_by_role("button", name="Subscribe").click()  # the error state, with its summary
        assert page.locator("#error-summary").is_visible()
        check(page, "subscribe errors at 200%")
        page.route("**/*", lambda route: route.abort())
        for kind, (_, html) in emails(settings, sample_text).items():
            page.set_content(html)
            check(page, f"{kind} email at 200%")
    finally:
        context.close()


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("width", [375, 1280])
def test_public_pages_and_emails_keep_their_text_with_wcag_text_spacing(
    browser, live_server, settings, make_subscriber, sample_text, width
):
    context = browser.new_context(viewport={"width": width, "height": 900})
    page = context.new_page()
    try:
        for name, path in public_pages(live_server, settings, make_subscriber).items():
            page.goto(live_server.url + path)
            add_text_spacing(page)
            check(page, f"{name} with text spacing at {width}px")
        page.route("**/*", lambda route: route.abort())
        for kind, (_, html) in emails(settings, sample_text).items():
            page.set_content(html)
            add_text_spacing(page)
            check(page, f"{kind} email with text spacing at {width}px")
    finally:
        context.close()
