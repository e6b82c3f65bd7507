"""The admin over HTTP on a live server: who may do what, CSRF, and that a refused request changes
nothing; then the main flows (subscriber edit, import, export, bulletin editing, preview, test send)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlmodel import select

from newsletter.accounts import LoginRefused, create_user
from newsletter.audience.subscribers import subscriber_regions
from newsletter.core.models import AuditEntry, Bulletin, Delivery, Item, Subscriber, TestSend
from newsletter.core.status import Role
from newsletter.sending import lifecycle

PASSWORD = "correct horse battery"
STAFF = "staff@example.org"
VOLUNTEER = "volunteer@example.org"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


@pytest.fixture
def accounts(session):
    create_user(session, STAFF, PASSWORD, Role.STAFF)
    create_user(session, VOLUNTEER, PASSWORD, Role.VOLUNTEER)
    session.commit()


def csrf_of(client: httpx.Client, path: str = "/admin/login") -> str:
    page = client.get(path)
    assert page.status_code == 200, (path, page.status_code)
    match = _TOKEN.search(page.text)
    assert match, page.text[:500]
    return match.group(1)


@contextmanager
def login(live_server, email: str) -> Iterator[httpx.Client]:
    """An HTTP client logged in as `email` (its own session and CSRF token)."""
    with httpx.Client(base_url=live_server.url, follow_redirects=False, timeout=30) as client:
        token = csrf_of(client)
        answer = client.post("/admin/login", data={"email": email, "password": PASSWORD, "csrf_token": token})
        assert answer.status_code == 303, answer.text[:500]
        yield client


@pytest.fixture
def fresh_client(live_server):
    with httpx.Client(base_url=live_server.url, follow_redirects=False, timeout=30) as client:
        yield client


@pytest.fixture
def staff(live_server, accounts):
    with login(live_server, STAFF) as client:
        yield client


@pytest.fixture
def volunteer(live_server, accounts):
    with login(live_server, VOLUNTEER) as client:
        yield client


@pytest.fixture
def new_subscriber(make_subscriber, session):
    """`make_subscriber` that also ends its read transaction, so the live server can write (SQLite)."""

    def make(**kwargs):
        person = make_subscriber(**kwargs)
        session.commit()
        return person

    return make


def audit_count(session) -> int:
    count = len(session.exec(select(AuditEntry.id)).all())
    session.commit()  # end the read: on SQLite (BEGIN IMMEDIATE) it would hold the lock the server needs
    return count


# --- refusals -----------------------------------------------------------------------------------------


def test_logged_out_pages_redirect_to_login_and_posts_are_refused(
    live_server, accounts, new_subscriber, session
):
    person = new_subscriber(name="Ada")
    client = live_server.client
    page = client.get("/admin/subscribers")
    assert page.status_code == 303 and page.headers["location"].startswith("/admin/login?next=")
    before = audit_count(session)
    answer = client.post(f"/admin/subscribers/{person.id}", data={"name": "Mallory", "regions": ["africa"]})
    assert answer.status_code == 401
    session.expire_all()
    assert session.get(Subscriber, person.id).name == "Ada"
    assert audit_count(session) == before


def test_a_form_without_its_csrf_token_is_refused_and_changes_nothing(volunteer, new_subscriber, session):
    person = new_subscriber(name="Ada", regions=["africa", "global"])
    before = audit_count(session)
    for token in (None, "forged-token"):
        data = {"name": "Changed", "regions": ["south-asia"], "status": "active"}
        if token:
            data["csrf_token"] = token
        answer = volunteer.post(f"/admin/subscribers/{person.id}", data=data)
        assert answer.status_code == 403
        assert "Nothing was changed" in answer.text
    session.expire_all()
    assert session.get(Subscriber, person.id).name == "Ada"
    assert subscriber_regions(session, [person.id])[person.id] == ["africa", "global"]
    assert audit_count(session) == before


def test_the_token_of_one_session_does_not_work_in_another(
    live_server, accounts, volunteer, new_subscriber, session
):
    person = new_subscriber(name="Ada")
    with login(live_server, STAFF) as other:
        foreign = csrf_of(other, "/admin/subscribers")
    answer = volunteer.post(f"/admin/subscribers/{person.id}", data={"name": "X", "csrf_token": foreign})
    assert answer.status_code == 403


def test_a_volunteer_posting_to_a_staff_url_gets_403_and_nothing_changes(volunteer, make_bulletin, session):
    bulletin = make_bulletin(status="draft")
    token = csrf_of(volunteer, "/admin/subscribers")
    before = audit_count(session)
    posts = [
        (f"/admin/bulletins/{bulletin.id}/status", {"action": "cancel"}),
        (f"/admin/bulletins/{bulletin.id}", {"title": "Hijacked"}),
        (f"/admin/bulletins/{bulletin.id}/test-send", {"to": "x@example.org", "variant": "all"}),
        ("/admin/users", {"email": "evil@example.org", "role": "staff", "password": PASSWORD}),
    ]
    for path, data in posts:
        answer = volunteer.post(path, data={**data, "csrf_token": token})
        assert answer.status_code == 403, path
    session.expire_all()
    fresh = session.get(Bulletin, bulletin.id)
    assert (fresh.status, fresh.title) == ("draft", bulletin.title)
    assert session.exec(select(TestSend)).all() == []
    assert audit_count(session) == before


ROLE_MATRIX = [
    ("/admin", 200, 200),
    ("/admin/subscribers", 200, 200),
    ("/admin/subscribers/import", 200, 200),
    ("/admin/subscribers/export.csv", 200, 200),
    ("/admin/audit", 200, 200),
    ("/admin/bulletins", 403, 200),
    ("/admin/bulletins/import", 403, 200),
    ("/admin/bulletins/{b}", 403, 200),
    ("/admin/bulletins/{b}/preview", 403, 200),
    ("/admin/bulletins/{b}/dashboard", 403, 200),
    ("/admin/users", 403, 200),
]


def test_role_matrix(live_server, accounts, make_bulletin):
    bulletin = make_bulletin()
    with login(live_server, VOLUNTEER) as volunteer, login(live_server, STAFF) as staff:
        for path, as_volunteer, as_staff in ROLE_MATRIX:
            url = path.format(b=bulletin.id)
            assert volunteer.get(url).status_code == as_volunteer, url
            assert staff.get(url).status_code == as_staff, url
            assert live_server.client.get(url).status_code == 303, url


def test_session_cookie_is_httponly_samesite_lax_and_signed(live_server, accounts, fresh_client):
    client = fresh_client
    token = csrf_of(client)
    answer = client.post("/admin/login", data={"email": STAFF, "password": PASSWORD, "csrf_token": token})
    cookie = answer.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "secure" not in cookie
    client.cookies.clear()
    client.cookies.set("newsletter_admin", "eyJ1aWQiOiAxfQ==.forged")
    assert client.get("/admin").status_code == 303


def test_wrong_password_is_refused_and_repeated_failures_make_this_client_wait(
    accounts, settings, fresh_client
):
    client = fresh_client
    for _ in range(settings.LOGIN_MAX_FAILURES):
        token = csrf_of(client)
        answer = client.post(
            "/admin/login", data={"email": STAFF, "password": "nope nope nope", "csrf_token": token}
        )
        assert answer.status_code == 401
    token = csrf_of(client)
    throttled = client.post("/admin/login", data={"email": STAFF, "password": PASSWORD, "csrf_token": token})
    message = str(LoginRefused())
    assert throttled.status_code == 401 and message in throttled.text and message in answer.text


def test_login_redirects_only_inside_the_admin(accounts, fresh_client):
    client = fresh_client
    token = csrf_of(client)
    answer = client.post(
        "/admin/login",
        data={"email": STAFF, "password": PASSWORD, "csrf_token": token, "next": "https://evil.example/"},
    )
    assert answer.headers["location"] == "/admin"


def test_logout_ends_the_session(staff):
    token = csrf_of(staff, "/admin")
    assert staff.post("/admin/logout", data={"csrf_token": token}).status_code == 303
    assert staff.get("/admin").status_code == 303


# --- subscribers --------------------------------------------------------------------------------------


def test_volunteer_finds_a_subscriber_by_name_or_email_and_filters(
    volunteer, make_subscribers, new_subscriber
):
    make_subscribers(300)
    new_subscriber(email="ada@lovelace.example", name="Ada Lovelace", regions=["south-asia"])
    by_name = volunteer.get("/admin/subscribers", params={"q": "ada lov"})
    assert "ada@lovelace.example" in by_name.text
    by_email = volunteer.get("/admin/subscribers", params={"q": "ada@"})
    assert "ada@lovelace.example" in by_email.text and "user1@" not in by_email.text
    fallback = volunteer.get("/admin/subscribers", params={"q": "user12"})
    assert "user12@example.org" in fallback.text
    filtered = volunteer.get("/admin/subscribers", params={"q": "ada", "region": "africa"})
    assert "ada@lovelace.example" not in filtered.text


def test_keyset_pages_cover_every_subscriber_once(volunteer, make_subscribers):
    make_subscribers(130)
    seen: list[str] = []
    url: str | None = "/admin/subscribers?status=active"
    while url:
        page = volunteer.get(url)
        seen += re.findall(r'<a href="/admin/subscribers/\d+">([^<]+)</a>', page.text)
        nxt = re.search(r'rel="next" href="([^"]+)"', page.text)
        url = nxt.group(1).replace("&amp;", "&") if nxt else None
    assert len(seen) == 130 and len(set(seen)) == 130


def test_volunteer_edits_name_and_regions_and_the_change_is_audited(volunteer, new_subscriber, session):
    person = new_subscriber(name="Ada", regions=["africa"])
    token = csrf_of(volunteer, f"/admin/subscribers/{person.id}")
    answer = volunteer.post(
        f"/admin/subscribers/{person.id}",
        data={
            "csrf_token": token,
            "name": "Ada L.",
            "regions": ["latin-america", "south-asia"],
            "status": "active",
        },
    )
    assert answer.status_code == 303
    session.expire_all()
    assert session.get(Subscriber, person.id).name == "Ada L."
    assert subscriber_regions(session, [person.id])[person.id] == ["latin-america", "south-asia"]
    entry = session.exec(select(AuditEntry).where(AuditEntry.action == "subscriber.update")).one()
    assert entry.actor == VOLUNTEER and "latin-america;south-asia" in entry.changes
    session.commit()
    history = volunteer.get(f"/admin/subscribers/{person.id}").text
    assert "subscriber.update" in history and VOLUNTEER in history


@pytest.mark.parametrize("lost", ["unsubscribed", "bounced", "complained"])
def test_a_lost_address_cannot_be_reactivated(volunteer, new_subscriber, session, lost):
    person = new_subscriber(status=lost)
    token = csrf_of(volunteer, f"/admin/subscribers/{person.id}")
    answer = volunteer.post(
        f"/admin/subscribers/{person.id}",
        data={"csrf_token": token, "name": person.name, "regions": ["africa"], "status": "active"},
    )
    assert answer.status_code == 400
    session.expire_all()
    assert session.get(Subscriber, person.id).status == lost


def test_unsubscribing_in_the_admin_suppresses_the_address(volunteer, new_subscriber, session):
    from newsletter.audience.suppressions import is_suppressed

    person = new_subscriber()
    token = csrf_of(volunteer, f"/admin/subscribers/{person.id}")
    volunteer.post(
        f"/admin/subscribers/{person.id}",
        data={"csrf_token": token, "name": person.name, "regions": ["africa"], "status": "unsubscribed"},
    )
    session.expire_all()
    assert session.get(Subscriber, person.id).status == "unsubscribed"
    assert is_suppressed(session, person.email)


def test_csv_upload_reports_bad_rows_by_line_and_stores_the_good_ones(volunteer, session):
    token = csrf_of(volunteer, "/admin/subscribers/import")
    body = (
        "email,name,regions\nok@example.org,Ok,africa\nnot-an-address,Bad,africa\nok2@example.org,Ok2,mars\n"
    )
    answer = volunteer.post(
        "/admin/subscribers/import",
        data={"csrf_token": token},
        files={"file": ("people.csv", body.encode(), "text/csv")},
    )
    assert answer.status_code == 200
    assert "1 new" in answer.text and re.search(r"<td>3</td><td>invalid email", answer.text)
    assert re.search(r"<td>4</td><td>unknown region", answer.text)
    session.expire_all()
    assert [s.email for s in session.exec(select(Subscriber)).all()] == ["ok@example.org"]


def test_export_is_the_import_format(volunteer, new_subscriber):
    new_subscriber(email="a@example.org", name="A, with comma", regions=["africa", "global"])
    new_subscriber(email="b@example.org", name="B", regions=["south-asia"])
    answer = volunteer.get("/admin/subscribers/export.csv", params={"region": "africa"})
    assert answer.headers["content-type"].startswith("text/csv")
    assert answer.text.startswith("\ufeff")  # Excel reads the file as UTF-8
    rows = list(csv.reader(io.StringIO(answer.text.removeprefix("\ufeff"))))
    assert rows == [
        ["email", "name", "regions", "status", "timezone"],
        ["a@example.org", "A, with comma", "africa;global", "active", ""],
    ]


# --- bulletins ----------------------------------------------------------------------------------------


def test_staff_imports_edits_reorders_and_deletes_items(staff, session, sample_text):
    token = csrf_of(staff, "/admin/bulletins/import")
    answer = staff.post("/admin/bulletins/import", data={"csrf_token": token, "text": sample_text})
    assert answer.status_code == 303
    bulletin_id = int(answer.headers["location"].rsplit("/", 1)[1])
    items = session.exec(select(Item).where(Item.bulletin_id == bulletin_id).order_by(Item.position)).all()
    first = items[0]
    region_id = first.region_id
    session.commit()
    staff.post(
        f"/admin/bulletins/{bulletin_id}/items/{first.id}",
        data={"csrf_token": token, "body": "Edited **item**", "kind": "praise", "region": "africa"},
    )
    staff.post(
        f"/admin/bulletins/{bulletin_id}/items",
        data={"csrf_token": token, "body": "New second item", "kind": "pray", "region": "africa"},
    )
    session.expire_all()
    africa = session.exec(
        select(Item)
        .where(Item.bulletin_id == bulletin_id, Item.region_id == region_id)
        .order_by(Item.position)
    ).all()
    assert africa[0].body == "Edited **item**" and africa[0].kind == "praise"
    session.commit()
    staff.post(
        f"/admin/bulletins/{bulletin_id}/items/{africa[-1].id}/move",
        data={"csrf_token": token, "direction": "up"},
    )
    staff.post(
        f"/admin/bulletins/{bulletin_id}/items/{africa[0].id}/delete",
        data={"csrf_token": token, "confirmed": "yes"},
    )
    session.expire_all()
    bodies = [
        i.body
        for i in session.exec(
            select(Item)
            .where(Item.bulletin_id == bulletin_id, Item.region_id == region_id)
            .order_by(Item.position)
        )
    ]
    assert bodies[0] == "New second item" and "Edited **item**" not in bodies


def test_a_bad_import_stores_nothing_and_says_why(staff, session):
    token = csrf_of(staff, "/admin/bulletins/import")
    answer = staff.post("/admin/bulletins/import", data={"csrf_token": token, "text": ""})
    assert answer.status_code == 400 and "Nothing was stored" in answer.text
    assert session.exec(select(Bulletin)).all() == []


def test_schedule_is_entered_and_shown_in_the_configured_time_zone(staff, make_bulletin, session):
    bulletin = make_bulletin(status="draft")
    token = csrf_of(staff, f"/admin/bulletins/{bulletin.id}")
    answer = staff.post(
        f"/admin/bulletins/{bulletin.id}/status",
        data={"csrf_token": token, "action": "schedule", "send_at": "2099-07-01T09:30"},
    )
    assert answer.status_code == 303
    session.expire_all()
    fresh = session.get(Bulletin, bulletin.id)
    assert fresh.status == "ready" and fresh.send_at.isoformat().startswith("2099-07-01T08:30")  # BST
    session.commit()
    assert "09:30 BST" in staff.get(f"/admin/bulletins/{bulletin.id}").text
    for action, status in [("pause", "paused"), ("resume", "ready"), ("cancel", "cancelled")]:
        staff.post(
            f"/admin/bulletins/{bulletin.id}/status",
            data={"csrf_token": token, "action": action, "confirmed": "yes"},
        )
        session.expire_all()
        assert session.get(Bulletin, bulletin.id).status == status
        session.commit()


def test_preview_shows_exactly_the_chosen_regions_and_the_matrix(staff, make_bulletin, new_subscriber):
    bulletin = make_bulletin()
    new_subscriber(regions=["latin-america", "south-asia"])
    new_subscriber(regions=["latin-america", "south-asia"])
    new_subscriber(regions=["africa"])
    page = staff.get(
        f"/admin/bulletins/{bulletin.id}/preview",
        params={"regions": ["latin-america", "south-asia"], "width": "phone"},
    )
    assert page.status_code == 200
    frame = re.search(r'<iframe[^>]*sandbox="allow-same-origin"[^>]*srcdoc="([^"]*)"', page.text)
    assert frame, "the email is in a sandboxed iframe (no scripts; same origin so the page can size it)"
    assert "Guatemala" in frame.group(1) and "Lake Volta" not in frame.group(1)
    assert re.search(r"Latin America \+ South Asia</a></td><td class=\"num\">2<", page.text)
    assert re.search(r"Africa</a></td><td class=\"num\">1<", page.text)


def test_test_send_goes_to_the_outbox_with_test_marks_and_is_not_a_delivery(
    staff, make_bulletin, session, settings
):
    bulletin = make_bulletin()
    token = csrf_of(staff, f"/admin/bulletins/{bulletin.id}/preview")
    answer = staff.post(
        f"/admin/bulletins/{bulletin.id}/test-send",
        data={
            "csrf_token": token,
            "to": "me@example.org, you@example.org",
            "variant": "latin-america,south-asia",
        },
    )
    assert answer.status_code == 303
    files = sorted(Path(settings.OUTBOX_DIR).rglob("*.eml"))
    assert len(files) == 2
    message = files[0].read_text()
    assert "Subject: [TEST]" in message
    session.expire_all()
    sends = session.exec(select(TestSend)).all()
    assert [(t.variant, t.recipients) for t in sends] == [
        ("latin-america,south-asia", "me@example.org, you@example.org")
    ]
    assert session.exec(select(Delivery)).all() == []


def test_dashboard_counts_the_ledger(staff, make_bulletin, make_subscribers, session, settings):
    from newsletter.core.db import make_engine
    from newsletter.sending import dispatcher

    make_subscribers(20)
    bulletin = make_bulletin()
    lifecycle.send_now(session, bulletin.id)
    session.commit()
    engine = make_engine(settings.DATABASE_URL)
    dispatcher.Dispatcher(settings, engine).run_until_done(bulletin.id)
    engine.dispose()
    page = staff.get(f"/admin/bulletins/{bulletin.id}/dashboard").text
    assert 'id="bulletin-status" class="badge status-sent">sent<' in page
    assert re.search(r'data-status="accepted">20<', page) and re.search(r'data-status="total">20<', page)
    assert 'http-equiv="refresh"' not in page


def test_staff_manage_accounts(staff, session):
    token = csrf_of(staff, "/admin/users")
    staff.post(
        "/admin/users",
        data={"csrf_token": token, "email": "new@example.org", "role": "volunteer", "password": PASSWORD},
    )
    from newsletter.core.models import User

    session.expire_all()
    new = session.exec(select(User).where(User.email == "new@example.org")).one()
    session.commit()
    staff.post(f"/admin/users/{new.id}", data={"csrf_token": token, "action": "disable"})
    session.expire_all()
    assert not session.get(User, new.id).is_active


def test_volunteer_sets_a_time_zone_and_a_bad_one_changes_nothing(volunteer, new_subscriber, session):
    person = new_subscriber(name="Ada", regions=["africa"])
    page = volunteer.get(f"/admin/subscribers/{person.id}").text
    assert (
        '<option value="" selected>(the default zone)</option>' in page
        and '<option value="Asia/Kathmandu">Asia/Kathmandu</option>' in page
    )
    token = csrf_of(volunteer, f"/admin/subscribers/{person.id}")
    data = {"csrf_token": token, "name": "Ada", "regions": ["africa"], "status": "active"}
    refused = volunteer.post(f"/admin/subscribers/{person.id}", data={**data, "timezone": "Mars/Olympus"})
    assert refused.status_code == 400 and "unknown time zone" in refused.text
    session.expire_all()
    assert session.get(Subscriber, person.id).timezone is None
    session.commit()
    answer = volunteer.post(f"/admin/subscribers/{person.id}", data={**data, "timezone": "Asia/Kathmandu"})
    assert answer.status_code == 303
    session.expire_all()
    assert session.get(Subscriber, person.id).timezone == "Asia/Kathmandu"
    entry = session.exec(select(AuditEntry).where(AuditEntry.action == "subscriber.timezone")).one()
    assert entry.actor == VOLUNTEER and "Asia/Kathmandu" in entry.changes
    session.commit()
    assert (
        '<option value="Asia/Kathmandu" selected>Asia/Kathmandu</option>'
        in volunteer.get(f"/admin/subscribers/{person.id}").text
    )


def test_staff_schedule_in_local_time_and_see_the_zones(staff, make_bulletin, session, settings):
    from datetime import datetime, timedelta

    from newsletter.audience.subscribers import import_subscribers
    from newsletter.content.regions import RegionIndex
    from newsletter.core import zones
    from newsletter.core.db import make_engine
    from newsletter.sending import dispatcher

    csv_text = "email,name,regions,timezone\nk@example.org,K,africa,Pacific/Kiritimati\nl@example.org,L,africa,Etc/GMT+12\n"
    assert import_subscribers(session, csv_text, RegionIndex.from_db(session, settings)).ok
    bulletin = make_bulletin(status="draft")
    wall = (datetime.now() + timedelta(days=3)).replace(hour=7, minute=0, second=0, microsecond=0)
    first, last = zones.first_and_last(wall)
    token = csrf_of(staff, f"/admin/bulletins/{bulletin.id}")
    data = {
        "csrf_token": token,
        "action": "schedule",
        "send_at": wall.strftime("%Y-%m-%dT%H:%M"),
        "local": "yes",
    }
    answer = staff.post(f"/admin/bulletins/{bulletin.id}/status", data=data)
    assert answer.status_code == 303
    session.expire_all()
    fresh = session.get(Bulletin, bulletin.id)
    assert (fresh.status, fresh.local_send_at, fresh.send_at) == ("ready", zones.format_wall(wall), first)
    session.commit()
    shown = first.astimezone(settings.tz).strftime("%a %d %b %Y, %H:%M")
    assert "each subscriber" in (page := staff.get(f"/admin/bulletins/{bulletin.id}").text) and shown in page
    last_shown = last.astimezone(settings.tz).strftime("%a %d %b %Y, %H:%M")
    assert last_shown in staff.get(f"/admin/bulletins/{bulletin.id}/preview").text

    # Started at the first zone (a clock set to it): the timeline shows Kiritimati sent, GMT+12 waiting.
    engine = make_engine(settings.DATABASE_URL)
    worker = dispatcher.Dispatcher(settings, engine, clock=lambda: first)
    worker.tick()
    engine.dispose()
    page = staff.get(f"/admin/bulletins/{bulletin.id}/dashboard").text
    kiritimati = re.search(r'data-zone="Pacific/Kiritimati".*?</tr>', page, re.S)
    waiting = re.search(r'data-zone="Etc/GMT\+12">.*?</tr>', page, re.S)
    assert kiritimati and '<td class="num">1</td><td class="num">0</td>' in kiritimati.group(0)
    assert (
        waiting
        and "(not yet)" in waiting.group(0)
        and '<td class="num">0</td><td class="num">1</td>' in waiting.group(0)
    )
