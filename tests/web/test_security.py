"""The security review's attacks, each over real HTTP against the app on uvicorn, on both databases:
every one must fail and leave the data as it was (docs/security.md says what each defence is)."""

from __future__ import annotations

import base64
import json
import re
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import itsdangerous
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from newsletter.accounts import LoginRefused, create_user, get_user, remove_user
from newsletter.core.config import Settings
from newsletter.core.db import session_scope
from newsletter.core.models import RATE_EVENT, User
from newsletter.core.status import Role, SubscriberStatus
from newsletter.mail.tokens import Purpose, make_token
from newsletter.web.auth import SESSION_COOKIE
from tests.factories import MakeBulletin, MakeSubscriber
from tests.fixtures_web import LiveServer, start_live_server
from tests.web.signing import Signer
from tests.web.test_web_public import (
    TOKEN,
    confirmation_emails,
    link_in,
    send_bulletin,
    subscriber,
    token_for,
)

PASSWORD = "correct horse battery"
STAFF = "staff@example.org"
VOLUNTEER = "volunteer@example.org"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def state(engine: Engine) -> tuple[object, ...]:
    """Everything an attack could change about supporters and accounts."""
    with engine.connect() as conn:
        people = conn.execute(sa.text("SELECT id, email, name, status FROM subscriber ORDER BY id")).all()
        regions = conn.execute(sa.text("SELECT * FROM subscription ORDER BY 1, 2")).all()
        users = conn.execute(sa.text("SELECT id, email, role, is_active FROM app_user ORDER BY id")).all()
        audit = conn.execute(sa.text("SELECT count(*) FROM audit_entry")).scalar_one()
    return tuple(people), tuple(regions), tuple(users), audit


_OPEN: list[httpx.Client] = []


def client_for(url: str, **kwargs: object) -> httpx.Client:
    """An HTTP client closed at the end of the test."""
    client = httpx.Client(base_url=url, follow_redirects=False, timeout=30, **kwargs)  # type: ignore[arg-type]
    _OPEN.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _OPEN:
        _OPEN.pop().close()


def login(url: str, email: str, *, headers: dict[str, str] | None = None) -> httpx.Client:
    client = client_for(url, headers=headers or {})
    token = _CSRF.search(client.get("/admin/login").text)
    assert token
    answer = client.post("/admin/login", data={"email": email, "password": PASSWORD, "csrf_token": token[1]})
    assert answer.status_code == 303, answer.text[:300]
    return client


@pytest.fixture
def accounts(session: Session) -> None:
    create_user(session, STAFF, PASSWORD, Role.STAFF)
    create_user(session, VOLUNTEER, PASSWORD, Role.VOLUNTEER)
    session.commit()


# --- 1: an old link never opens the next person's data -----------------------------------------------
def test_links_of_an_erased_subscriber_never_open_the_next_persons_data(
    settings: Settings, engine: Engine, live_server: LiveServer, make_subscriber: MakeSubscriber
) -> None:
    ada = make_subscriber("ada@example.org", regions=["africa"])
    old = {p: token_for(settings, ada, p) for p in Purpose}
    erased = live_server.client.post(
        f"/my-data/{old[Purpose.MY_DATA]}", data={"action": "erase", "confirm_erase": "yes"}
    )
    assert erased.status_code == 200
    live_server.client.post(
        "/subscribe", data={"email": "bea@example.org", "name": "Bea", "regions": ["global"]}
    )
    bea = subscriber(engine, "bea@example.org")
    assert bea is not None and bea.id != ada.id  # ids are never reused (AUTOINCREMENT on SQLite)
    before = state(engine)
    # Even a link naming Bea's id, signed with the server key but bound to Ada's secret, opens nothing.
    forged = make_token(settings.secret_keys, bea.id or 0, Purpose.PREFERENCES, secret=ada.link_secret)
    for path in (
        f"/preferences/{old[Purpose.PREFERENCES]}",
        f"/my-data/{old[Purpose.MY_DATA]}",
        f"/preferences/{forged}",
    ):
        answer = live_server.client.get(path)
        assert answer.status_code == 400 and "bea@example.org" not in answer.text
    assert live_server.client.post(f"/confirm/{old[Purpose.CONFIRM]}").status_code == 400
    assert state(engine) == before
    assert subscriber(engine, "bea@example.org").status == SubscriberStatus.PENDING  # type: ignore[union-attr]


# --- 2: no header injection through encoded words ----------------------------------------------------
def test_an_encoded_word_name_adds_no_header_to_any_email(
    settings: Settings, engine: Engine, live_server: LiveServer, make_bulletin: MakeBulletin
) -> None:
    payload = base64.b64encode(
        b"Eve\r\nBcc: x@evil.example\r\nReply-To: x@evil.example\r\n\r\nPay here"
    ).decode()
    name = f"=?utf-8?b?{payload}?="
    answer = live_server.client.post(
        "/subscribe", data={"email": "eve@example.org", "name": name, "regions": ["africa"]}
    )
    assert answer.status_code == 200, answer.text
    assert live_server.app.state.background.wait_idle(30)
    (confirmation,) = confirmation_emails(settings, "eve@example.org")
    link = live_server.local(link_in(confirmation, "confirm"))
    live_server.client.post(link)
    bulletin = send_bulletin(settings, engine, make_bulletin().id)["eve@example.org"]
    for message in (confirmation, bulletin):
        assert message["Bcc"] is None and message["Reply-To"] is None
        assert (
            "evil.example" not in str(message["To"])
            and "Pay here" not in message.get_body(("plain",)).get_content()
        )  # type: ignore[union-attr]


# --- 3: a session dies with its account ---------------------------------------------------------------
def test_a_removed_volunteers_cookie_never_opens_the_new_staff_account(
    settings: Settings, engine: Engine, live_server: LiveServer, accounts: None
) -> None:
    volunteer = login(live_server.url, VOLUNTEER)
    cookie = volunteer.cookies[SESSION_COOKIE]
    with session_scope(engine) as s:
        remove_user(s, get_user(s, VOLUNTEER))
        create_user(s, "new.staff@example.org", PASSWORD, Role.STAFF)
    attacker = client_for(live_server.url, cookies={SESSION_COOKIE: cookie})
    assert attacker.get("/admin/users").status_code == 303  # to the login page
    assert attacker.get("/admin").status_code == 303


@pytest.mark.parametrize("how", ["logout", "password", "role", "disable"])
def test_a_copied_cookie_dies_on_logout_and_account_changes(
    settings: Settings, engine: Engine, live_server: LiveServer, accounts: None, how: str
) -> None:
    victim = login(live_server.url, STAFF)
    copy = client_for(live_server.url, cookies={SESSION_COOKIE: victim.cookies[SESSION_COOKIE]})
    assert copy.get("/admin").status_code == 200
    if how == "logout":
        token = _CSRF.search(victim.get("/admin").text)
        assert token and victim.post("/admin/logout", data={"csrf_token": token[1]}).status_code == 303
    else:
        from newsletter import accounts as service

        with session_scope(engine) as s:
            user = get_user(s, STAFF)
            {"password": lambda: service.set_password(s, user, "another password 123"),
             "role": lambda: service.set_role(s, user, Role.VOLUNTEER),
             "disable": lambda: service.set_active(s, user, False)}[how]()  # fmt: skip
    assert copy.get("/admin").status_code == 303


def test_a_session_ends_after_its_absolute_lifetime_however_active(
    settings: Settings, engine: Engine, live_server: LiveServer, accounts: None
) -> None:
    with Session(engine) as s:
        user = s.exec(select(User).where(User.email == STAFF)).one()
    old_login = int(time.time()) - settings.SESSION_LIFETIME_SECONDS - 5
    data = {"uid": user.id, "sv": user.session_version, "iat": old_login}
    signed = itsdangerous.TimestampSigner(settings.secret_keys[0]).sign(
        base64.b64encode(json.dumps(data).encode())
    )
    client = client_for(live_server.url, cookies={SESSION_COOKIE: signed.decode()})
    assert client.get("/admin").status_code == 303
    data["iat"] = int(time.time())
    fresh = itsdangerous.TimestampSigner(settings.secret_keys[0]).sign(
        base64.b64encode(json.dumps(data).encode())
    )
    client.cookies.set(SESSION_COOKIE, fresh.decode())
    assert client.get("/admin").status_code == 200  # the forged-but-fresh control: the check is the age


# --- 4: nobody can lock staff out ---------------------------------------------------------------------
def test_failed_logins_from_one_client_neither_lock_out_staff_nor_end_their_session(
    settings: Settings, engine: Engine, accounts: None
) -> None:
    behind_proxy = settings.model_copy(update={"TRUSTED_PROXIES": "127.0.0.1"})
    with start_live_server(behind_proxy) as server:
        staff = login(server.url, STAFF, headers={"X-Forwarded-For": "10.0.0.1"})
        attacker = client_for(server.url, headers={"X-Forwarded-For": "203.0.113.9"})
        texts = set()
        for email in [STAFF] * (settings.LOGIN_MAX_FAILURES + 2) + ["nobody@example.org"]:
            token = _CSRF.search(attacker.get("/admin/login").text)
            assert token
            answer = attacker.post(
                "/admin/login", data={"email": email, "password": "guess guess", "csrf_token": token[1]}
            )
            assert answer.status_code == 401
            texts.add(str(LoginRefused()) in answer.text)
        assert texts == {True}  # one message, whether throttled, wrong or unknown
        assert staff.get("/admin").status_code == 200  # the live session is untouched
        login(server.url, STAFF, headers={"X-Forwarded-For": "10.0.0.2"})  # and staff can still log in


# --- 5: shared pages hold no credential that exports or erases ------------------------------------------
def test_shareable_pages_carry_no_export_or_erase_credential(
    settings: Settings,
    engine: Engine,
    live_server: LiveServer,
    make_subscriber: MakeSubscriber,
    make_bulletin: MakeBulletin,
) -> None:
    ada = make_subscriber("ada@example.org", regions=["africa"])
    bulletin = make_bulletin()
    message = send_bulletin(settings, engine, bulletin.id)["ada@example.org"]
    assert not re.search(rf"/(my-data)/{TOKEN}", message.as_string())  # the email itself: no export link
    view = live_server.client.get(f"/view/{bulletin.id}/{token_for(settings, ada, Purpose.VIEW)}")
    unsubscribed = live_server.client.post(f"/unsubscribe/{token_for(settings, ada, Purpose.UNSUBSCRIBE)}")
    for page in (view, unsubscribed):
        assert page.status_code == 200
        assert not re.search(rf"/(preferences|my-data|unsubscribe)/{TOKEN}", page.text)
    before = state(engine)
    prefs = f"/preferences/{token_for(settings, ada, Purpose.PREFERENCES)}"
    for action in ("download", "erase"):
        answer = live_server.client.post(prefs, data={"action": action, "confirm_erase": "yes"})
        assert answer.status_code == 400 and "application/json" not in answer.headers["content-type"]
    assert state(engine) == before


# --- 7: bodies are refused before they are read ---------------------------------------------------------
def _raw_request(url: str, head: str, body: bytes = b"") -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode() + body)
        return sock.recv(4096)


def test_oversized_bodies_get_413_before_they_are_read(
    settings: Settings, engine: Engine, live_server: LiveServer
) -> None:
    before = state(engine)
    # A declared 400 MB: answered at once, although not one byte of the body is sent.
    head = "POST {} HTTP/1.1\r\nHost: x\r\nContent-Type: {}\r\nContent-Length: 400000000\r\n\r\n"
    for path, kind in [
        ("/webhooks/sendgrid", "application/json"),
        ("/subscribe", "application/x-www-form-urlencoded"),
    ]:
        assert _raw_request(live_server.url, head.format(path, kind)).startswith(b"HTTP/1.1 413")
    # A chunked body with no length is cut off as soon as it passes the cap.
    big = iter([b"email=a%40example.org&name=" + b"x" * 8192] * (settings.MAX_FORM_BYTES // 8192 + 2))
    answer = live_server.client.post(
        "/subscribe", content=big, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert answer.status_code == 413
    assert state(engine) == before


def test_an_anonymous_upload_is_refused_before_it_is_parsed(
    settings: Settings, engine: Engine, live_server: LiveServer
) -> None:
    before = state(engine)
    files = {"file": ("people.csv", b"email,name,regions\nx@example.org,X,africa\n" * 1000, "text/csv")}
    answer = live_server.client.post("/admin/subscribers/import", files=files)
    assert answer.status_code == 401
    head = "POST /admin/subscribers/import HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 300000000\r\n\r\n"
    assert _raw_request(live_server.url, head).startswith(b"HTTP/1.1 401")
    assert state(engine) == before


# --- 9, 12: limits before any write, atomic under concurrency ------------------------------------------
def test_a_pending_address_cannot_be_rewritten_and_limits_come_before_any_write(
    settings: Settings, engine: Engine, live_server: LiveServer
) -> None:
    post = live_server.client.post
    post("/subscribe", data={"email": "ada@example.org", "name": "Ada", "regions": ["africa"]})
    for _ in range(settings.SUBSCRIBE_LIMIT_PER_ADDRESS + 2):
        post(
            "/subscribe",
            data={"email": "ada@example.org", "name": "Click evil.example", "regions": ["global"]},
        )
    assert live_server.app.state.background.wait_idle(30)
    ada = subscriber(engine, "ada@example.org")
    assert ada is not None and ada.name == "Ada"
    with engine.connect() as conn:
        regions = conn.execute(sa.text("SELECT count(*) FROM subscription")).scalar_one()
    assert regions == 1
    emails = confirmation_emails(settings, "ada@example.org")
    assert len(emails) == settings.SUBSCRIBE_LIMIT_PER_ADDRESS
    assert not any("evil.example" in m.as_string() for m in emails)


def test_concurrent_subscribes_respect_the_limits_and_never_fail(settings: Settings, engine: Engine) -> None:
    strict = settings.model_copy(update={"SUBSCRIBE_LIMIT_PER_IP": 10, "SUBSCRIBE_LIMIT_PER_ADDRESS": 100})
    with start_live_server(strict) as server:

        def subscribe(i: int) -> int:
            email = "same@example.org" if i % 2 else f"p{i}@example.org"
            with httpx.Client(base_url=server.url, timeout=60) as client:
                return client.post("/subscribe", data={"email": email, "regions": ["africa"]}).status_code

        with ThreadPoolExecutor(max_workers=12) as pool:
            codes = list(pool.map(subscribe, range(24)))
        assert server.app.state.background.wait_idle(60)
    assert sorted(set(codes)) == [200, 429] and codes.count(200) == 10
    with engine.connect() as conn:
        hits = conn.execute(
            sa.select(sa.func.count()).select_from(RATE_EVENT).where(RATE_EVENT.c.key.like("confirm-ip:%"))
        ).scalar_one()
        same = conn.execute(
            sa.text("SELECT count(*) FROM subscriber WHERE email = 'same@example.org'")
        ).scalar_one()
    assert hits == 10 and same <= 1


# --- 11: the answer does not wait for the ESP -------------------------------------------------------------
def test_subscribing_answers_at_once_even_when_the_esp_hangs(settings: Settings, engine: Engine) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts connections, never answers
    host, port = silent.getsockname()
    hanging = settings.model_copy(
        update={"ESP_BACKEND": "sendgrid", "SENDGRID_API_KEY": "SG.test", "SENDGRID_HOST": f"http://{host}:{port}",
                "SENDGRID_TIMEOUT": 2.0, "CONFIRM_SEND_ATTEMPTS": 1}
    )  # fmt: skip
    try:
        with start_live_server(hanging) as server:
            started = time.perf_counter()
            answer = server.client.post(
                "/subscribe", data={"email": "new@example.org", "regions": ["africa"]}
            )
            elapsed = time.perf_counter() - started
            assert answer.status_code == 200 and elapsed < 1.5
            assert server.app.state.background.wait_idle(30)
    finally:
        silent.close()


# --- 13: headers ---------------------------------------------------------------------------------------------
def test_every_page_sends_the_security_headers_and_token_pages_no_referrer(
    settings: Settings, live_server: LiveServer, make_subscriber: MakeSubscriber
) -> None:
    ada = make_subscriber("ada@example.org")
    for path in (
        "/subscribe",
        "/admin/login",
        f"/preferences/{token_for(settings, ada, Purpose.PREFERENCES)}",
    ):
        headers = live_server.client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors" in headers["content-security-policy"]
        assert "strict-transport-security" not in headers  # plain HTTP
    token_page = live_server.client.get(f"/unsubscribe/{token_for(settings, ada, Purpose.UNSUBSCRIBE)}")
    assert token_page.headers["referrer-policy"] == "no-referrer"


def test_hsts_over_https(settings: Settings) -> None:
    with start_live_server(
        settings.model_copy(update={"BASE_URL": "https://bulletin.example.org"})
    ) as server:
        assert "max-age=" in server.client.get("/subscribe").headers["strict-transport-security"]


# --- 15: out-of-range numbers and deep nesting are a clean 4xx ----------------------------------------
def test_ids_beyond_64_bits_and_deeply_nested_webhooks_get_a_clean_4xx(
    settings: Settings, engine: Engine, accounts: None
) -> None:
    signer = Signer()
    with start_live_server(
        settings.model_copy(update={"SENDGRID_WEBHOOK_PUBLIC_KEY": signer.public_base64})
    ) as server:
        staff = login(server.url, STAFF)
        huge = str(2**70)
        assert 400 <= staff.get(f"/admin/users/{huge}").status_code < 500
        token = _CSRF.search(staff.get("/admin/users").text)
        assert token
        for path in (f"/admin/users/{huge}", f"/admin/subscribers/{huge}", f"/admin/bulletins/{huge}"):
            answer = staff.post(path, data={"action": "disable", "csrf_token": token[1]})
            assert 400 <= answer.status_code < 500, (path, answer.status_code)
        body = b"[" * 100_000 + b"]" * 100_000
        answer = server.client.post("/webhooks/sendgrid", content=body, headers=signer.headers(body))
        assert answer.status_code == 400


def test_access_log_lines_hold_no_whole_token() -> None:
    from newsletter.web.headers import redact

    token = "A" * 40
    line = redact(f'"GET /preferences/{token} HTTP/1.1" 200 and /view/12/{token}?x=1')
    assert token not in line and "/preferences/AAAAAA…" in line and "/view/12/AAAAAA…?x=1" in line
