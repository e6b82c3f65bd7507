"""Each recipient's `personalization` in a Mail Send body: built as a dict, or filled into a template.

`personalization` is the definition: `to`, `substitutions` (the variant's placeholders → this
recipient's values, HTML-escaped for the HTML part), the List-Unsubscribe headers of bulk mail and
`custom_args` {delivery_id, bulletin_id}, which SendGrid copies into every webhook event.

Building that dict and serialising it costs about 10 µs a recipient, most of a worker's CPU at a
thousand recipients a request. A `Template` is therefore made once per variant *from `personalization`
itself*: the personalization of a stand-in recipient whose every value is a marker, serialised and cut
at the markers into literal bytes and named slots. Per recipient, one MAC signs all of its links
(`Links.tokens`), each value is JSON-escaped (after HTML-escaping where the slow path escapes it), and
one `%` formatting writes the bytes.

The template checks itself when made: filled with the markers, it must give the slow path's bytes
exactly, or `Template.for_variant` returns None and every recipient takes the slow path. A recipient it
does not cover (no subscriber or delivery id, another bulletin, a non-ASCII address, values that might
come near SendGrid's size limit) takes the slow path too, so the body is always what `personalization` would give, byte for
byte; `tests/esp/test_personalization.py` checks that over generated names and addresses.
"""

from __future__ import annotations

import email.utils
import html as html_lib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import idna
import orjson

from newsletter.content.render import substitutions
from newsletter.content.types import Recipient, RenderedVariant
from newsletter.mail.links import Links, header_safe_name
from newsletter.mail.message import ascii_address, list_unsubscribe_headers
from newsletter.mail.tokens import SIGNED_TOGETHER, Purpose, make_tokens

MAX_SUBSTITUTION_BYTES = 10_000
"""SendGrid's limit on one personalization's substitutions (keys and values, in bytes)."""

# Markers: a name in brackets, printable (so a marker name is written as it is, the way a plain name is)
# and never in a placeholder or a URL. "&" tells a value the slow path HTML-escaped ("&amp;") from the
# same value written raw; the double space in the name, the display name (collapsed) from the `to`
# name (as given).
_EMAIL = "\u27e6email&\u27e7"
_NAME = "\u27e6name&  \u27e7"
_TOKEN = {purpose: f"\u27e6{purpose.value}\u27e7" for purpose in Purpose}
_DELIVERY_ID = 987_654_321_987_654_321
_TOKEN_CHARS = 40
"""The length of a token (`mail.tokens`): the most a token slot can add to a value."""
# What html.escape changes: a value without any of these is its own HTML escape.
_HTML_SPECIAL = re.compile(r"[&<>\"']")


def personalization(links: Links, variant: RenderedVariant, r: Recipient) -> dict[str, Any] | str:
    """The personalization for `r`, or why SendGrid would refuse it (its substitutions are too large:
    SendGrid answers that with an unhelpful 400 for the whole batch)."""
    values = links.values(r, fields=variant.html_placeholders)
    subs = substitutions(variant, values)
    problem = _substitution_problem(subs)
    if problem:
        return problem
    address = esp_address(r.email)
    to = {"email": address, "name": to_name(r.name)} if r.name else {"email": address}
    p: dict[str, Any] = {"to": [to], "substitutions": subs}
    if variant.regions:  # bulk mail; a confirmation (no regions) is transactional
        p["headers"] = list_unsubscribe_headers(values, values.get("unsubscribe_mailto"))
    bulletin_id = r.bulletin_id if r.bulletin_id is not None else variant.bulletin_id
    if r.delivery_id is not None or bulletin_id is not None:
        args = {}
        if r.delivery_id is not None:
            args["delivery_id"] = str(r.delivery_id)
        if bulletin_id is not None:
            args["bulletin_id"] = str(bulletin_id)
        p["custom_args"] = args
    return p


def esp_address(email: str) -> str:
    """The `to.email` SendGrid is given: a non-ASCII domain in its ASCII form (`ascii_address`, as the
    SMTP envelope carries it); the local part as it is. Subscribers' addresses are stored with the
    Unicode domain."""
    try:
        return ascii_address(email)
    except idna.IDNAError:
        return email  # SendGrid refuses it, for this recipient alone


def to_name(name: str) -> str:
    """The `to.name` SendGrid is given: the name as written, `header_safe_name` where it needs
    neutralising, and as an RFC 5322 quoted-string when it holds a comma or a semicolon.

    SendGrid's v3 API reads an unquoted "Doe, Jane" as a list: it answers 202, then drops the message
    as an invalid address (its docs: names "cannot include commas or semicolons"; django-anymail quotes
    them the same way)."""
    shown = name if name.isprintable() and "=?" not in name else header_safe_name(name)
    if "," in shown or ";" in shown:
        return '"' + email.utils.quote(shown) + '"'
    return shown


def encode(value: Any) -> bytes:
    """Compact JSON. orjson: the body of a 1000-recipient request is about 1 MB, and the standard
    library's encoder spent ~13 µs per recipient on it. OPT_NON_STR_KEYS: rendered placeholders are
    `Markup`, a str subclass orjson refuses as a key."""
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)


def _substitution_problem(subs: Mapping[str, str]) -> str:
    """Why SendGrid would refuse these substitutions, or "".

    Values are str by `render.substitutions`' contract; only the size needs counting, and exactly
    (in UTF-8 bytes) only when the characters alone come near the limit.
    """
    size = sum(map(len, subs)) + sum(map(len, subs.values()))
    if size * 4 > MAX_SUBSTITUTION_BYTES:
        size = sum(len(k.encode()) + len(v.encode()) for k, v in subs.items())
        if size > MAX_SUBSTITUTION_BYTES:
            return f"substitutions take {size} bytes, over SendGrid's {MAX_SUBSTITUTION_BYTES} per recipient"
    return ""


class _MarkerLinks(Links):
    """`Links` whose tokens are markers: what a template is cut from."""

    def tokens(
        self, subscriber_id: int | None, secret: str, purposes: Iterable[Purpose], now: datetime | None = None
    ) -> dict[Purpose, str]:
        return {purpose: _TOKEN[purpose] for purpose in purposes}


def _json_inner(text: str) -> bytes:
    """`text` as the inside of a JSON string, exactly as orjson writes it in a whole document."""
    return orjson.dumps(text)[1:-1]


@dataclass(frozen=True)
class Template:
    """One variant's personalization as bytes with `%(slot)s` slots, for recipients with a name and
    without one (the slow path then leaves `to.name` out)."""

    links: Links
    bulletin_id: int | None
    named: bytes
    unnamed: bytes
    purposes: tuple[Purpose, ...]
    """The purposes of the tokens in the links."""
    token_slots: tuple[tuple[bytes, Purpose], ...]
    """The slot of each of those tokens."""
    signed_together: bool
    """All of them are signed by one MAC (a bulletin's links): `make_tokens` directly."""
    size: int
    """The bytes of the substitutions, but the name and address in them (an upper bound: see `fill`)."""
    personal_values: int
    """How many substitution values hold the name or the address."""

    @classmethod
    def for_variant(cls, links: Links, variant: RenderedVariant) -> Template | None:
        """The template of `variant`, or None when one cut from the slow path does not reproduce it."""
        markers = _MarkerLinks(links.settings)
        stand_in = Recipient(_EMAIL, _NAME, 1, _DELIVERY_ID, variant.bulletin_id)
        shown = header_safe_name(_NAME)
        slots = {
            _json_inner(_EMAIL): b"email",
            _json_inner(html_lib.escape(_EMAIL)): b"email_html",
            _json_inner(_NAME): b"to_name",
            _json_inner(shown): b"name",
            _json_inner(html_lib.escape(shown)): b"name_html",
            str(_DELIVERY_ID).encode(): b"delivery_id",
            **{_json_inner(token): purpose.value.encode() for purpose, token in _TOKEN.items()},
        }
        named, unnamed = (
            personalization(markers, variant, who) for who in (stand_in, stand_in._replace(name=""))
        )
        if isinstance(named, str) or isinstance(unnamed, str):
            return None
        named_bytes, unnamed_bytes = _cut(encode(named), slots), _cut(encode(unnamed), slots)
        purposes = tuple(p for p in Purpose if b"%(" + p.value.encode() + b")s" in named_bytes)
        subs = named["substitutions"]
        personal = {_EMAIL, html_lib.escape(_EMAIL), shown, html_lib.escape(shown)}
        template = cls(
            links,
            variant.bulletin_id,
            named_bytes,
            unnamed_bytes,
            purposes,
            tuple((p.value.encode(), p) for p in purposes),
            all(p in SIGNED_TOGETHER for p in purposes),
            sum(
                len(k.encode()) + (0 if v in personal else len(v.encode()) + _TOKEN_CHARS)
                for k, v in subs.items()
            ),
            sum(1 for v in subs.values() if v in personal),
        )
        filled = {slot: text for text, slot in slots.items()}
        if (template.named % filled, template.unnamed % filled) != (encode(named), encode(unnamed)):
            return None
        return template

    def fill(self, r: Recipient) -> bytes | None:
        """`r`'s personalization, or None when `r` needs the slow path (see the module docstring)."""
        email, name, sid, delivery_id, bulletin_id, secret = r
        if sid is None or delivery_id is None or bulletin_id != self.bulletin_id or not email.isascii():
            return None  # (a non-ASCII address: `to.email` differs from the address shown; see esp_address)
        # A value is at most 6 bytes per character of the name or address (an HTML entity such as
        # "&#x27;"); only near SendGrid's limit need the slow path count exactly.
        if self.size + 6 * (len(name) + len(email) + 6) * self.personal_values > MAX_SUBSTITUTION_BYTES:
            return None
        # What the slow path does to a name, short-cut for the usual one (printable, no "=?", no comma or
        # semicolon, single spaces): `to` keeps it as given, the values are `header_safe_name` of it
        # (or "friend").
        plain = name.isprintable() and "=?" not in name and "," not in name and ";" not in name
        if plain and name and "  " not in name and name[0] != " " and name[-1] != " ":
            to_json = shown = _json_inner(name)
            shown_text = name
        else:
            shown_text = header_safe_name(name) or "friend"
            shown = _json_inner(shown_text)
            to_json = _json_inner(to_name(name))
        email_json = _json_inner(email)
        slots = {
            b"email": email_json,
            b"email_html": _json_inner(html_lib.escape(email)) if _HTML_SPECIAL.search(email) else email_json,
            b"name": shown,
            b"name_html": _json_inner(html_lib.escape(shown_text))
            if _HTML_SPECIAL.search(shown_text)
            else shown,
            b"to_name": to_json,
            b"delivery_id": b"%d" % delivery_id,
        }
        tokens = (
            make_tokens(self.links.keys, sid, self.purposes, secret=secret)
            if self.signed_together
            else self.links.tokens(sid, secret, self.purposes)
        )
        for slot, purpose in self.token_slots:
            slots[slot] = tokens[purpose].encode()
        return self.named % slots if name else self.unnamed % slots


def _cut(data: bytes, slots: Mapping[bytes, bytes]) -> bytes:
    """`data` with each marker replaced by its `%(slot)s`, and every other `%` doubled."""
    pattern = re.compile(b"|".join(re.escape(m) for m in sorted(slots, key=len, reverse=True)))
    out = []
    start = 0
    for match in pattern.finditer(data):
        out.append(data[start : match.start()].replace(b"%", b"%%"))
        out.append(b"%(" + slots[match.group()] + b")s")
        start = match.end()
    out.append(data[start:].replace(b"%", b"%%"))
    return b"".join(out)
