"""The standing accessibility check of every page: a crawl from `/`, `/subscribe` and `/admin` as a
visitor, a supporter (the links of their email), a volunteer and staff, with a bulletin being sent so
that the dashboard's sending state is covered. Each page gets axe-core (WCAG 2.2 A and AA: any violation
fails) and a sideways-scroll check at 320 px (WCAG 1.4.10). Best-practice findings are printed, and
their number may not grow past `BEST_PRACTICE_BASELINE`.

Runs on SQLite only: the pages are the same on both databases, and the journeys in
test_keyboard.py (which also run axe on every error state) cover PostgreSQL.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlsplit

import pytest

from newsletter.accounts import create_user
from newsletter.content.types import Recipient
from newsletter.core.status import BulletinStatus, Role
from newsletter.mail.links import Links
from tests.browser.a11y import ROOT, AxeReport, require_axe, run_axe, sideways_scroll

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PASSWORD = "correct horse battery"
BEST_PRACTICE_BASELINE = 0
"""Best-practice findings (page × rule) of the last accepted crawl. Lower it when you fix one."""
MAX_PAGES_PER_ROLE = 60
OUTPUT = ROOT / "test-output"  # the crawl's summary, for the README's audit table

# Never followed: a download (no page), and the opt-in auto-refresh, which is checked on its own below
# (axe's meta-refresh rule cannot know that refreshing was asked for and can be stopped, WCAG 2.2.1).
_NOT_PAGES = re.compile(r"/export\.csv|[?&]live=1|^/static/")
_KEPT_QUERY = {"width", "live", "entity"}


def page_key(url: str) -> str:
    """Pages that differ only in ids, tokens or search terms are one page for the crawl."""
    parts = urlsplit(url)
    path = "/".join(
        "N" if seg.isdigit() else ("T" if len(seg) > 24 else seg) for seg in parts.path.split("/")
    )
    query = sorted({(k, v if k in _KEPT_QUERY else "") for k, v in parse_qsl(parts.query)})
    return f"{path}?{query}" if query else path


def crawl(page, origin: str, seeds: Iterable[str], who: str) -> tuple[list[str], AxeReport, dict[str, int]]:
    """Visit every same-origin page reachable by links from `seeds`: (pages, axe report, scrollers)."""
    queue = deque(seeds)
    seen: set[str] = set()
    visited: list[str] = []
    report = AxeReport()
    scrolling: dict[str, int] = {}
    while queue and len(visited) < MAX_PAGES_PER_ROLE:
        url = queue.popleft().split("#")[0]
        path = url[len(origin) :] if url.startswith(origin) else url
        if not path.startswith("/") or _NOT_PAGES.search(path) or page_key(path) in seen:
            continue
        seen.add(page_key(path))
        response = page.goto(origin + path)
        assert response is not None and response.status < 500, f"{who} {path}: server error"
        if "text/html" not in (response.headers.get("content-type") or ""):
            continue
        landed = page.url[len(origin) :]
        seen.add(page_key(landed))
        visited.append(f"{who} {landed} ({response.status})")
        report.extend(run_axe(page, f"{who} {landed}"))
        overflow = sideways_scroll(page, 320)
        if overflow > 0:
            scrolling[f"{who} {landed}"] = overflow
        queue.extend(page.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"))
    return visited, report, scrolling


def log_in(page, origin: str, email: str) -> None:
    page.goto(origin + "/admin/login")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name=re.compile("Welcome")).wait_for()


@pytest.fixture
def seeds(live_server, session, settings, make_subscriber, make_subscribers, make_bulletin, planned_bulletin):
    """Accounts, subscribers, a bulletin being sent and a draft; the crawl's start pages per role."""
    create_user(session, "staff@example.org", PASSWORD, Role.STAFF)
    create_user(session, "vol@example.org", PASSWORD, Role.VOLUNTEER)
    session.commit()
    make_subscribers(12)
    ruth = make_subscriber("ruth@example.org", name="Ruth")
    pending = make_subscriber("pending@example.org", status="pending")
    sending = planned_bulletin()  # the dashboard's sending state
    draft = make_bulletin(status=BulletinStatus.DRAFT)  # an editable bulletin for the editor
    assert sending.status == BulletinStatus.SENDING
    links = Links(settings)
    emailed = [
        links.preferences_url(ruth.id, ruth.link_secret),
        links.values(Recipient(ruth.email, ruth.name, ruth.id, link_secret=ruth.link_secret))[
            "unsubscribe_url"
        ],
        links.view_url(sending.id, ruth.id, ruth.link_secret),
        links.confirm_url(pending.id, pending.link_secret),
        "/preferences/not-a-real-token",
    ]
    return {
        "visitor": (None, ["/", "/subscribe", "/subscribe/embed", "/admin"]),
        "supporter": (None, [live_server.local(u) for u in emailed]),
        "volunteer": ("vol@example.org", ["/admin", "/admin/bulletins"]),
        "staff": (
            "staff@example.org",
            ["/admin", f"/admin/bulletins/{draft.id}", f"/admin/bulletins/{sending.id}/dashboard"],
        ),
    }


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_every_page_meets_wcag_22_aa_and_reflows_at_320px(browser, live_server, seeds):
    require_axe()
    origin = live_server.url
    pages: list[str] = []
    report = AxeReport()
    scrolling: dict[str, int] = {}
    for who, (email, start) in seeds.items():
        context = browser.new_context(bypass_csp=True, viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(20_000)
        try:
            if email:
                log_in(page, origin, email)
            visited, found, scrollers = crawl(page, origin, start, who)
        finally:
            context.close()
        pages += visited
        report.extend(found)
        scrolling.update(scrollers)

    summary = "\n".join(
        [
            f"accessibility crawl: {len(pages)} pages, {len(report.violations)} WCAG A/AA violations",
            *(f"  {p}" for p in pages),
            f"best-practice findings: {len(report.best_practice)} (baseline {BEST_PRACTICE_BASELINE})",
            *(f"  {f}" for f in report.best_practice),
        ]
    )
    print("\n" + summary)
    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "accessibility-crawl.txt").write_text(summary + "\n", encoding="utf-8")
    assert [str(v) for v in report.violations] == []
    assert scrolling == {}, "pages that scroll sideways at 320 px (CSS px)"
    assert len(report.best_practice) <= BEST_PRACTICE_BASELINE, "new best-practice findings (listed above)"
    covered = " ".join(pages)
    for expected in (
        "visitor / ",
        "/subscribe",
        "/admin/login",
        "/admin/users",
        "/dashboard",
        "/preferences/",
    ):
        assert expected in covered


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_the_dashboard_refreshes_only_on_request_and_can_be_stopped(
    browser, live_server, session, make_subscribers, planned_bulletin
):
    create_user(session, "staff@example.org", PASSWORD, Role.STAFF)
    session.commit()
    make_subscribers(3)
    bulletin = planned_bulletin()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    try:
        log_in(page, live_server.url, "staff@example.org")
        page.goto(f"{live_server.url}/admin/bulletins/{bulletin.id}/dashboard")
        assert page.locator('meta[http-equiv="refresh"]').count() == 0
        page.get_by_role("link", name="Refresh every 5 seconds").click()
        assert page.locator('meta[http-equiv="refresh"]').get_attribute("content") == "5"
        page.get_by_role("link", name="Stop refreshing").click()
        assert page.locator('meta[http-equiv="refresh"]').count() == 0
        assert page.get_by_role("link", name="Refresh", exact=True).count() == 1
    finally:
        context.close()
