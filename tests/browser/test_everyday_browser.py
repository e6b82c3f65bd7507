"""Everyday admin work in a real browser: the preview sized to its email, and the admin on a phone.

Screenshots go to `docs/screenshots/` when NEWSLETTER_SCREENSHOTS=1.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from newsletter.accounts import create_user
from newsletter.core.status import Role

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser]

PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
PHONE = {"width": 375, "height": 740}


def shoot(page, name: str) -> None:
    if os.environ.get("NEWSLETTER_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@pytest.fixture
def staff_page(browser, live_server, session):
    create_user(session, "staff@example.org", PASSWORD, Role.STAFF)
    session.commit()

    def open_page(viewport: dict[str, int] | None = None):
        context = browser.new_context(
            base_url=live_server.url, viewport=viewport or {"width": 1280, "height": 900}
        )
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.goto("/admin/login")
        page.get_by_label("Email address").fill("staff@example.org")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Log in").click()
        expect(page.get_by_role("heading", name=re.compile("Welcome"))).to_be_visible()
        contexts.append(context)
        return page

    contexts: list = []
    yield open_page
    for context in contexts:
        context.close()


def frame_fits(page) -> tuple[int, int]:
    """(the frame's height, its content's height) in CSS pixels."""
    return page.evaluate(
        """() => { const f = document.querySelector('#preview-html');
                   return [f.getBoundingClientRect().height, f.contentDocument.documentElement.scrollHeight]; }"""
    )


def test_the_preview_frame_is_as_tall_as_the_email(staff_page, make_bulletin):
    bulletin = make_bulletin()
    page = staff_page()
    for width in ("desktop", "phone"):
        page.goto(f"/admin/bulletins/{bulletin.id}/preview?width={width}")
        expect(page.locator("#preview-html")).to_have_class(re.compile("fitted"))
        frame, content = frame_fits(page)
        assert content > 900 and abs(frame - content) <= 1, (width, frame, content)  # no scroll inside
    shoot(page, "admin-preview-fitted")


PAGES = [
    "/admin",
    "/admin/subscribers",
    "/admin/bulletins",
    "/admin/bulletins/{b}",
    "/admin/audit",
    "/admin/bulletins/{b}/preview?width=phone",
    "/admin/bulletins/{b}/dashboard",
    "/admin/users",
]


def test_the_admin_fits_a_phone(staff_page, make_bulletin, make_subscriber):
    bulletin = make_bulletin()
    make_subscriber(email="a.very.long.address.for.testing@example.org", name="Priyadarshini Ramanathan-Nair")
    page = staff_page(PHONE)
    for path in PAGES:
        page.goto(path.format(b=bulletin.id))
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], (path, width)
    page.goto("/admin/subscribers")
    name = page.get_by_text("Priyadarshini Ramanathan-Nair")
    expect(name).to_be_visible()
    box = name.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    shoot(page, "admin-subscribers-phone")
    page.goto(f"/admin/bulletins/{bulletin.id}")
    shoot(page, "admin-bulletin-editor-phone")
