"""The admin in a real browser (Playwright driving Debian's chromium): a volunteer's journey and a staff
member's journey, and screenshots of the main pages for the README (`docs/screenshots/admin-*.png`)."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest
from sqlmodel import func, select

from newsletter.accounts import create_user
from newsletter.audience.subscribers import subscriber_regions
from newsletter.core.db import make_engine
from newsletter.core.models import AuditEntry, Bulletin, Delivery, Subscriber, TestSend
from newsletter.core.status import Role
from newsletter.sending.scheduler import SendScheduler

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

pytestmark = [pytest.mark.browser]

PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SAMPLE = Path(__file__).parents[1] / "data" / "prayer-bulletin.txt"


@pytest.fixture
def page(browser, live_server):
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def shoot(page, name: str) -> None:
    """Save a screenshot for the README when NEWSLETTER_SCREENSHOTS=1 (kept out of ordinary runs)."""
    if os.environ.get("NEWSLETTER_SCREENSHOTS"):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"admin-{name}.png"), full_page=True)


def log_in(page, email: str) -> None:
    page.goto("/admin/login")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name=re.compile("Welcome"))).to_be_visible()


def test_volunteer_finds_a_subscriber_among_10k_and_changes_their_regions(
    page, session, make_subscribers, settings
):
    create_user(session, "vol@example.org", PASSWORD, Role.VOLUNTEER)
    session.commit()
    assert make_subscribers(10_000) == 10_000
    target = session.exec(select(Subscriber).where(Subscriber.email == "user4242@example.org")).one()
    target_id = target.id
    session.commit()

    log_in(page, "vol@example.org")
    shoot(page, "home-volunteer")
    page.get_by_role("link", name="Subscribers").click()
    shoot(page, "subscribers")
    page.get_by_label("Any word of the name, or the start of the email").fill("user4242@")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="user4242@example.org").click()
    expect(page.get_by_role("heading", name="user4242@example.org")).to_be_visible()

    for box in page.get_by_role("checkbox").all():
        box.uncheck()
    page.get_by_label("Latin America").check()
    page.get_by_label("South Asia", exact=True).check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("Saved.")).to_be_visible()
    shoot(page, "subscriber")

    assert subscriber_regions(session, [target_id])[target_id] == ["latin-america", "south-asia"]
    session.commit()

    page.get_by_role("link", name="Audit log").click()
    row = page.locator("table.audit tbody tr").first
    expect(row).to_contain_text("vol@example.org")
    expect(row).to_contain_text("subscriber.update")
    expect(row).to_contain_text("latin-america;south-asia")
    shoot(page, "audit")

    expect(page.get_by_role("link", name="Bulletins")).to_have_count(0)
    answer = page.goto("/admin/bulletins")
    assert answer is not None and answer.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()


def test_staff_imports_edits_previews_tests_schedules_and_watches_it_go(
    page, session, make_subscribers, settings
):
    create_user(session, "staff@example.org", PASSWORD, Role.STAFF)
    session.commit()
    make_subscribers(60)
    fast = settings.model_copy(update={"SCHEDULER_TICK_SECONDS": 1.0})
    engine = make_engine(fast.DATABASE_URL)
    scheduler = SendScheduler(fast, engine)
    scheduler.start()
    try:
        log_in(page, "staff@example.org")
        page.get_by_role("navigation", name="Admin").get_by_role("link", name="Bulletins").click()
        page.get_by_role("link", name="Import from text").click()
        page.get_by_label("Paste the text").fill(SAMPLE.read_text("utf-8"))
        page.get_by_role("button", name="Import as draft").click()
        expect(page.get_by_text("as a draft")).to_be_visible()
        bulletin_id = int(page.url.rstrip("/").rsplit("/", 1)[1])

        latin = page.locator(
            "section.region-items", has=page.get_by_role("heading", name=re.compile("^Latin America"))
        )
        latin.get_by_label("Text (Markdown)").first.fill(
            "Praise God for **2,600** officers trained in Guatemala."
        )
        page.get_by_role("button", name="Save all changes").click()
        expect(page.get_by_text("Saved.")).to_be_visible()
        shoot(page, "bulletin-editor")

        page.get_by_role("link", name="Preview & test send").click()
        for box in page.locator("form[method=get] input[type=checkbox]").all():
            box.uncheck()
        page.get_by_label("Latin America").check()
        page.get_by_label("South Asia", exact=True).check()
        page.get_by_role("button", name="Show this mix").click()
        frame = page.frame_locator("#preview-html")
        headings = frame.locator("h2.region")
        expect(headings).to_have_text(["Latin America", "South Asia"])
        expect(frame.locator("body")).to_contain_text("2,600")
        # Sandboxed without allow-scripts: nothing in the email runs (same-origin only lets the page size it).
        expect(page.locator("#preview-html")).to_have_attribute("sandbox", "allow-same-origin")
        shoot(page, "preview")
        page.get_by_role("link", name="phone").click()
        expect(frame.locator("h2.region")).to_have_count(2)

        page.get_by_label("To").fill("staff@example.org")
        page.get_by_role("button", name="Send test").click()
        expect(page.get_by_text("Sent 1 test message")).to_be_visible()
        tests = list((Path(settings.OUTBOX_DIR) / "direct").glob("*.eml"))
        assert len(tests) == 1
        message = tests[0].read_text()
        assert "Subject: [TEST]" in message and "Guatemala" in message and "Lake Volta" not in message

        page.goto(f"/admin/bulletins/{bulletin_id}")
        # Far enough ahead to see it "ready" first; any further only makes the test wait.
        when = (page.evaluate("Date.now()") / 1000) + 20
        from datetime import UTC, datetime

        local = datetime.fromtimestamp(when, UTC).astimezone(settings.tz)
        page.get_by_label(re.compile("^Send at")).fill(local.strftime("%Y-%m-%dT%H:%M:%S"))
        page.get_by_role("button", name="Schedule").click()
        expect(page.get_by_text("Scheduled for")).to_be_visible()
        expect(page.locator("#bulletin-status")).to_have_text("ready")
        shoot(page, "dashboard-scheduled")
        page.get_by_role("link", name="Refresh every 5 seconds").click()  # live refresh is opt-in
        expect(page.locator("#bulletin-status")).to_have_text("sent", timeout=120_000)
        shoot(page, "dashboard")

        total = session.exec(
            select(func.count()).select_from(Delivery).where(Delivery.bulletin_id == bulletin_id)
        ).one()
        accepted = session.exec(
            select(func.count())
            .select_from(Delivery)
            .where(Delivery.bulletin_id == bulletin_id, Delivery.status == "accepted")
        ).one()
        bulletin = session.get(Bulletin, bulletin_id)
        assert bulletin is not None and bulletin.status == "sent"
        assert bulletin.started_at is not None and bulletin.send_at is not None
        assert bulletin.started_at >= bulletin.send_at - timedelta(seconds=1)
        assert session.exec(select(func.count()).select_from(TestSend)).one() == 1
        session.commit()
        assert total == accepted == 60
        expect(page.locator('[data-status="total"]')).to_have_text(str(total))
        expect(page.locator('[data-status="accepted"]')).to_have_text(str(accepted))
        expect(page.locator("#progress-done")).to_have_text(str(total))
        assert len(list((Path(settings.OUTBOX_DIR) / f"bulletin-{bulletin_id}").glob("*.eml"))) == total

        page.goto("/admin/audit")
        expect(page.locator("table.audit")).to_contain_text("bulletin.test_send")
        assert (
            session.exec(select(AuditEntry).where(AuditEntry.action == "bulletin.item.edit")).first()
            is not None
        )
        session.commit()
    finally:
        scheduler.shutdown()
        engine.dispose()
