"""The fast path (`mail.fast_message`) against the slow one (`mail.message.build_message`): the same
bytes for every recipient, name, address and value, and every message parses back to what was meant."""

from __future__ import annotations

import email
import email.policy
import functools
import quopri
import re
from datetime import UTC, datetime
from email import quoprimime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.content.bulletins import parse_bulletin
from newsletter.content.render import Renderer, personalize
from newsletter.content.types import PERSONAL_FIELDS, Recipient, RenderedVariant
from newsletter.core.config import Settings, get_settings
from newsletter.mail.fast_message import (
    MessageTemplate,
    dot_stuff,
    qp_line,
    render_or_build,
)
from newsletter.mail.links import Links
from newsletter.mail.message import build_message

WHEN = datetime(2026, 3, 2, 7, 0, 59, tzinfo=UTC)
MESSAGE_ID = "<fixed.1@example.org>"
_BOUNDARY = re.compile(rb'boundary="([^"]+)"')


@functools.cache
def mail_settings() -> Settings:
    return get_settings(
        SECRET_KEY="fast-message-test-secret-key-0123",
        UNSUBSCRIBE_MAILTO="leave@example.org",
        REPLY_TO="office@example.org",
        ORG_NAME="Justice Prayer Network",
        FROM_NAME="Prayer Bulletin",
        FROM_EMAIL="bulletin@example.org",
        LIST_ID="bulletin.example.org",
    )


@functools.cache
def variants() -> list[RenderedVariant]:
    """A whole bulletin, a one-region variant, a test send and a confirmation email."""
    text = (Path(__file__).resolve().parent.parent / "data" / "prayer-bulletin.txt").read_text("utf-8")
    renderer = Renderer(mail_settings())
    content = parse_bulletin(text, mail_settings())
    return [
        renderer.variant(content, content.region_codes),
        renderer.variant(content, ["africa"]),
        renderer.variant(content, ["africa"], test=True),
        renderer.confirmation("anna@example.org", "Anna"),
    ]


@functools.cache
def template(which: int) -> MessageTemplate:
    made = MessageTemplate.for_variant(mail_settings(), variants()[which])
    assert made is not None, "the sample variants are all covered by the fast path"
    return made


def lines(text: str) -> str:
    """`text` with its line breaks as a message carries them (the email package splits bytes)."""
    return b"\n".join(text.encode("utf-8").splitlines()).decode("utf-8") + "\n"


def check_same(which: int, recipient: Recipient, values: dict[str, str]) -> bytes | None:
    """The fast path's bytes are the slow path's (MIME boundary aside), or both refuse the recipient.
    Returns the template's own rendering, or None when it declined and the slow path was used."""
    settings, variant = mail_settings(), variants()[which]
    try:
        slow = build_message(
            settings, variant, recipient, values, message_id=MESSAGE_ID, date=WHEN
        ).as_bytes()
    except (ValueError, UnicodeError) as exc:
        with pytest.raises(type(exc)):
            render_or_build(template(which), settings, variant, recipient, values)
        return None
    fast, message_id = render_or_build(
        template(which), settings, variant, recipient, values, message_id=MESSAGE_ID, date=WHEN
    )
    boundaries = _BOUNDARY.search(fast), _BOUNDARY.search(slow)
    assert boundaries[0] is not None and boundaries[1] is not None and message_id == MESSAGE_ID
    assert fast == slow.replace(boundaries[1].group(1), boundaries[0].group(1))
    parsed = email.message_from_bytes(fast, policy=email.policy.default)
    assert isinstance(parsed, email.message.EmailMessage)
    html, text = personalize(variant, values)
    text_part, html_part = parsed.iter_parts()
    assert text_part.get_content().replace("\r\n", "\n") == lines(text)
    assert html_part.get_content().replace("\r\n", "\n") == lines(html)
    return fast if boundaries[0].group(1) != boundaries[1].group(1) else None


@pytest.mark.parametrize("which", range(4))
@pytest.mark.parametrize(
    "name", ["Ruth & Boaz", "", "Zoë Ørsted", 'Dr. J. "Jim" O\'Neil (Pastor)', "=?utf-8?q?x?="]
)
def test_a_sample_recipient_gets_the_slow_paths_bytes(which, name):
    recipient = Recipient("ruth@example.org", name, 42, delivery_id=7, bulletin_id=1)
    values = Links(mail_settings()).values(recipient, fields=variants()[which].html_placeholders)
    made = check_same(which, recipient, values)
    if name.isascii():
        assert made is not None, "a plain recipient is made by the template, not the slow path"


def test_without_a_fixed_date_and_id_each_message_gets_its_own_id():
    recipient = Recipient("ruth@example.org", "Ruth", 42, delivery_id=7, bulletin_id=1)
    values = Links(mail_settings()).values(recipient, fields=variants()[0].html_placeholders)
    (first, id1), (second, id2) = template(0).render(recipient, values), template(0).render(recipient, values)
    assert id1 != id2 and id1.encode() in first and id2.encode() in second
    parsed = email.message_from_bytes(first, policy=email.policy.default)
    assert parsed["Message-ID"] == id1 and parsed["Date"].datetime.tzinfo is not None


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40) | st.from_regex(
    r"[A-Za-z .'&\"()=?\\-]{0,70}", fullmatch=True
)
local_parts = st.from_regex(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\.[A-Za-z0-9_-]{1,8}){0,2}", fullmatch=True
)
domains = st.from_regex(r"[a-z0-9-]{1,20}(\.[a-z0-9-]{1,10}){1,2}", fullmatch=True) | st.sampled_from(
    ["bücher.example", "example.org"]
)
values_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=120)


@settings(max_examples=60, deadline=None)
@given(
    name=names,
    local=local_parts,
    domain=domains,
    field_values=st.fixed_dictionaries({f: values_text for f in PERSONAL_FIELDS}),
    which=st.integers(0, 3),
    mailto=st.booleans(),
)
def test_any_recipient_and_values_give_the_slow_paths_bytes(name, local, domain, field_values, which, mailto):
    values = dict(field_values)
    values["confirm_url"] = field_values["view_url"]
    if mailto:
        values["unsubscribe_mailto"] = "mailto:leave@example.org?subject=" + field_values["email"]
    recipient = Recipient(f"{local}@{domain}", name, 42, delivery_id=7, bulletin_id=1)
    check_same(which, recipient, values)


@given(st.text(st.characters(codec="utf-8", exclude_characters="\r\n", exclude_categories=("Cs",))))
def test_a_line_is_quoted_printable_exactly_as_the_email_package_writes_it(line):
    expected = quoprimime.body_encode(line.encode("utf-8").decode("latin-1"), 78, eol="\r\n")
    assert qp_line(line) == expected
    assert quopri.decodestring(qp_line(line).encode("ascii")) == line.encode("utf-8")


@given(st.lists(st.sampled_from([b".", b"..", b"a", b"\r\n", b" ", b".\r\n"]), max_size=20))
def test_dot_stuffing_doubles_a_leading_dot_on_every_line(chunks):
    data = b"".join(chunks)
    stuffed = dot_stuff(data)
    assert [line[1:] if line.startswith(b".") else line for line in stuffed.split(b"\n")] == data.split(b"\n")
    assert all(not line.startswith(b".") or line.startswith(b"..") for line in stuffed.split(b"\n"))
