"""Fixtures for the ESP side of sending: the fake SendGrid and an SMTP server, both real, on loopback.

    fake_esp        a started `FakeEsp` (127.0.0.1, random port), reset for each test; point
                    `SENDGRID_HOST` at `fake_esp.url` and use `FAKE_API_KEY`. Control it with
                    `fake_esp.fail(503, rate=0.2)`, `.drop(count=1)`, `.slow(2.0)`,
                    `.reject_addresses(r"@invalid\\.test$")`, `.configure(...)`; inspect with
                    `.accepted()`, `.delivery_ids()`, `.requests()`, `.stats()`.
    smtp_server     an aiosmtpd server recording every message (`.messages`, `.parsed()`), with
                    `.refuse(pattern, code)` for per-recipient RCPT refusals and `USERS` for AUTH.
    esp_variant     a small hand-built RenderedVariant with every placeholder in both parts.
    esp_recipients  `make_recipients(n, ...)`: Recipient objects with subscriber and delivery ids.

Registered in tests/conftest.py with `pytest_plugins = ["tests.fixtures_esp"]`.
"""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as SMTPServer
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from newsletter.content.render import html_placeholder, text_placeholder
from newsletter.content.types import PERSONAL_FIELDS, Recipient, RenderedVariant
from newsletter.mail.tokens import Purpose, read_token
from newsletter.testing.fake_esp import FakeEsp

FAKE_API_KEY = "SG.fake-api-key-for-tests"
SMTP_USERS = {"mailer": "correct horse battery staple"}


# --- the fake SendGrid ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def _fake_esp_server() -> Iterator[FakeEsp]:
    fake = FakeEsp(api_key=FAKE_API_KEY).start()
    yield fake
    fake.stop()


@pytest.fixture
def fake_esp(_fake_esp_server: FakeEsp) -> Iterator[FakeEsp]:
    """The session's fake ESP, with no faults and nothing recorded."""
    _fake_esp_server.reset()
    _fake_esp_server.configure(api_key=FAKE_API_KEY)
    yield _fake_esp_server
    _fake_esp_server.reset()


# --- a variant to send ---------------------------------------------------------------------------
def make_variant(
    bulletin_id: int | None = 7, regions: tuple[str, ...] = ("africa", "global")
) -> RenderedVariant:
    """A RenderedVariant as `Renderer.variant` makes them, small enough to read in a failing test."""
    html_ph = {f: html_placeholder(f) for f in PERSONAL_FIELDS}
    text_ph = {f: text_placeholder(f) for f in PERSONAL_FIELDS}
    html = (
        "<!doctype html><html><body><p>Dear {name},</p><p>Pray for Africa.</p>"
        '<p><a href="{view_url}">View online</a> · <a href="{preferences_url}">Preferences</a> · '
        '<a href="{unsubscribe_url}">Unsubscribe</a> ({email})</p></body></html>'
    ).format(**html_ph)
    text = (
        "Dear {name},\n\nPray for Africa.\n\nView online: {view_url}\nPreferences: {preferences_url}\n"
        "Unsubscribe: {unsubscribe_url} ({email})\n"
    ).format(**text_ph)
    return RenderedVariant(
        key=",".join(regions),
        regions=regions,
        subject="Prayer bulletin — week 12",
        html=html,
        text=text,
        html_placeholders=html_ph,
        text_placeholders=text_ph,
        bulletin_id=bulletin_id,
        preheader="Pray for Africa.",
    )


def make_recipients(
    n: int, *, bulletin_id: int | None = 7, start: int = 1, domain: str = "example.org"
) -> list[Recipient]:
    return [
        Recipient(
            email=f"reader{i}@{domain}",
            name=f"Reader {i}",
            subscriber_id=i,
            delivery_id=1000 + i if bulletin_id is not None else None,
            bulletin_id=bulletin_id,
        )
        for i in range(start, start + n)
    ]


@pytest.fixture
def esp_variant() -> RenderedVariant:
    return make_variant()


@pytest.fixture
def esp_recipients() -> Callable[..., list[Recipient]]:
    """`make_recipients(n, bulletin_id=7, start=1, domain="example.org")`: Reader i, delivery 1000 + i."""
    return make_recipients


# --- an SMTP server ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReceivedMessage:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    peer: Any
    """The client's (host, port): a new port means a new connection."""

    def parsed(self) -> EmailMessage:
        message: EmailMessage = BytesParser(policy=policy.default).parsebytes(self.data)
        return message


class _Recorder:
    def __init__(self) -> None:
        self.messages: list[ReceivedMessage] = []
        self.refusals: list[tuple[re.Pattern[str], int, str]] = []
        self.lock = threading.Lock()

    async def handle_RCPT(
        self, server: SMTPServer, session: Session, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        for pattern, code, text in self.refusals:
            if pattern.search(address):
                return f"{code} {text}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTPServer, session: Session, envelope: Envelope) -> str:
        content = envelope.original_content or b""
        with self.lock:
            self.messages.append(
                ReceivedMessage(
                    str(envelope.mail_from), list(envelope.rcpt_tos), bytes(content), session.peer
                )
            )
        return "250 Message accepted for delivery"


class _PipeliningRecorder(_Recorder):
    """Also offers PIPELINING (RFC 2920) in its EHLO reply; aiosmtpd reads pipelined commands in order."""

    async def handle_EHLO(
        self, server: SMTPServer, session: Session, envelope: Envelope, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]


def _authenticate(
    server: SMTPServer, session: Session, envelope: Envelope, mechanism: str, data: Any
) -> AuthResult:
    if isinstance(data, LoginPassword):
        user, password = data.login.decode(), data.password.decode()
        if SMTP_USERS.get(user) == password:
            return AuthResult(success=True)
    # handled=False: aiosmtpd itself answers 535 (with the default handled=True it answers nothing).
    return AuthResult(success=False, handled=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SmtpTestServer:
    """aiosmtpd on 127.0.0.1 that records messages; optional STARTTLS (`tls_context`) and AUTH.
    `smtputf8=False` is a relay without SMTPUTF8 (RFC 6531), as many are: it takes only ASCII addresses."""

    def __init__(
        self, tls_context: ssl.SSLContext | None = None, *, pipelining: bool = False, smtputf8: bool = True
    ) -> None:
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.tls_context = tls_context
        self.smtputf8 = smtputf8
        self.recorder = _PipeliningRecorder() if pipelining else _Recorder()
        self.controller: Controller | None = None

    def start(self) -> SmtpTestServer:
        for _ in range(5):
            controller = Controller(
                self.recorder,
                hostname=self.host,
                port=self.port,
                authenticator=_authenticate,
                auth_require_tls=self.tls_context is not None,
                tls_context=self.tls_context,
                require_starttls=self.tls_context is not None,
                enable_SMTPUTF8=self.smtputf8,
                ready_timeout=5.0,
            )
            try:
                controller.start()
            except (OSError, RuntimeError):
                self.port = _free_port()
                time.sleep(0.05)
                continue
            self.controller = controller
            return self
        raise RuntimeError("could not start the SMTP test server")

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def restart(self) -> None:
        """Stop and start again on the same port: every client connection is cut."""
        self.stop()
        self.start()

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self.recorder.lock:
            return list(self.recorder.messages)

    def parsed(self) -> list[EmailMessage]:
        return [m.parsed() for m in self.messages]

    def refuse(self, pattern: str, code: int = 550, text: str = "5.1.1 No such user") -> None:
        """Refuse RCPT TO for addresses matching `pattern` with `code` (550 permanent, 450 temporary)."""
        self.recorder.refusals.append((re.compile(pattern), code, text))


@pytest.fixture
def smtp_server() -> Iterator[SmtpTestServer]:
    """A plain (no TLS) SMTP server on loopback; AUTH LOGIN/PLAIN with SMTP_USERS is offered."""
    server = SmtpTestServer().start()
    yield server
    server.stop()


def unsubscribe_url_of(message: EmailMessage, settings: Any, recipient: Recipient) -> str:
    """The one-click URL in `message`'s List-Unsubscribe, checked to carry a valid unsubscribe token for
    `recipient` (read back, not rebuilt: a rebuilt token differs once the clock passes a second)."""
    header = str(message["List-Unsubscribe"])
    assert header.startswith("<") and header.endswith(">"), header
    url = header[1:-1]
    prefix = settings.BASE_URL.rstrip("/") + "/unsubscribe/"
    assert url.startswith(prefix), url
    token = url.removeprefix(prefix)
    subscriber = read_token(
        settings.secret_keys,
        token,
        Purpose.UNSUBSCRIBE,
        max_age=timedelta(days=1),
        secret=recipient.link_secret,
    )
    assert subscriber == recipient.subscriber_id
    return url
