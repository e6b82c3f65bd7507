"""Names, subjects and titles are data: whatever they hold, every backend's message has exactly the
intended headers (no RFC 2047 encoded word is ever decoded into CR/LF, Bcc: or a body)."""

from __future__ import annotations

import base64
import dataclasses
import email
import email.policy
import json
import re
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from newsletter.content.render import Renderer
from newsletter.content.types import Recipient, RenderedVariant
from newsletter.core.config import Settings, get_settings
from newsletter.esp.sendgrid.send import SendGridBackend
from newsletter.mail.links import Links, header_safe_name
from newsletter.mail.message import build_message

EXPECTED = {"From", "To", "Subject", "Date", "Message-ID", "Content-Type", "MIME-Version"}
_INJECTED = [
    "\r\nBcc: x@evil.example",
    "\nReply-To: x@evil.example",
    "\r\n\r\nA body",
    "\u2028Cc: y@evil.example",
]


def _encoded_word(text: str) -> st.SearchStrategy[str]:
    raw = text.encode("utf-8")
    return st.sampled_from(
        [
            f"=?utf-8?b?{base64.b64encode(raw).decode()}?=",
            "=?utf-8?q?" + "".join(f"={b:02X}" for b in raw) + "?=",
            f"=?iso-8859-1?B?{base64.b64encode(text.encode('latin-1', 'replace')).decode()}?=",
        ]
    )


hostile_text = st.one_of(
    st.text(max_size=60),
    st.sampled_from(_INJECTED).flatmap(lambda s: _encoded_word("Eve" + s)),
    st.lists(
        st.one_of(
            st.sampled_from(
                ['"', "'", "\\", "<", ">", ",", ";", ":", "\r", "\n", "\x85", "\u2028", "\u2029", "=?", "?="]
            ),
            st.text(max_size=8),
            st.sampled_from(_INJECTED).flatmap(lambda s: _encoded_word("x" + s)),
        ),
        max_size=8,
    ).map("".join),
)


@pytest.fixture(scope="module")
def mail() -> tuple[Settings, RenderedVariant]:
    config = get_settings(
        SECRET_KEY="header-test-key-0123456789abcdef", SENDGRID_API_KEY="SG.test", DATABASE_URL="sqlite://"
    )
    return config, Renderer(config).confirmation("eve@example.org", "Eve")


def _parsed(config: Settings, variant: RenderedVariant, recipient: Recipient) -> email.message.EmailMessage:
    values = Links(config).values(recipient, fields=variant.html_placeholders)
    raw = build_message(config, variant, recipient, values, date=datetime(2026, 3, 2, tzinfo=UTC)).as_bytes()
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=hostile_text, subject=hostile_text)
def test_outbox_and_smtp_messages_have_exactly_the_intended_headers(mail, name, subject):
    config, confirmation = mail
    variant = dataclasses.replace(confirmation, subject=subject or "Subject")
    recipient = Recipient("eve@example.org", name, 7, link_secret="s")
    message = _parsed(config, variant, recipient)  # the outbox writes and SMTP sends this message
    assert set(message.keys()) == EXPECTED
    assert [a.addr_spec for a in message["To"].addresses] == ["eve@example.org"]
    assert str(message["Subject"]) == header_safe_name(variant.subject)  # read back as typed, not decoded
    body = message.get_body(("plain",))
    assert body is not None and "A body" not in body.get_content().split("\n")[0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=hostile_text, subject=hostile_text)
def test_sendgrid_json_names_and_subjects_hold_no_encoded_word_or_line_break(mail, name, subject):
    config, confirmation = mail
    variant = dataclasses.replace(confirmation, subject=subject or "Subject")
    body, refused = SendGridBackend(config).body(
        variant, [Recipient("eve@example.org", name, 7, link_secret="s")]
    )
    assert refused == []
    request = json.loads(body)
    texts = [request["subject"], request["from"].get("name", "")] + [
        to.get("name", "") for p in request["personalizations"] for to in p["to"]
    ]
    for text in texts:
        assert "=?" not in text and not re.search(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]", text)
    assert [to["email"] for p in request["personalizations"] for to in p["to"]] == ["eve@example.org"]
    assert set(request) <= {
        "personalizations",
        "from",
        "subject",
        "content",
        "reply_to",
        "headers",
        "tracking_settings",
    }


def test_an_encoded_word_reads_back_literally() -> None:
    evil = "=?utf-8?b?" + base64.b64encode(b"Eve\r\nBcc: x@evil.example").decode() + "?="
    safe = header_safe_name(evil)
    assert safe.replace("\u2060", "") == evil and "=?" not in safe
