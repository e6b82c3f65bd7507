"""The RFC 5322 message one recipient gets: both parts, bulk-mail headers, nothing injectable."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta

import pytest

from newsletter.content.bulletins import parse_bulletin
from newsletter.content.render import Renderer, personalize
from newsletter.content.types import Recipient, RenderedVariant
from newsletter.core.config import Settings, get_settings
from newsletter.mail.links import Links
from newsletter.mail.message import build_message, list_unsubscribe_headers
from newsletter.mail.tokens import Purpose, read_token

WHEN = datetime(2026, 3, 2, 7, 0, tzinfo=UTC)


@pytest.fixture
def mail_settings(basic_settings: Settings) -> Settings:
    return get_settings(
        UNSUBSCRIBE_MAILTO="leave@example.org",
        REPLY_TO="office@example.org",
        ORG_NAME="Justice Prayer Network",
        FROM_NAME="Prayer Bulletin",
        FROM_EMAIL="bulletin@example.org",
        LIST_ID="bulletin.example.org",
    )


@pytest.fixture
def variant(mail_settings: Settings, sample_text: str) -> RenderedVariant:
    return Renderer(mail_settings).variant(parse_bulletin(sample_text, mail_settings), ["africa", "global"])


def build(
    settings: Settings, variant: RenderedVariant, recipient: Recipient, values: dict[str, str] | None = None
) -> email.message.EmailMessage:
    """Build, serialise and parse again: the test sees what a receiving server would."""
    values = values or Links(settings).values(recipient)
    msg = build_message(settings, variant, recipient, values, date=WHEN)
    raw = msg.as_bytes()
    assert b"\r\n" in raw and b"\n" not in raw.replace(b"\r\n", b"")
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    return parsed


def test_a_complete_multipart_alternative_message(mail_settings, variant):
    recipient = Recipient("ruth@example.org", "Ruth Moab", 12, delivery_id=3, bulletin_id=9)
    values = Links(mail_settings).values(recipient)
    msg = build(mail_settings, variant, recipient, values)
    assert msg.get_content_type() == "multipart/alternative"
    text_part, html_part = msg.get_payload()
    assert text_part.get_content_type() == "text/plain" and html_part.get_content_type() == "text/html"
    html, text = personalize(variant, values)
    assert text_part.get_content().replace("\r\n", "\n") == text
    assert html_part.get_content().replace("\r\n", "\n") == html
    assert msg["From"] == "Prayer Bulletin <bulletin@example.org>"
    assert msg["To"] == "Ruth Moab <ruth@example.org>"
    assert msg["Reply-To"] == "office@example.org"
    assert msg["Subject"] == variant.subject
    assert msg["Date"].datetime == WHEN
    assert msg["Message-ID"].startswith("<") and msg["Message-ID"].endswith("@example.org>")
    assert msg["List-Id"] == '"Justice Prayer Network" <bulletin.example.org>'


def test_one_click_unsubscribe_headers(mail_settings, variant):
    recipient = Recipient("ruth@example.org", "Ruth", 12, bulletin_id=9)
    msg = build(mail_settings, variant, recipient)
    https, mailto = [part.strip().strip("<>") for part in str(msg["List-Unsubscribe"]).split(",")]
    assert https.startswith("http://127.0.0.1:8000/unsubscribe/")
    keys = mail_settings.secret_keys
    assert read_token(keys, https.rsplit("/", 1)[1], Purpose.UNSUBSCRIBE, max_age=timedelta(days=1)) == 12
    assert mailto.startswith("mailto:leave@example.org?subject=unsubscribe-")
    token = mailto.rsplit("unsubscribe-", 1)[1]
    assert read_token(keys, token, Purpose.UNSUBSCRIBE, max_age=timedelta(days=1)) == 12
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_list_unsubscribe_has_no_mailto_unless_configured():
    headers = list_unsubscribe_headers({"unsubscribe_url": "https://x.example/unsubscribe/t"}, None)
    assert headers == {
        "List-Unsubscribe": "<https://x.example/unsubscribe/t>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }


def test_without_reply_to_or_mailto_those_headers_are_absent(basic_settings, sample_text):
    variant = Renderer(basic_settings).variant(parse_bulletin(sample_text, basic_settings), ["africa"])
    msg = build(basic_settings, variant, Recipient("ruth@example.org", "Ruth", 12, bulletin_id=9))
    assert msg["Reply-To"] is None
    assert "mailto:" not in str(msg["List-Unsubscribe"])


def test_non_ascii_names_subjects_and_domains_are_encoded(mail_settings, variant):
    from dataclasses import replace

    variant = replace(variant, subject="Prière de la semaine — Ghana")
    recipient = Recipient("zoe@bücher.example", "Zoë Ñúñez", 5)
    values = Links(mail_settings).values(recipient)
    raw = build_message(mail_settings, variant, recipient, values, date=WHEN).as_bytes()
    assert raw.isascii()
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in head
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Subject"] == "Prière de la semaine — Ghana"
    assert msg["To"].addresses[0].display_name == "Zoë Ñúñez"
    assert msg["To"].addresses[0].addr_spec == "zoe@xn--bcher-kva.example"


def test_an_internationalised_domain_is_written_by_idna_2008_not_mapped_to_another_domain(
    mail_settings, variant
):
    """Python's "idna" codec (IDNA 2003) writes straße.de as strasse.de: someone else's domain."""
    recipient = Recipient("ulf@straße.de", "Ulf", 6)
    values = Links(mail_settings).values(recipient)
    msg = build_message(mail_settings, variant, recipient, values, date=WHEN)
    assert msg["To"].addresses[0].addr_spec == "ulf@xn--strae-oqa.de"


@pytest.mark.parametrize(
    "name",
    [
        "x\r\nBcc: evil@example.com",
        "x\nBcc: evil@example.com",
        "x\rBcc: evil@example.com",
        "x\x00\x0bBcc: evil@example.com",
    ],
)
def test_a_line_break_in_a_name_never_makes_a_header(mail_settings, variant, name):
    msg = build(mail_settings, variant, Recipient("ruth@example.org", name, 12, bulletin_id=9))
    raw = msg.as_bytes()
    assert msg["Bcc"] is None
    assert not [line for line in raw.split(b"\r\n") if line.lower().startswith(b"bcc")]
    (address,) = msg["To"].addresses
    assert address.addr_spec == "ruth@example.org"
    assert address.display_name == "x Bcc: evil@example.com"


def test_a_line_break_in_a_subject_or_link_never_makes_a_header(mail_settings, variant):
    from dataclasses import replace

    variant = replace(variant, subject="Hello\r\nBcc: evil@example.com")
    recipient = Recipient("ruth@example.org", "Ruth", 12, bulletin_id=9)
    values = Links(mail_settings).values(recipient)
    values["unsubscribe_url"] += "\r\nBcc: evil@example.com"
    raw = build_message(mail_settings, variant, recipient, values, date=WHEN).as_bytes()
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Hello Bcc: evil@example.com"


def test_the_confirmation_email_is_transactional(mail_settings):
    recipient = Recipient("naomi@example.org", "Naomi", 77)
    variant = Renderer(mail_settings).confirmation(recipient.email, recipient.name)
    msg = build(mail_settings, variant, recipient)
    assert msg["List-Unsubscribe"] is None and msg["List-Id"] is None
    assert "/confirm/" in msg.get_payload()[0].get_content()


def test_given_message_id_and_date_are_used(mail_settings, variant):
    recipient = Recipient("ruth@example.org", "Ruth", 12, bulletin_id=9)
    values = Links(mail_settings).values(recipient)
    msg = build_message(mail_settings, variant, recipient, values, message_id="<abc@example.org>", date=WHEN)
    assert msg["Message-ID"] == "<abc@example.org>"
    assert msg["Date"] == "Mon, 02 Mar 2026 07:00:00 +0000"
