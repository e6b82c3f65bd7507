"""The same rules through both doors: each test runs once through the CLI and once through the admin over
HTTP, and asserts the same outcome in the database. A rule kept in only one door fails here.

    empty bulletins are never made ready, scheduled or sent;
    item edits (add, edit, move, delete) give the same items and the same audit entries, and a bulletin
    that has started sending cannot be edited;
    a staff status change suppresses the address by the rule ESP events follow; a lost address stays lost;
    a staff edit never leaves a subscriber in no region (that would export and re-import as all regions);
    a test send is recorded as a TestSend, never as a delivery.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import httpx
import pytest
from sqlmodel import Session, col, select

from newsletter.accounts import create_user
from newsletter.audience.queries import subscriber_regions
from newsletter.audience.suppressions import find
from newsletter.content.bulletins import store_bulletin
from newsletter.content.types import BulletinContent
from newsletter.core.models import AuditEntry, Bulletin, Delivery, Item, Subscriber, TestSend
from newsletter.core.status import BulletinStatus, Role, SuppressionReason

STAFF = "doors@example.org"
PASSWORD = "correct horse battery"
_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')


class Door(Protocol):
    """One way in. Each call returns what the person saw (output or the page after the redirect) and
    whether the door said no (non-zero exit, an error message or a 4xx)."""

    def __call__(self, action: str, *args: str | int, **form: str) -> tuple[bool, str]: ...


class CliDoor:
    def __init__(self, cli: Callable[..., object]) -> None:
        from typer.testing import CliRunner

        from newsletter.cli import app

        self.runner, self.app = CliRunner(), app

    def __call__(self, action: str, *args: str | int, **form: str) -> tuple[bool, str]:
        argv = _CLI[action](*args, **form)
        result = self.runner.invoke(self.app, argv)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result.exit_code != 0, result.output


_CLI: dict[str, Callable[..., list[str]]] = {
    "ready": lambda b: ["bulletins", "ready", str(b)],
    "schedule": lambda b, at: ["bulletins", "schedule", str(b), "--at", at],
    "add": lambda b, **f: ["bulletins", "items", "add", str(b), *_options(f)],
    "edit": lambda b, i, **f: ["bulletins", "items", "edit", str(b), str(i), *_options(f)],
    "move": lambda b, i, way: ["bulletins", "items", "move", str(b), str(i), way],
    "delete": lambda b, i: ["bulletins", "items", "delete", str(b), str(i)],
    "subscriber": lambda s, **f: ["subscribers", "update", str(s), *_options(f)],
    "test-send": lambda b, **f: ["bulletins", "test-send", str(b), *_options(f)],
}


def _options(form: dict[str, str]) -> list[str]:
    return [part for key, value in form.items() for part in (f"--{key}", value)]


class AdminDoor:
    def __init__(self, client: httpx.Client) -> None:
        self.client = client
        self.token = _TOKEN.search(client.get("/admin/bulletins").text).group(1)  # type: ignore[union-attr]

    def __call__(self, action: str, *args: str | int, **form: str) -> tuple[bool, str]:
        path, data = _ADMIN[action](*args, **form)
        answer = self.client.post(path, data={**data, "csrf_token": self.token})
        if answer.status_code == 303:
            answer = self.client.get(answer.headers["location"])
        refused = answer.status_code >= 400 or "notice-error" in answer.text
        return refused, answer.text


_ADMIN: dict[str, Callable[..., tuple[str, dict[str, str | list[str]]]]] = {
    "ready": lambda b: (f"/admin/bulletins/{b}/status", {"action": "ready"}),
    "schedule": lambda b, at: (f"/admin/bulletins/{b}/status", {"action": "schedule", "send_at": at}),
    "add": lambda b, **f: (f"/admin/bulletins/{b}/items", f),
    "edit": lambda b, i, **f: (f"/admin/bulletins/{b}/items/{i}", f),
    "move": lambda b, i, way: (f"/admin/bulletins/{b}/items/{i}/move", {"direction": way}),
    "delete": lambda b, i: (
        f"/admin/bulletins/{b}/items/{i}/delete",
        {"confirmed": "yes"},
    ),  # past the confirm step
    "subscriber": lambda s, **f: (
        f"/admin/subscribers/{s}",
        {**f, "regions": [c for c in f["regions"].split(";") if c]} if "regions" in f else f,
    ),
    "test-send": lambda b, **f: (f"/admin/bulletins/{b}/test-send", f),
}


@pytest.fixture(params=["cli", "admin"])
def door(request: pytest.FixtureRequest, session: Session) -> Iterator[Door]:
    if request.param == "cli":
        yield CliDoor(request.getfixturevalue("cli"))
        return
    create_user(session, STAFF, PASSWORD, Role.STAFF)
    session.commit()
    live_server = request.getfixturevalue("live_server")
    with httpx.Client(base_url=live_server.url, follow_redirects=False, timeout=30) as client:
        token = _TOKEN.search(client.get("/admin/login").text).group(1)  # type: ignore[union-attr]
        answer = client.post("/admin/login", data={"email": STAFF, "password": PASSWORD, "csrf_token": token})
        assert answer.status_code == 303
        yield AdminDoor(client)


@pytest.fixture
def empty_bulletin(session: Session) -> int:
    """The id of a draft bulletin without items (committed; the session holds no transaction)."""
    content = BulletinContent(
        title="Nothing yet", subject="Nothing yet", scripture_text="", scripture_reference="", sections=()
    )
    bulletin_id = store_bulletin(session, content).id
    session.commit()
    assert bulletin_id is not None
    return bulletin_id


def _fresh(session: Session, model: type, key: int):  # type: ignore[no-untyped-def]
    session.expire_all()
    found = session.get(model, key)
    session.commit()  # end the read, so that the other door can write (SQLite has one writer)
    return found


def test_an_empty_bulletin_is_never_made_ready_or_scheduled(door, empty_bulletin, session):
    refused, said = door("ready", empty_bulletin)
    assert refused and "without items" in said
    refused, said = door("schedule", empty_bulletin, "2099-07-01T09:30")
    assert refused and "without items" in said
    fresh = _fresh(session, Bulletin, empty_bulletin)
    assert fresh.status == BulletinStatus.DRAFT and fresh.send_at is None


def test_an_empty_bulletin_is_never_sent(cli, empty_bulletin, session):
    """`newsletter send` (the admin's send starts from a ready bulletin, which an empty one never is)."""
    result = cli("send", str(empty_bulletin), code=1)
    assert "without items" in result.output
    assert _fresh(session, Bulletin, empty_bulletin).status == BulletinStatus.DRAFT
    assert session.exec(select(Delivery)).all() == []


def _items(session: Session, bulletin_id: int) -> list[tuple[str, str, str]]:
    session.expire_all()
    rows = session.exec(
        select(Item).where(Item.bulletin_id == bulletin_id).order_by(col(Item.position), col(Item.id))
    ).all()
    session.commit()
    return [(str(i.region_id), str(i.kind), i.body) for i in rows]


def test_item_edits_give_the_same_items_and_audit_entries(door, empty_bulletin, session):
    b = empty_bulletin
    assert not door("add", b, region="africa", body="First", kind="pray")[0]
    door("add", b, region="africa", body="Second", kind="pray")
    door("add", b, region="global", body="Elsewhere", kind="praise")
    first, second, elsewhere = (i for i in _item_ids(session, b))
    assert not door("edit", b, first, body="First, edited", kind="praise")[0]
    assert not door("move", b, second, "up")[0]
    assert not door("delete", b, elsewhere)[0]
    bodies = [body for _, _, body in _items(session, b)]
    assert bodies == ["Second", "First, edited"]
    refused, said = door("add", b, region="atlantis", body="Nowhere", kind="pray")
    assert refused and "atlantis" in said
    refused, said = door("edit", b, first, body="   ", kind="pray")
    assert refused and "needs some text" in said
    actions = session.exec(
        select(AuditEntry.action).where(AuditEntry.entity_id == b).order_by(col(AuditEntry.id))
    ).all()
    assert [a for a in actions if a.startswith("bulletin.item")] == [
        "bulletin.item.add",
        "bulletin.item.add",
        "bulletin.item.add",
        "bulletin.item.edit",
        "bulletin.item.move",
        "bulletin.item.delete",
    ]


def _item_ids(session: Session, bulletin_id: int) -> list[int]:
    session.expire_all()
    ids = session.exec(select(Item.id).where(Item.bulletin_id == bulletin_id).order_by(col(Item.id))).all()
    session.commit()
    return [i for i in ids if i is not None]


def test_a_bulletin_that_started_sending_cannot_be_edited(door, planned_bulletin, session):
    b = planned_bulletin().id
    item_id = _item_ids(session, b)[0]
    before = _items(session, b)
    refused, said = door("edit", b, item_id, body="Too late", kind="pray")
    assert refused and "can no longer be edited" in said
    refused, _said = door("delete", b, item_id)
    assert refused
    assert _items(session, b) == before


@pytest.mark.parametrize(
    ("status", "reason"),
    [("bounced", SuppressionReason.BOUNCE), ("complained", SuppressionReason.COMPLAINT)],
)
def test_a_staff_status_change_suppresses_as_an_esp_event_would(
    door, make_subscriber, session, status, reason
):
    person = make_subscriber(regions=["africa"])
    sid, email, name = person.id, person.email, person.name
    session.commit()
    refused, _said = door("subscriber", sid, name=name, status=status, regions="africa")
    assert not refused
    assert _fresh(session, Subscriber, sid).status == status
    suppression = find(session, email)
    assert suppression is not None and suppression.reason == reason
    session.commit()
    refused, _said = door("subscriber", sid, name=name, status="active", regions="africa")
    assert refused
    assert _fresh(session, Subscriber, sid).status == status


def test_a_staff_edit_changes_name_and_regions(door, make_subscriber, session):
    sid = make_subscriber(name="Ada", regions=["africa"]).id
    session.commit()
    refused, _said = door("subscriber", sid, name="Ada L.", status="active", regions="south-asia;global")
    assert not refused
    assert _fresh(session, Subscriber, sid).name == "Ada L."
    assert subscriber_regions(session, [sid])[sid] == ["south-asia", "global"]
    session.commit()
    refused, said = door("subscriber", sid, name="Ada", status="active", regions="mars")
    assert refused and "mars" in said
    assert _fresh(session, Subscriber, sid).name == "Ada L."


def test_a_staff_edit_never_leaves_a_subscriber_in_no_region(door, make_subscriber, session):
    # No box ticked in the admin, `--regions ''` on the command line.
    sid = make_subscriber(name="Ada", regions=["africa"]).id
    session.commit()
    refused, said = door("subscriber", sid, name="Ada L.", status="active", regions="")
    assert refused and "at least one region" in said
    session.expire_all()
    assert subscriber_regions(session, [sid])[sid] == ["africa"]
    assert _fresh(session, Subscriber, sid).name == "Ada"  # nothing else was saved either


def test_a_staff_edit_sets_the_time_zone_and_refuses_an_unknown_one(door, make_subscriber, session):
    sid = make_subscriber(name="Ada", regions=["africa"]).id
    session.commit()
    refused, said = door(
        "subscriber", sid, name="Ada", status="active", regions="africa", timezone="Mars/Base"
    )
    assert refused and "unknown time zone" in said
    assert _fresh(session, Subscriber, sid).timezone is None
    session.commit()
    refused, _said = door(
        "subscriber", sid, name="Ada", status="active", regions="africa", timezone="Asia/Manila"
    )
    assert not refused
    assert _fresh(session, Subscriber, sid).timezone == "Asia/Manila"


def test_a_test_send_is_a_test_send_never_a_delivery(door, make_bulletin, session, settings):
    b = make_bulletin().id
    session.commit()
    refused, _said = door("test-send", b, to="me@example.org", variant="africa")
    assert not refused
    assert len(list(Path(settings.OUTBOX_DIR).rglob("*.eml"))) == 1
    session.expire_all()
    sends = session.exec(select(TestSend)).all()
    assert [(t.variant, t.recipients, t.error) for t in sends] == [("africa", "me@example.org", "")]
    assert session.exec(select(Delivery)).all() == []
    session.commit()
    refused, said = door("test-send", b, to="not an address", variant="africa")
    assert refused and "not an email address" in said
    session.expire_all()
    assert len(session.exec(select(TestSend)).all()) == 1
