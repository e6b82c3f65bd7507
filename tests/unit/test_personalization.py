"""A SendGrid personalization from the per-variant template (`Template.fill`) is byte for byte the one
the slow path (`personalization`) builds, for every name, address and setting; a recipient the
template does not cover takes the slow path, and the body says the same either way."""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.content.bulletins import parse_bulletin
from newsletter.content.render import Renderer
from newsletter.content.types import Recipient, RenderedVariant
from newsletter.core.config import Settings, get_settings
from newsletter.esp.sendgrid.personalization import Template, encode, personalization
from newsletter.esp.sendgrid.send import SendGridBackend
from newsletter.mail.links import Links

ISSUED = 1_772_434_800
SETTINGS = {
    "plain": {},
    "mailto and no archive": {"UNSUBSCRIBE_MAILTO": "leave@example.org", "ARCHIVE_ENABLED": False},
    "odd base url": {"BASE_URL": 'https://example.org/a%20b/&x="1"/'},
}


@functools.cache
def settings_for(kind: str) -> Settings:
    return get_settings(
        SECRET_KEY="personalization-test-secret-key-0123",
        ESP_BACKEND="sendgrid",
        SENDGRID_API_KEY="SG.unused",
        SENDGRID_HOST="http://127.0.0.1:9",
        **SETTINGS[kind],
    )


@functools.cache
def variants(kind: str) -> tuple[RenderedVariant, ...]:
    """The whole sample bulletin, one region of it, and a confirmation email."""
    text = (Path(__file__).resolve().parent.parent / "data" / "prayer-bulletin.txt").read_text("utf-8")
    renderer = Renderer(settings_for(kind))
    content = dataclasses.replace(parse_bulletin(text, settings_for(kind)), id=7)
    return (
        renderer.variant(content, content.region_codes),
        renderer.variant(content, ["africa"]),
        renderer.confirmation("anna@example.org", "Anna"),
    )


@functools.cache
def template(kind: str, which: int) -> Template:
    made = Template.for_variant(Links(settings_for(kind)), variants(kind)[which])
    assert made is not None, "every variant of the sample is covered by a template"
    return made


@contextmanager
def frozen_clock() -> Iterator[None]:
    """Both paths sign their links at the same second."""
    with mock.patch("newsletter.mail.tokens._seconds", lambda _now: ISSUED):
        yield


def slow(kind: str, which: int, r: Recipient) -> bytes | str:
    p = personalization(Links(settings_for(kind)), variants(kind)[which], r)
    return p if isinstance(p, str) else encode(p)


def recipient_of(kind: str, which: int, email: str, name: str, sid: int, did: int) -> Recipient:
    bulletin_id = variants(kind)[which].bulletin_id
    return Recipient(email, name, sid, did, bulletin_id, "s3cr3t-of-this-subscriber")


names = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60) | st.from_regex(
    r"[A-Za-z .,;'&\"<>()=?\\%-]{0,70}", fullmatch=True
)
emails = (
    st.from_regex(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\"<>-]{1,30}@[a-z0-9.-]{1,30}", fullmatch=True) | st.emails()
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(list(SETTINGS)),
    which=st.integers(0, 2),
    name=names,
    email=emails,
    sid=st.integers(0, 2**63),
    did=st.integers(1, 2**63),
)
def test_the_template_writes_exactly_what_the_slow_path_builds(kind, which, name, email, sid, did):
    r = recipient_of(kind, which, email, name, sid, did)
    with frozen_clock():
        fast = template(kind, which).fill(r)
        expected = slow(kind, which, r)
    assert fast is not None, "names and addresses of usual length are the template's to write"
    assert fast == expected
    assert json.loads(fast)["to"][0]["email"] == email


@pytest.mark.parametrize("kind", list(SETTINGS))
@pytest.mark.parametrize("which", range(3))
@pytest.mark.parametrize(
    "name",
    [
        "Ruth",
        "Ruth & Boaz",
        "",
        "Zoë Ørsted",
        'Dr. J. "Jim" O\'Neil',
        "  Two  spaces ",
        "Two  spaces",
        "=?utf-8?q?x?=",
        "Doe, Jane",
        "Smith; Bob",
    ],
)
def test_usual_recipients_are_written_by_the_template(kind, which, name):
    r = recipient_of(kind, which, "o'neil+prayer@example.org", name, 42, 1001)
    with frozen_clock():
        fast = template(kind, which).fill(r)
        assert fast is not None, "a usual recipient is made by the template, not the slow path"
        assert fast == slow(kind, which, r)
    personal = json.loads(fast)
    assert personal["custom_args"]["delivery_id"] == "1001"
    if which == 2:
        assert "headers" not in personal, "a confirmation is transactional mail: no List-Unsubscribe"
    else:
        assert personal["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_recipients_the_template_does_not_cover_take_the_slow_path():
    tpl = template("plain", 0)
    bulletin = variants("plain")[0].bulletin_id
    test_send = Recipient("staff@example.org", "Staff", None, None, bulletin)
    other_bulletin = Recipient("ruth@example.org", "Ruth", 1, 5, 99)
    huge = Recipient("ruth@example.org", "R" * 3000, 1, 5, bulletin)
    assert [tpl.fill(r) for r in (test_send, other_bulletin, huge)] == [None, None, None]


@pytest.mark.parametrize("kind", list(SETTINGS))
def test_a_body_is_the_same_whichever_path_writes_each_recipient(kind):
    variant = variants(kind)[0]
    recipients = [
        Recipient("ruth@example.org", "Ruth", 1, 11, variant.bulletin_id, "a"),
        Recipient("staff@example.org", "Staff", None, None, variant.bulletin_id),  # a test send
        Recipient("big@example.org", "Ü" * 3000, 3, 13, variant.bulletin_id, "c"),  # too large: refused
        Recipient("anna&co@example.org", "", 4, 14, variant.bulletin_id, "d"),
    ]
    backend = SendGridBackend(settings_for(kind))
    with frozen_clock():
        body, refused = backend.body(variant, recipients)
        expected = [slow(kind, 0, r) for r in recipients]
    assert [r.recipient for r in refused] == [recipients[2]] and "over SendGrid's" in refused[0].error
    document = json.loads(body)
    assert [encode(p) for p in document["personalizations"]] == [e for e in expected if isinstance(e, bytes)]
    assert document["content"][0]["type"] == "text/plain" and document["subject"] == variant.subject
