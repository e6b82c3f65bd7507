"""The supporters' side over HTTP, against the app on a real uvicorn: subscribe with double opt-in,
confirm, the preference centre, my-data links, one-click unsubscribe, view online, and what forged
links get."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from newsletter.audience import my_data as my_data_links
from newsletter.audience import name_change, suppressions
from newsletter.audience.subscribers import import_subscribers, subscriber_regions
from newsletter.content.regions import RegionIndex
from newsletter.core.config import Settings
from newsletter.core.db import session_scope
from newsletter.core.models import AuditEntry, Delivery, Subscriber, Suppression, email_hash
from newsletter.core.status import SubscriberStatus, SuppressionReason
from newsletter.mail.tokens import Purpose, make_token
from newsletter.sending.dispatcher import Dispatcher
from newsletter.sending.lifecycle import send_now
from tests.factories import MakeBulletin, MakeSubscriber, csv_for
from tests.fixtures_web import LiveServer, start_live_server

TOKEN = r"[A-Za-z0-9_-]{40}"
NEUTRAL = "Check your inbox"


# --- helpers: the outbox, the database -------------------------------------------------------------
def token_for(settings: Settings, who: Subscriber, purpose: Purpose, **kwargs: object) -> str:
    """A token as the app makes it: bound to the subscriber's `link_secret`."""
    assert who.id is not None
    return make_token(settings.secret_keys, who.id, purpose, secret=who.link_secret, **kwargs)  # type: ignore[arg-type]


def confirm_via(server: LiveServer, link: str) -> object:
    """Open a confirm link as a person does: the page (which changes nothing), then its button."""
    page = server.client.get(link)
    assert page.status_code in (200, 400), page.text
    if page.status_code != 200:
        return page
    assert 'method="post"' in page.text
    return server.client.post(link)


def read_eml(path: Path) -> EmailMessage:
    message: EmailMessage = BytesParser(policy=policy.default).parsebytes(path.read_bytes())  # type: ignore[assignment]
    return message


def text_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content())


_LIVE: list[LiveServer] = []
"""The test's server: emails go out after the response, so reading the outbox first waits for them."""


def confirmation_emails(settings: Settings, to: str) -> list[EmailMessage]:
    for live in _LIVE:
        assert live.app.state.background.wait_idle(30), "background emails still running"
    folder = Path(settings.OUTBOX_DIR) / "direct"
    found = [read_eml(p) for p in sorted(folder.glob("*.eml"))] if folder.is_dir() else []
    return [m for m in found if to in str(m["To"])]


def link_in(message: EmailMessage, path: str) -> str:
    match = re.search(rf"https?://\S+/{path}/{TOKEN}", text_of(message))
    assert match, f"no /{path}/ link in the email"
    return match.group(0)


def headings(message: EmailMessage) -> list[str]:
    """The region headings of a bulletin's text part (a line underlined with dashes)."""
    lines = text_of(message).splitlines()
    return [a for a, b in itertools.pairwise(lines) if a.strip() and b == "-" * len(a)]


def read(engine: Engine, fn: Callable[[Session], object]) -> object:
    """Run `fn` in a short session (SQLite takes the write lock at BEGIN: never hold one open)."""
    with Session(engine, expire_on_commit=False) as s:
        return fn(s)


def subscriber(engine: Engine, email: str) -> Subscriber | None:
    found = read(engine, lambda s: s.exec(select(Subscriber).where(Subscriber.email == email)).first())
    assert found is None or isinstance(found, Subscriber)
    return found


def regions_of(engine: Engine, sid: int) -> list[str]:
    return read(engine, lambda s: subscriber_regions(s, [sid])[sid])  # type: ignore[return-value]


def audit_count(engine: Engine) -> int:
    return int(
        read(engine, lambda s: s.execute(sa.select(sa.func.count()).select_from(AuditEntry)).scalar_one())
    )  # type: ignore[arg-type]


def send_bulletin(settings: Settings, engine: Engine, bulletin_id: int) -> dict[str, EmailMessage]:
    """Send a bulletin now through the outbox; its messages by recipient address."""
    with session_scope(engine) as s:
        send_now(s, bulletin_id)
    Dispatcher(settings, engine).run_until_done(bulletin_id, max_wait=0.2)
    folder = Path(settings.OUTBOX_DIR) / f"bulletin-{bulletin_id}"
    messages = [read_eml(p) for p in folder.glob("*.eml")] if folder.is_dir() else []
    return {m["To"].addresses[0].addr_spec: m for m in messages}


@pytest.fixture
def server(live_server: LiveServer) -> Iterator[LiveServer]:
    _LIVE[:] = [live_server]
    yield live_server
    _LIVE.clear()


@pytest.fixture
def subscribe(server: LiveServer) -> Callable[..., object]:
    def post(email: str, regions: tuple[str, ...] = ("africa",), name: str = "", **extra: str) -> object:
        data: dict[str, object] = {"email": email, "name": name, "regions": list(regions), **extra}
        return server.client.post("/subscribe", data=data)

    return post


# --- the whole journey -----------------------------------------------------------------------------
def test_the_whole_journey_from_subscribe_to_one_click_unsubscribe(
    settings: Settings,
    engine: Engine,
    server: LiveServer,
    make_bulletin: MakeBulletin,
    make_subscriber: MakeSubscriber,
) -> None:
    make_subscriber("someone.else@example.org")  # so that every bulletin has a recipient

    form = server.client.get("/subscribe")
    assert form.status_code == 200 and 'name="email"' in form.text and 'name="website"' in form.text
    answer = server.client.post(
        "/subscribe",
        data={
            "email": "Ada@Example.org",
            "name": "Ada Lovelace",
            "regions": ["africa", "global"],
            "website": "",
        },
    )
    assert answer.status_code == 200 and NEUTRAL in answer.text
    ada = subscriber(engine, "ada@example.org")
    assert ada is not None and ada.status == SubscriberStatus.PENDING and ada.id is not None
    assert regions_of(engine, ada.id) == ["africa", "global"]

    # The confirmation email arrives; its link confirms.
    (email,) = confirmation_emails(settings, "ada@example.org")
    link = server.local(link_in(email, "confirm"))
    assert "Confirm your subscription" in server.client.get(link).text  # GET alone changes nothing
    assert subscriber(engine, "ada@example.org").status == SubscriberStatus.PENDING  # type: ignore[union-attr]
    confirmed = server.client.post(link)
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text
    ada = subscriber(engine, "ada@example.org")
    assert ada is not None and ada.status == SubscriberStatus.ACTIVE and ada.confirmed_at is not None

    # The next bulletin has exactly the chosen regions.
    first = send_bulletin(settings, engine, make_bulletin().id)["ada@example.org"]
    assert headings(first) == ["AFRICA", "HQ & GLOBAL PARTNERS"]

    # Change regions in the preference centre (link from the bulletin itself).
    preferences = server.local(link_in(first, "preferences"))
    page = server.client.get(preferences)
    assert page.status_code == 200 and "ada@example.org" in page.text
    saved = server.client.post(preferences, data={"action": "regions", "regions": ["south-asia"]})
    assert saved.status_code == 200 and "Your regions are saved" in saved.text
    second = send_bulletin(settings, engine, make_bulletin().id)["ada@example.org"]
    assert headings(second) == ["SOUTH ASIA"]

    # One-click POST to the URL of the email's own List-Unsubscribe header, as Gmail does it.
    assert second["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    url = re.search(r"<(https?://[^>]+)>", str(second["List-Unsubscribe"]))
    assert url is not None
    done = server.client.post(server.local(url.group(1)), data={"List-Unsubscribe": "One-Click"})
    assert done.status_code == 200 and not done.is_redirect and "You are unsubscribed" in done.text
    ada = subscriber(engine, "ada@example.org")
    assert ada is not None and ada.status == SubscriberStatus.UNSUBSCRIBED

    third = send_bulletin(settings, engine, make_bulletin().id)
    assert "ada@example.org" not in third and "someone.else@example.org" in third


# --- subscribing -----------------------------------------------------------------------------------
def test_the_honeypot_pretends_success_and_stores_nothing(settings, engine, subscribe) -> None:
    answer = subscribe("bot@example.org", website="http://spam.example")
    assert answer.status_code == 200 and NEUTRAL in answer.text
    assert subscriber(engine, "bot@example.org") is None
    assert confirmation_emails(settings, "bot@example.org") == []


def test_form_mistakes_are_shown_next_to_the_fields(engine, subscribe) -> None:
    answer = subscribe("not-an-address", regions=())
    assert answer.status_code == 400
    assert "valid email address" in answer.text and "at least one region" in answer.text
    assert 'aria-invalid="true"' in answer.text and 'value="not-an-address"' in answer.text
    bad_name = subscribe("ok@example.org", name="Eve\r\nBcc: victim@example.org")
    assert bad_name.status_code == 400 and subscriber(engine, "ok@example.org") is None


def test_an_active_address_resubscribing_changes_nothing_and_reveals_nothing(
    settings, engine, subscribe, make_subscriber
) -> None:
    ada = make_subscriber("ada@example.org", regions=["africa"])
    before = audit_count(engine)
    answer = subscribe("ada@example.org", regions=("global",), name="Someone Else")
    assert answer.status_code == 200 and NEUTRAL in answer.text
    again = subscriber(engine, "ada@example.org")
    assert again is not None and again.status == SubscriberStatus.ACTIVE and again.name == ada.name
    assert regions_of(engine, ada.id) == ["africa"]
    assert confirmation_emails(settings, "ada@example.org") == []
    assert audit_count(engine) == before


def test_an_unsubscribed_address_comes_back_only_through_confirmation(
    settings, engine, server, subscribe, make_subscriber
) -> None:
    ada = make_subscriber("ada@example.org", regions=["africa"])
    server.client.post(f"/unsubscribe/{token_for(settings, ada, Purpose.UNSUBSCRIBE)}")
    assert read(engine, lambda s: suppressions.is_suppressed(s, "ada@example.org"))

    # Whoever typed the address may not be its owner: nothing of the stored subscription changes.
    assert NEUTRAL in subscribe("ada@example.org", regions=("global",), name="Someone Else").text
    untouched = subscriber(engine, "ada@example.org")
    assert untouched is not None and untouched.status == SubscriberStatus.UNSUBSCRIBED
    assert untouched.name == ada.name and regions_of(engine, ada.id) == ["africa"]
    (email,) = confirmation_emails(settings, "ada@example.org")
    assert "Someone Else" not in email.as_string()
    assert confirm_via(server, server.local(link_in(email, "confirm"))).status_code == 200  # type: ignore[attr-defined]
    active = subscriber(engine, "ada@example.org")
    assert active is not None and active.status == SubscriberStatus.ACTIVE
    assert regions_of(engine, ada.id) == ["africa"]
    assert not read(engine, lambda s: suppressions.is_suppressed(s, "ada@example.org"))


@pytest.mark.parametrize(
    "reason", [SuppressionReason.BOUNCE, SuppressionReason.COMPLAINT, SuppressionReason.MANUAL]
)
def test_a_suppressed_address_gets_the_same_page_and_nothing_is_sent(
    settings, engine, subscribe, reason
) -> None:
    with session_scope(engine) as s:
        suppressions.add(s, "gone@example.org", reason)
    answer = subscribe("gone@example.org")
    assert answer.status_code == 200 and NEUTRAL in answer.text
    assert subscriber(engine, "gone@example.org") is None
    assert confirmation_emails(settings, "gone@example.org") == []


def test_confirming_twice_is_harmless(settings, engine, server, subscribe) -> None:
    subscribe("ada@example.org")
    (email,) = confirmation_emails(settings, "ada@example.org")
    link = server.local(link_in(email, "confirm"))
    assert "You are subscribed" in server.client.post(link).text
    again = server.client.post(link)
    assert again.status_code == 200 and "already subscribed" in again.text


def test_confirmation_emails_are_limited_per_address(settings, engine, subscribe) -> None:
    for _ in range(settings.SUBSCRIBE_LIMIT_PER_ADDRESS + 2):
        assert NEUTRAL in subscribe("ada@example.org").text
    assert len(confirmation_emails(settings, "ada@example.org")) == settings.SUBSCRIBE_LIMIT_PER_ADDRESS


def test_confirmation_emails_are_limited_per_client_ip(settings, engine) -> None:
    strict = settings.model_copy(update={"SUBSCRIBE_LIMIT_PER_IP": 2})
    with start_live_server(strict) as server:
        answers = [
            server.client.post("/subscribe", data={"email": f"p{i}@example.org", "regions": ["africa"]})
            for i in range(3)
        ]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert "try again" in answers[2].text
    assert subscriber(engine, "p2@example.org") is None


def test_the_embeddable_snippet_posts_to_the_public_address(settings, server) -> None:
    page = server.client.get("/subscribe/embed")
    assert page.status_code == 200
    assert f'action="{settings.BASE_URL}/subscribe"' in page.text  # the live form
    assert "&lt;form" in page.text  # and the same form as text to copy


# --- links that must not work ------------------------------------------------------------------------
@pytest.fixture
def ada(make_subscriber: MakeSubscriber) -> Subscriber:
    return make_subscriber("ada@example.org", regions=["africa", "global"])


def _bad_tokens(settings: Settings, who: Subscriber, purpose: Purpose) -> dict[str, tuple[str, int]]:
    good = token_for(settings, who, purpose)
    other = Purpose.PREFERENCES if purpose is not Purpose.PREFERENCES else Purpose.UNSUBSCRIBE
    forged = good[:-3] + ("AAA" if not good.endswith("AAA") else "BBB")
    ttl = (
        timedelta(seconds=settings.CONFIRM_TTL)
        if purpose is Purpose.CONFIRM
        else timedelta(days=settings.TOKEN_TTL_DAYS)
    )
    old = datetime.now(UTC) - ttl - timedelta(days=1)
    return {
        "forged": (forged, 400),
        "truncated": (good[:-1], 400),
        "wrong purpose": (token_for(settings, who, other), 400),
        "expired": (token_for(settings, who, purpose, now=old), 400),
        "other key": (
            make_token(["another-secret-key-0123456789"], who.id or 0, purpose, secret=who.link_secret),
            400,
        ),
        "not bound to the secret": (make_token(settings.secret_keys, who.id or 0, purpose), 400),
        "unknown subscriber": (make_token(settings.secret_keys, 999_999, purpose), 400),
        "id beyond what a column holds": (make_token(settings.secret_keys, 2**64 - 1, purpose), 400),
    }


@pytest.mark.parametrize(
    ("method", "path", "purpose", "data"),
    [
        ("GET", "/confirm/{t}", Purpose.CONFIRM, None),
        ("POST", "/confirm/{t}", Purpose.CONFIRM, None),
        ("GET", "/preferences/{t}", Purpose.PREFERENCES, None),
        ("POST", "/preferences/{t}", Purpose.PREFERENCES, {"action": "unsubscribe"}),
        ("POST", "/preferences/{t}", Purpose.PREFERENCES, {"action": "regions", "regions": "south-asia"}),
        ("GET", "/my-data/{t}", Purpose.MY_DATA, None),
        ("POST", "/my-data/{t}", Purpose.MY_DATA, {"action": "erase", "confirm_erase": "yes"}),
        ("GET", "/unsubscribe/{t}", Purpose.UNSUBSCRIBE, None),
        ("POST", "/unsubscribe/{t}", Purpose.UNSUBSCRIBE, {"List-Unsubscribe": "One-Click"}),
        ("GET", "/view/1/{t}", Purpose.VIEW, None),
    ],
)
def test_bad_links_get_a_clear_page_and_change_nothing(
    settings, engine, server, ada, method, path, purpose, data
) -> None:
    before = audit_count(engine)
    for label, (token, status) in _bad_tokens(settings, ada, purpose).items():
        answer = server.client.request(method, path.format(t=token), data=data)
        assert answer.status_code == status, label
        assert "Nothing was changed" in answer.text, label
        assert answer.headers["referrer-policy"] == "no-referrer"
    after = subscriber(engine, "ada@example.org")
    assert after is not None and after.status == SubscriberStatus.ACTIVE
    assert regions_of(engine, ada.id) == ["africa", "global"]
    assert not read(engine, lambda s: suppressions.is_suppressed(s, "ada@example.org"))
    assert audit_count(engine) == before


def test_an_expired_confirm_link_says_so(settings, server, subscribe, engine) -> None:
    subscribe("ada@example.org")
    pending = subscriber(engine, "ada@example.org")
    assert pending is not None and pending.id is not None
    token, _ = _bad_tokens(settings, pending, Purpose.CONFIRM)["expired"]
    answer = server.client.get(f"/confirm/{token}")
    assert answer.status_code == 400 and "expired" in answer.text and "subscribe again" in answer.text
    still = subscriber(engine, "ada@example.org")
    assert still is not None and still.status == SubscriberStatus.PENDING


# --- unsubscribe -----------------------------------------------------------------------------------
def test_get_on_the_unsubscribe_link_never_unsubscribes(settings, engine, server, ada) -> None:
    url = f"/unsubscribe/{token_for(settings, ada, Purpose.UNSUBSCRIBE)}"
    for _ in range(3):  # a mail scanner, a link preview, the person
        page = server.client.get(url)
        assert page.status_code == 200
    assert page.text.count("<button") == 1 and 'method="post"' in page.text
    still = subscriber(engine, "ada@example.org")
    assert still is not None and still.status == SubscriberStatus.ACTIVE
    assert not read(engine, lambda s: suppressions.is_suppressed(s, "ada@example.org"))


@pytest.mark.parametrize("encoding", ["urlencoded", "multipart", "empty"])
def test_one_click_unsubscribe_takes_effect_at_once_without_cookie_or_redirect(
    settings, engine, server, ada, encoding
) -> None:
    url = f"/unsubscribe/{token_for(settings, ada, Purpose.UNSUBSCRIBE)}"
    if encoding == "urlencoded":
        answer = server.client.post(url, data={"List-Unsubscribe": "One-Click"})
    elif encoding == "multipart":
        answer = server.client.post(url, files={"List-Unsubscribe": (None, "One-Click")})
    else:
        answer = server.client.post(url)
    assert answer.status_code == 200 and not answer.is_redirect
    assert "set-cookie" not in answer.headers
    gone = subscriber(engine, "ada@example.org")
    assert gone is not None and gone.status == SubscriberStatus.UNSUBSCRIBED and gone.unsubscribed_at
    found = read(engine, lambda s: suppressions.find(s, "ada@example.org"))
    assert isinstance(found, Suppression) and found.reason == SuppressionReason.UNSUBSCRIBE
    # Twice is the same as once.
    assert server.client.post(url, data={"List-Unsubscribe": "One-Click"}).status_code == 200


# --- the preference centre ---------------------------------------------------------------------------
@pytest.fixture
def prefs(settings: Settings, ada: Subscriber) -> str:
    return f"/preferences/{token_for(settings, ada, Purpose.PREFERENCES)}"


def test_regions_need_at_least_one(engine, server, ada, prefs) -> None:
    answer = server.client.post(prefs, data={"action": "regions"})
    assert answer.status_code == 400 and "at least one region" in answer.text
    assert regions_of(engine, ada.id) == ["africa", "global"]


def test_pause_for_some_weeks_and_resume(engine, server, ada, prefs) -> None:
    answer = server.client.post(prefs, data={"action": "pause", "weeks": "3"})
    assert answer.status_code == 200 and "Paused" in answer.text
    paused = subscriber(engine, "ada@example.org")
    assert paused is not None and paused.paused_until is not None
    assert abs(paused.paused_until - (datetime.now(UTC) + timedelta(weeks=3))) < timedelta(minutes=5)
    assert server.client.post(prefs, data={"action": "pause", "weeks": "0"}).status_code == 400
    assert server.client.post(prefs, data={"action": "resume"}).status_code == 200
    resumed = subscriber(engine, "ada@example.org")
    assert resumed is not None and resumed.paused_until is None


def test_a_paused_subscriber_is_skipped_by_the_next_bulletin(
    settings, engine, server, ada, prefs, make_bulletin
) -> None:
    server.client.post(prefs, data={"action": "pause", "weeks": "2"})
    assert "ada@example.org" not in send_bulletin(settings, engine, make_bulletin().id)


def test_every_change_is_audited_as_the_subscriber(engine, server, ada, prefs) -> None:
    server.client.post(prefs, data={"action": "regions", "regions": ["global"]})
    server.client.post(prefs, data={"action": "pause", "weeks": "1"})
    server.client.post(prefs, data={"action": "unsubscribe"})
    entries = read(
        engine,
        lambda s: s.exec(
            select(AuditEntry.action)
            .where(AuditEntry.actor == "subscriber", AuditEntry.entity_id == ada.id)
            .order_by(AuditEntry.id)
        ).all(),
    )
    assert entries == ["subscriber.regions", "subscriber.pause", "subscriber.unsubscribe"]


def test_the_preference_centre_shows_the_name_and_changes_it(settings, engine, server, ada, prefs) -> None:
    page = server.client.get(prefs)
    assert re.search(rf'<input id="name" name="name" type="text" value="{ada.name}"', page.text)
    assert '<label for="name">' in page.text
    answer = server.client.post(prefs, data={"action": "name", "name": "  Ada Lovelace "})
    assert answer.status_code == 200 and "Your name is saved" in answer.text
    assert subscriber(engine, "ada@example.org").name == "Ada Lovelace"  # type: ignore[union-attr]
    assert 'value="Ada Lovelace"' in answer.text
    # Empty is allowed: the greeting then says "friend".
    assert server.client.post(prefs, data={"action": "name", "name": ""}).status_code == 200
    assert subscriber(engine, "ada@example.org").name == ""  # type: ignore[union-attr]


def name_notices(settings: Settings, to: str) -> list[EmailMessage]:
    return [m for m in confirmation_emails(settings, to) if "name" in str(m["Subject"])]


def test_a_name_change_is_announced_to_the_owner_without_the_new_words(
    settings, engine, server, ada, prefs
) -> None:
    """Whoever holds a forwarded bulletin holds its preferences link: the owner learns of every name
    change at once, from a notice that does not carry the stranger's words, and can put it right."""
    words = "Your account is suspended, call +1 555 0100"
    assert server.client.post(prefs, data={"action": "name", "name": words}).status_code == 200
    [notice] = name_notices(settings, "ada@example.org")
    assert str(notice["To"]) == "ada@example.org"  # nobody is greeted by name
    body = text_of(notice)
    assert words not in body and "+1 555" not in body and ada.name not in body
    assert "If you did not" in body
    page = server.client.get(server.local(link_in(notice, "preferences")))
    assert page.status_code == 200 and words in page.text  # where the owner sees it and puts it right


def test_saving_the_same_name_again_announces_nothing(settings, server, ada, prefs) -> None:
    answer = server.client.post(prefs, data={"action": "name", "name": f" {ada.name} "})
    assert answer.status_code == 200 and "Your name is unchanged" in answer.text
    assert name_notices(settings, "ada@example.org") == []


def test_name_changes_are_limited_per_address_and_none_goes_unannounced(
    settings, engine, server, ada, prefs
) -> None:
    limit = name_change.CHANGES_PER_ADDRESS
    for n in range(limit):
        assert server.client.post(prefs, data={"action": "name", "name": f"Ada {n}"}).status_code == 200
    refused = server.client.post(prefs, data={"action": "name", "name": "One too many"})
    assert refused.status_code == 429 and "try again tomorrow" in refused.text
    assert subscriber(engine, "ada@example.org").name == f"Ada {limit - 1}"  # type: ignore[union-attr]
    assert len(name_notices(settings, "ada@example.org")) == limit


def test_the_owner_can_always_clear_a_name_a_stranger_set(settings, engine, server, ada, prefs) -> None:
    """A stranger who used up the day's changes, the last one to words of their own, cannot keep the
    owner from taking them away: clearing the name carries nobody's words, so it is never counted."""
    for n in range(name_change.CHANGES_PER_ADDRESS):
        server.client.post(prefs, data={"action": "name", "name": f"Stranger's words {n}"})
    notices = len(name_notices(settings, "ada@example.org"))
    cleared = server.client.post(prefs, data={"action": "name", "name": ""})
    assert cleared.status_code == 200 and "Your name is saved" in cleared.text
    assert subscriber(engine, "ada@example.org").name == ""  # type: ignore[union-attr]
    assert len(name_notices(settings, "ada@example.org")) == notices  # nothing to announce


@pytest.mark.parametrize("status", [SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED])
def test_an_address_we_never_email_again_gets_no_name_notice(
    settings, engine, server, make_subscriber, status
) -> None:
    gone = make_subscriber("gone@example.org", status=status)
    prefs = f"/preferences/{token_for(settings, gone, Purpose.PREFERENCES)}"
    assert server.client.post(prefs, data={"action": "name", "name": "Someone"}).status_code == 200
    assert subscriber(engine, "gone@example.org").name == "Someone"  # type: ignore[union-attr]
    assert name_notices(settings, "gone@example.org") == []


@pytest.mark.parametrize("bad", ["Ada\r\nBcc: x@example.org", "A" * 201])
def test_a_name_the_form_would_refuse_is_refused_and_shown_next_to_its_field(
    engine, server, ada, prefs, bad
) -> None:
    answer = server.client.post(prefs, data={"action": "name", "name": bad})
    assert answer.status_code == 400 and "Please check your name" in answer.text
    assert 'href="#name"' in answer.text  # the error summary links to the field
    assert 'aria-invalid="true"' in answer.text
    assert subscriber(engine, "ada@example.org").name == ada.name  # type: ignore[union-attr]


def test_a_name_change_is_audited_and_erasing_forgets_every_name(
    settings, engine, server, ada, prefs, my_data
) -> None:
    server.client.post(prefs, data={"action": "name", "name": "Countess of Lovelace"})
    server.client.post(prefs, data={"action": "name", "name": "Ada L."})
    actions = read(
        engine,
        lambda s: s.exec(select(AuditEntry.action).where(AuditEntry.entity_id == ada.id)).all(),
    )
    assert list(actions).count("subscriber.name") == 2  # type: ignore[call-overload]
    server.client.post(my_data, data={"action": "erase", "confirm_erase": "yes"})
    with engine.connect() as conn:
        for table in Subscriber.metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                text = " ".join(str(v) for v in row)
                for name in (ada.name, "Countess of Lovelace", "Ada L."):
                    assert name not in text, table.name


def test_the_owner_sees_and_replaces_a_name_a_stranger_typed(
    settings, engine, server, subscribe, make_bulletin
) -> None:
    """The first request for an address sets its name, and the confirmation email never shows it (an
    attacker's words are not emailed to someone else): confirming shows it, with the way to change it."""
    phishing = "Dave, your account is locked: call +1 555 0100"
    subscribe("dave@example.org", name=phishing, regions=("global",))
    subscribe("dave@example.org", name="Dave", regions=("global",))  # Dave himself: changes nothing
    emails = confirmation_emails(settings, "dave@example.org")
    assert len(emails) == 2 and not any("locked" in text_of(m) for m in emails)
    email = emails[-1]
    link = server.local(link_in(email, "confirm"))
    assert "locked" not in server.client.get(link).text  # not before the address is proved theirs
    confirmed = server.client.post(link)
    assert confirmed.status_code == 200 and "You are subscribed" in confirmed.text
    assert "greet you as <strong>Dave, your account is locked: call +1 555 0100</strong>" in confirmed.text
    change = re.search(r'href="([^"]+/preferences/[^"#]+)#name-heading">Change your name', confirmed.text)
    assert change is not None
    prefs = server.local(change.group(1))
    assert phishing in server.client.get(prefs).text
    assert server.client.post(prefs, data={"action": "name", "name": "Dave"}).status_code == 200
    message = send_bulletin(settings, engine, make_bulletin().id)["dave@example.org"]
    assert "Dear Dave," in text_of(message) and "locked" not in text_of(message)


def test_confirming_without_a_name_offers_to_add_one(settings, server, subscribe) -> None:
    subscribe("ada@example.org")
    (email,) = confirmation_emails(settings, "ada@example.org")
    confirmed = server.client.post(server.local(link_in(email, "confirm")))
    assert "greet you as “friend”" in confirmed.text and "Add your name" in confirmed.text


@pytest.fixture
def my_data(settings: Settings, ada: Subscriber) -> str:
    return f"/my-data/{token_for(settings, ada, Purpose.MY_DATA)}"


def test_the_preference_centre_emails_a_my_data_link_and_never_exports_itself(
    settings, engine, server, ada, prefs
) -> None:
    page = server.client.get(prefs)
    assert "Download my data" not in page.text and "Email me a link" in page.text
    refused = server.client.post(prefs, data={"action": "download"})
    assert refused.status_code == 400 and not refused.headers["content-type"].startswith("application/json")
    asked = server.client.post(prefs, data={"action": "my-data-link"})
    assert asked.status_code == 200 and "emailed you a link" in asked.text
    (email,) = [
        m for m in confirmation_emails(settings, "ada@example.org") if "Your data" in str(m["Subject"])
    ]
    link = server.local(link_in(email, "my-data"))
    assert "Download my data" in server.client.get(link).text
    data = json.loads(server.client.post(link, data={"action": "download"}).text)
    assert data["email"] == "ada@example.org"


def data_links(settings: Settings, to: str) -> list[EmailMessage]:
    return [m for m in confirmation_emails(settings, to) if "Your data" in str(m["Subject"])]


ASKED = "emailed you a link"


def test_my_data_links_are_limited_per_address(settings, server, ada, prefs) -> None:
    """The preferences link travels with every forwarded bulletin: its holders cannot flood the inbox."""
    answers = [
        server.client.post(prefs, data={"action": "my-data-link"})
        for _ in range(my_data_links.LINKS_PER_ADDRESS + 2)
    ]
    assert all(a.status_code == 200 and ASKED in a.text for a in answers)  # the same answer every time
    assert len(data_links(settings, "ada@example.org")) == my_data_links.LINKS_PER_ADDRESS


def test_my_data_links_are_limited_per_client_ip(settings, server, make_subscriber, monkeypatch) -> None:
    monkeypatch.setattr(my_data_links, "LINKS_PER_IP", 2)
    people = [make_subscriber(f"p{i}@example.org") for i in range(3)]
    for who in people:
        answer = server.client.post(
            f"/preferences/{token_for(settings, who, Purpose.PREFERENCES)}", data={"action": "my-data-link"}
        )
        assert answer.status_code == 200 and ASKED in answer.text
    assert [len(data_links(settings, who.email)) for who in people] == [1, 1, 0]


@pytest.mark.parametrize("status", [SubscriberStatus.BOUNCED, SubscriberStatus.COMPLAINED])
def test_an_address_that_bounced_or_complained_is_never_sent_a_my_data_link(
    settings, server, make_subscriber, status
) -> None:
    gone = make_subscriber("gone@example.org", status=status)
    prefs = f"/preferences/{token_for(settings, gone, Purpose.PREFERENCES)}"
    answer = server.client.post(prefs, data={"action": "my-data-link"})
    assert answer.status_code == 200 and ASKED in answer.text  # says nothing about the address
    assert data_links(settings, "gone@example.org") == []


def test_only_an_address_suppressed_for_good_goes_without_its_my_data_link(
    settings, engine, server, ada, prefs, make_subscriber
) -> None:
    """Leaving the list does not take away the right to one's data; a manual suppression stops all mail."""
    server.client.post(prefs, data={"action": "unsubscribe"})
    assert ASKED in server.client.post(prefs, data={"action": "my-data-link"}).text
    bob = make_subscriber("bob@example.org")
    with session_scope(engine) as s:
        suppressions.add(s, "bob@example.org", SuppressionReason.MANUAL, note="asked by phone")
    bobs = f"/preferences/{token_for(settings, bob, Purpose.PREFERENCES)}"
    assert ASKED in server.client.post(bobs, data={"action": "my-data-link"}).text
    assert len(data_links(settings, "ada@example.org")) == 1
    assert data_links(settings, "bob@example.org") == []


def test_download_my_data(server, ada, my_data) -> None:
    answer = server.client.post(my_data, data={"action": "download"})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")
    assert "attachment" in answer.headers["content-disposition"]
    data = json.loads(answer.text)
    assert data["email"] == "ada@example.org" and data["regions"] == ["africa", "global"]
    assert data["status"] == "active" and data["deliveries"] == []


def test_erase_leaves_no_personal_data_but_keeps_the_address_suppressed(
    settings, engine, server, ada, prefs, my_data, subscribe, make_bulletin
) -> None:
    messages = send_bulletin(settings, engine, make_bulletin().id)
    assert "ada@example.org" in messages
    refused = server.client.post(my_data, data={"action": "erase"})
    assert refused.status_code == 400 and subscriber(engine, "ada@example.org") is not None

    answer = server.client.post(my_data, data={"action": "erase", "confirm_erase": "yes"})
    assert answer.status_code == 200 and "erased" in answer.text
    assert subscriber(engine, "ada@example.org") is None
    kept = read(engine, lambda s: s.exec(select(Suppression)).all())
    assert [(k.email, k.reason, k.email_hash) for k in kept] == [  # type: ignore[union-attr]
        (None, SuppressionReason.ERASED, email_hash("ada@example.org"))
    ]
    deliveries = read(engine, lambda s: s.exec(select(Delivery)).all())
    assert deliveries and all(d.subscriber_id != ada.id for d in deliveries)  # type: ignore[union-attr]

    # No table holds the address or the name any more.
    with engine.connect() as conn:
        for table in Subscriber.metadata.sorted_tables:
            for row in conn.execute(sa.select(table)):
                text = " ".join(str(v) for v in row)
                assert "ada@example.org" not in text, table.name
                assert ada.name not in text, table.name

    # Every link is dead, and the address is never stored again: not by the form, not by an import.
    assert server.client.get(prefs).status_code == 400
    assert server.client.get(my_data).status_code == 400
    assert NEUTRAL in subscribe("ada@example.org").text
    assert subscriber(engine, "ada@example.org") is None
    assert confirmation_emails(settings, "ada@example.org") == []
    with session_scope(engine) as s:
        report = import_subscribers(
            s, csv_for([("ada@example.org", "Ada", ["africa"], "active")]), RegionIndex.from_db(s, settings)
        )
    assert report.suppressed == 1 and report.created == 0
    assert subscriber(engine, "ada@example.org") is None


def test_an_unsubscribed_subscriber_can_ask_to_come_back(settings, engine, server, ada, prefs) -> None:
    server.client.post(prefs, data={"action": "unsubscribe"})
    page = server.client.get(prefs)
    assert "Subscribe again" in page.text
    answer = server.client.post(prefs, data={"action": "resubscribe"})
    assert answer.status_code == 200 and NEUTRAL in answer.text
    back = subscriber(engine, "ada@example.org")
    assert back is not None and back.status == SubscriberStatus.UNSUBSCRIBED  # until the link is used
    (email,) = confirmation_emails(settings, "ada@example.org")
    assert confirm_via(server, server.local(link_in(email, "confirm"))).status_code == 200  # type: ignore[attr-defined]
    assert subscriber(engine, "ada@example.org").status == SubscriberStatus.ACTIVE  # type: ignore[union-attr]


# --- view online -----------------------------------------------------------------------------------
def test_view_online_shows_the_subscribers_own_variant(settings, engine, ada, make_bulletin) -> None:
    """With the archive off, "view online" is a personal link (the archive's own tests cover it on)."""
    private = settings.model_copy(update={"ARCHIVE_ENABLED": False})
    bulletin = make_bulletin()
    message = send_bulletin(private, engine, bulletin.id)["ada@example.org"]
    with start_live_server(private) as server:
        page = server.client.get(server.local(link_in(message, f"view/{bulletin.id}")))
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "HQ &amp; Global Partners" in page.text and "Latin America" not in page.text
        assert "~nl" not in page.text  # every placeholder filled
        assert "/preferences/" not in page.text  # no credential that exports or erases the data


def test_view_online_shows_neither_the_address_nor_the_name(
    settings, engine, make_subscriber, make_bulletin
) -> None:
    """People share this page: it greets the reader as anyone, and names no address."""
    make_subscriber("grace.hopper@example.org", regions=["global"], name="Grace Hopper")
    private = settings.model_copy(update={"ARCHIVE_ENABLED": False})
    bulletin = make_bulletin()
    message = send_bulletin(private, engine, bulletin.id)["grace.hopper@example.org"]
    assert "Grace Hopper" in text_of(message)  # the email itself is personal
    with start_live_server(private) as server:
        page = server.client.get(server.local(link_in(message, f"view/{bulletin.id}")))
    assert page.status_code == 200
    assert "grace.hopper" not in page.text and "Grace" not in page.text and "Hopper" not in page.text
    assert "Dear friend," in page.text and "because your address subscribed" in page.text


def test_view_online_hides_bulletins_not_yet_sent(settings, server, ada, make_bulletin) -> None:
    draft = make_bulletin(status="draft")
    token = token_for(settings, ada, Purpose.VIEW)
    assert server.client.get(f"/view/{draft.id}/{token}").status_code == 404
