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


def test_the_editor_saves_every_item_in_one_form_and_asks_before_deleting(staff_page, make_bulletin, session):
    from sqlmodel import select

    from newsletter.core.models import Bulletin, Item

    bulletin = make_bulletin(status="draft")
    page = staff_page()
    page.goto(f"/admin/bulletins/{bulletin.id}")
    assert page.locator("form#editor textarea").count() >= 4  # heading + every item in one form
    page.get_by_label("Title").fill("Edited title")
    bodies = page.locator("textarea[name^='body-']")
    bodies.nth(0).fill("First item, edited")
    bodies.nth(1).fill("Second item, edited")
    page.locator("select[name^='kind-']").nth(1).select_option("plain")
    page.get_by_label("Text (Markdown; left blank, nothing is added)").fill("A new item")
    page.get_by_role("button", name="Save all changes").click()
    expect(page.get_by_text("Saved.")).to_be_visible()
    session.expire_all()
    stored = [(i.body, i.kind) for i in session.exec(select(Item).where(Item.bulletin_id == bulletin.id))]
    assert "First item, edited" in [b for b, _ in stored]
    assert ("Second item, edited", "plain") in stored and ("A new item", "pray") in stored
    assert session.get(Bulletin, bulletin.id).title == "Edited title"
    session.commit()
    shoot(page, "admin-bulletin-editor")

    # Delete asks first; "Keep it" keeps it, and the other edits made meanwhile are saved.
    second = session.exec(select(Item.id).where(Item.body == "Second item, edited")).one()
    session.commit()
    page.locator("textarea[name^='body-']").nth(0).fill("First item, edited again")
    page.locator(f"#item-{second}").get_by_role("button", name="Delete…").click()
    expect(page.get_by_role("heading", name="Delete this item?")).to_be_visible()
    shoot(page, "admin-confirm-delete")
    page.get_by_role("link", name="Keep it").click()
    session.expire_all()
    assert session.exec(select(Item).where(Item.body == "Second item, edited")).first() is not None
    assert session.exec(select(Item).where(Item.body == "First item, edited again")).first() is not None
    session.commit()
    page.locator(f"#item-{second}").get_by_role("button", name="Delete…").click()
    page.get_by_role("button", name="Delete the item").click()
    expect(page.get_by_text("Item deleted.")).to_be_visible()
    session.expire_all()
    assert session.exec(select(Item).where(Item.body == "Second item, edited")).first() is None
    session.commit()

    # Cancelling the bulletin asks first too.
    page.get_by_role("button", name="Cancel bulletin").click()
    expect(page.get_by_role("heading", name=re.compile("^Cancel “"))).to_be_visible()
    shoot(page, "admin-confirm-cancel")
    page.get_by_role("button", name="Cancel the bulletin").click()
    expect(page.get_by_text("Cancelled: it will not be sent.")).to_be_visible()
