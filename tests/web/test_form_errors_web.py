"""Refused admin forms over HTTP: the page comes back with "Error:" in its title, the bad fields
marked (`aria-invalid`, `aria-describedby`) and what was typed (never a password); and the delivery
dashboard reloads only when asked to (WCAG 2.2.1)."""

from __future__ import annotations

import re

import httpx
import pytest

from newsletter.accounts import create_user
from newsletter.core.status import Role
from tests.web.test_admin import PASSWORD, STAFF, VOLUNTEER, csrf_of, login


@pytest.fixture
def people(session):
    create_user(session, STAFF, PASSWORD, Role.STAFF)
    create_user(session, VOLUNTEER, PASSWORD, Role.VOLUNTEER)
    session.commit()


@pytest.fixture
def as_staff(live_server, people):
    with login(live_server, STAFF) as client:
        yield client


@pytest.fixture
def as_volunteer(live_server, people):
    with login(live_server, VOLUNTEER) as client:
        yield client


def marked(page: str, element_id: str) -> str:
    """The opening tag of the element `element_id`, asserting that it is marked invalid and described."""
    tag = re.search(rf'<(?:input|textarea|select)\b[^>]*\bid="{element_id}"[^>]*>', page)
    assert tag, element_id
    assert 'aria-invalid="true"' in tag.group(0), tag.group(0)
    assert f'aria-describedby="{element_id}-error"' in tag.group(0) or f'{element_id}-error"' in tag.group(0)
    assert f'id="{element_id}-error"' in page
    assert f'<a href="#{element_id}">' in page  # the summary links to it
    return tag.group(0)


def title(page: str) -> str:
    found = re.search(r"<title>(.*?)</title>", page, re.S)
    assert found
    return found.group(1)


def test_a_failed_login_marks_both_fields_and_keeps_the_address(live_server, people):
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        token = csrf_of(client)
        answer = client.post(
            "/admin/login", data={"email": STAFF, "password": "wrong password!", "csrf_token": token}
        )
    assert answer.status_code == 401
    assert title(answer.text).startswith("Error: Log in")
    assert f'value="{STAFF}"' in marked(answer.text, "email")
    assert "wrong password!" not in marked(answer.text, "password")


def test_a_refused_subscriber_edit_keeps_what_was_typed(as_volunteer, make_subscriber, session):
    ruth = make_subscriber("ruth@example.org", name="Ruth", regions=("africa",))
    session.commit()
    token = csrf_of(as_volunteer, f"/admin/subscribers/{ruth.id}")
    answer = as_volunteer.post(
        f"/admin/subscribers/{ruth.id}",
        data={
            "csrf_token": token,
            "name": "Ruth\tSmith",
            "regions": ["africa", "global"],
            "status": "active",
        },
    )
    assert answer.status_code == 400
    assert title(answer.text).startswith("Error: ")
    assert 'value="Ruth\tSmith"' in marked(answer.text, "name")
    assert re.search(r'id="regions-global"[^>]*checked', answer.text)
    assert 'class="notice notice-error"' not in answer.text  # the summary replaces the old banner


def test_a_refused_account_names_each_field(as_staff):
    token = csrf_of(as_staff, "/admin/users")
    answer = as_staff.post(
        "/admin/users",
        data={"csrf_token": token, "email": "not-an-address", "role": "staff", "password": "short"},
    )
    assert answer.status_code == 400
    assert 'value="not-an-address"' in marked(answer.text, "email")
    assert 'value="short"' not in marked(answer.text, "password")
    assert re.search(r'<option value="staff" selected>', answer.text)


def test_a_refused_test_send_comes_back_once_on_the_preview(as_staff, make_bulletin):
    bulletin = make_bulletin()
    token = csrf_of(as_staff, "/admin/users")
    answer = as_staff.post(
        f"/admin/bulletins/{bulletin.id}/test-send",
        data={"csrf_token": token, "to": "ruth@example.org, nobody", "variant": "all"},
    )
    assert answer.status_code == 303
    page = as_staff.get(answer.headers["location"]).text
    assert title(page).startswith("Error: ")
    assert 'value="ruth@example.org, nobody"' in marked(page, "to")
    again = as_staff.get(answer.headers["location"]).text
    assert not title(again).startswith("Error: ") and 'aria-invalid="true"' not in again


def test_the_dashboard_reloads_only_when_asked(as_staff, make_subscribers, planned_bulletin):
    make_subscribers(3)
    bulletin = planned_bulletin()
    url = f"/admin/bulletins/{bulletin.id}/dashboard"
    plain = as_staff.get(url).text
    assert 'http-equiv="refresh"' not in plain
    assert f'href="{url}?live=1"' in plain and f'href="{url}">Refresh</a>' in plain
    live = as_staff.get(url + "?live=1").text
    assert '<meta http-equiv="refresh" content="5">' in live
    assert f'<a href="{url}">Stop refreshing</a>' in live


def test_the_bulletins_table_has_no_empty_header(as_staff, make_bulletin):
    make_bulletin()
    page = as_staff.get("/admin/bulletins").text
    assert not re.search(r'<th scope="col">\s*</th>', page)
