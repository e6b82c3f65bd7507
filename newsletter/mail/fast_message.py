"""The bytes of `build_message`, made per recipient without the `email` package.

Building and serialising a MIME message with the standard library costs milliseconds; a bulletin sent
over SMTP needs one per recipient. A `MessageTemplate` is made once per variant *from the slow path
itself*: `build_message` with every value set to its own placeholder, serialised. Its bytes are cut
into literal pieces and slots:

- header fields that differ per recipient (To, Date, Message-ID, List-Unsubscribe) are written here
  the way the `email` policy writes them (a To header it cannot prove simple goes through the `email`
  package's own header folding);
- both bodies are quoted-printable. Quoted-printable encodes each line of the text on its own (a soft
  line break never joins two lines), so lines without a placeholder are encoded once, and a line with
  one is filled in and encoded per recipient with the same encoder the `email` package uses.

The template checks itself when made: filled with the placeholders, it must give the slow path's bytes
exactly, or `MessageTemplate.for_variant` returns None and the caller uses `build_message`. A
recipient the fast path does not cover (an address that needs SMTPUTF8, a value with a line break) gets
`build_message` too, so the output is always what the slow path would write, byte for byte.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid

from newsletter.content.types import Recipient, RenderedVariant
from newsletter.core.config import Settings
from newsletter.mail.links import header_safe_name
from newsletter.mail.message import _SMTP, _address, build_message, header_safe, list_unsubscribe_headers

_MAX_LINE = _SMTP.max_line_length or 78
_SENTINEL = Recipient("template@example.invalid", "", None)
_SENTINEL_ID = "<template.sentinel@example.invalid>"
_SENTINEL_DATE = datetime(2000, 1, 1, tzinfo=UTC)
_DYNAMIC_HEADERS = ("To", "Date", "Message-ID", "List-Unsubscribe")
# A display name the policy writes exactly as `str(Address)` gives it: atext and spaces only.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9 !#$%&'*+/=?^_`{|}~-]*")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")
_LINE_BREAKS = re.compile(r"[\r\n]")
# What quoted-printable leaves as it is: printable ASCII but "=", and space and tab.
_UNSAFE = re.compile(r"[^\t !-<>-~]")
_DOT_LINE = re.compile(rb"(?m)^\.")


class _Unsupported(Exception):
    """This recipient (or variant) needs the slow path."""


@dataclass(frozen=True)
class _Line:
    """One body line holding placeholders: literal pieces (already quoted), with (index, field) slots."""

    pieces: tuple[str, ...]
    slots: tuple[tuple[int, str], ...]
    escape: bool


Piece = bytes | str | _Line
"""A literal (bytes), a per-recipient header (its name, str) or a body line to fill (`_Line`)."""


def qp_line(line: str) -> str:
    """One line of text (no line break) as the `email` package's quoted-printable writes it
    (`email.quoprimime.body_encode` with the policy's line length), in a fraction of its time: a regular
    expression quotes the few unsafe characters instead of a per-character translation table."""
    return _qp_wrap(_qp_quote(line))


def _qp_quote(text: str) -> str:
    """Every byte of `text`'s UTF-8 that quoted-printable may not carry as it is, as `=XX`. Quoting is
    byte by byte, so the pieces of a line can be quoted apart and joined."""
    return _UNSAFE.sub(_quote, text.encode("utf-8").decode("latin-1"))


def _qp_wrap(encoded: str) -> str:
    """A quoted line cut into lines of at most the policy's length with soft line breaks."""
    if len(encoded) <= _MAX_LINE and not (encoded and encoded[-1] in " \t"):
        return encoded
    out: list[str] = []
    start = 0
    laststart = len(encoded) - 1 - _MAX_LINE
    while start <= laststart:
        stop = start + _MAX_LINE - 1
        # never break inside an escape sequence
        if encoded[stop - 2] == "=":
            out.append(encoded[start : stop - 1])
            start = stop - 2
        elif encoded[stop - 1] == "=":
            out.append(encoded[start:stop])
            start = stop - 1
        else:
            out.append(encoded[start:stop] + "=")
            start = stop
    if encoded and encoded[-1] in " \t":  # trailing whitespace is quoted, as RFC 2045 6.7 (3) asks
        room = start - laststart
        last = encoded[-1]
        if room >= 3:
            tail = _quote_char(last)
        elif room == 2:
            tail = last + "=\r\n"
        else:
            tail = "=\r\n" + _quote_char(last)
        out.append(encoded[start:-1] + tail)
    else:
        out.append(encoded[start:])
    return "\r\n".join(out)


def _quote_char(char: str) -> str:
    return f"={ord(char):02X}"


def _quote(match: re.Match[str]) -> str:
    return _quote_char(match.group())


def dot_stuff(data: bytes) -> bytes:
    """SMTP transparency (RFC 5321 4.5.2): a line that starts with "." gets a second one."""
    return _DOT_LINE.sub(b"..", data) if b"\n." in data or data.startswith(b".") else data


class MessageTemplate:
    """A variant's message as bytes with slots; `render` fills them for one recipient."""

    def __init__(self, settings: Settings, variant: RenderedVariant, pieces: list[Piece]) -> None:
        self.settings = settings
        self.variant = variant
        self.pieces = pieces
        self.domain = _address(settings.FROM_NAME, settings.FROM_EMAIL).domain
        self._date_second = -1
        self._date_line = b""

    @classmethod
    def for_variant(cls, settings: Settings, variant: RenderedVariant) -> MessageTemplate | None:
        """The template of `variant`, or None when its bytes cannot be cut (then use `build_message`)."""
        values = {field: _raw(ph) for field, ph in variant.text_placeholders.items()}
        if variant.regions:
            values["unsubscribe_url"] = "https://template.invalid/unsubscribe"
        slow = build_message(
            settings, variant, _SENTINEL, values, message_id=_SENTINEL_ID, date=_SENTINEL_DATE
        ).as_bytes()
        try:
            template = cls(settings, variant, _cut(slow, variant, values))
            filled = template.render(_SENTINEL, values, message_id=_SENTINEL_ID, date=_SENTINEL_DATE)
        except _Unsupported:
            return None
        return template if filled[0] == slow else None

    def render(
        self,
        recipient: Recipient,
        values: Mapping[str, str],
        *,
        message_id: str | None = None,
        date: datetime | None = None,
    ) -> tuple[bytes, str]:
        """(message bytes, Message-ID) for `recipient`: `build_message(...).as_bytes()`, only faster.

        Raises `_Unsupported` for a recipient this template does not cover; `render_or_build` handles it.
        """
        mid = header_safe(message_id) if message_id else make_msgid(domain=self.domain)
        out: list[bytes] = []
        for piece in self.pieces:
            if isinstance(piece, bytes):
                out.append(piece)
            elif isinstance(piece, _Line):
                out.append(_fill(piece, values))
            else:
                out.append(self._header(piece, recipient, values, mid, date))
        return b"".join(out), mid

    def _header(
        self, name: str, recipient: Recipient, values: Mapping[str, str], mid: str, date: datetime | None
    ) -> bytes:
        if name == "To":
            return _to_line(recipient)
        if name == "Date":
            return self._date(date)
        if name == "Message-ID":
            return _short_line("Message-ID", mid)
        mailto = values.get("unsubscribe_mailto")
        value = list_unsubscribe_headers(values, mailto)["List-Unsubscribe"]
        lines = value.replace(", ", ",\n ").split("\n")
        if not all(line.isascii() for line in lines):
            raise _Unsupported("a non-ASCII link")
        return ("List-Unsubscribe: " + "\r\n".join(lines) + "\r\n").encode("ascii")

    def _date(self, date: datetime | None) -> bytes:
        if date is not None:
            return _short_line("Date", format_datetime(date))
        now = datetime.now(UTC)
        second = int(now.timestamp())
        if second != self._date_second:
            self._date_second = second
            self._date_line = _short_line("Date", format_datetime(now.replace(microsecond=0)))
        return self._date_line


def render_or_build(
    template: MessageTemplate | None,
    settings: Settings,
    variant: RenderedVariant,
    recipient: Recipient,
    values: Mapping[str, str],
    *,
    message_id: str | None = None,
    date: datetime | None = None,
) -> tuple[bytes, str]:
    """(bytes, Message-ID) of `recipient`'s message: the template when it covers them, else the slow path.

    Raises what `build_message` raises (ValueError for an address that is not one)."""
    if template is not None:
        try:
            return template.render(recipient, values, message_id=message_id, date=date)
        except _Unsupported:
            pass
    message = build_message(settings, variant, recipient, values, message_id=message_id, date=date)
    return message.as_bytes(), str(message["Message-ID"])


def template_cache(settings: Settings) -> Callable[[RenderedVariant], MessageTemplate | None]:
    """A per-backend memo of `MessageTemplate.for_variant` (a send uses at most a few dozen variants).

    Backends ask for a template only for a batch of two or more: making one costs about two slow
    messages, and a confirmation email (a variant of its own per address) or a test send has one."""
    cache: dict[tuple[str, int | None, str, str, str], MessageTemplate | None] = {}

    def get(variant: RenderedVariant) -> MessageTemplate | None:
        key = (variant.key, variant.bulletin_id, variant.subject, variant.html, variant.text)
        if key not in cache:
            if len(cache) >= 64:
                cache.pop(next(iter(cache)))
            cache[key] = MessageTemplate.for_variant(settings, variant)
        return cache[key]

    return get


# --- cutting the slow path's bytes ---------------------------------------------------------------
def _raw(placeholder: str) -> str:
    return placeholder.replace("~nlt~", "~nlraw~")


def _cut(slow: bytes, variant: RenderedVariant, values: Mapping[str, str]) -> list[Piece]:
    """`slow` (built with every value a raw placeholder) as literal pieces and slots."""
    head, sep, body = slow.partition(b"\r\n\r\n")
    if not sep:
        raise _Unsupported("no header block")
    pieces: list[Piece] = []
    for field in re.split(rb"\r\n(?![ \t])", head):
        name = field.split(b":", 1)[0].decode("ascii")
        pieces.append(name if name in _DYNAMIC_HEADERS else field + b"\r\n")
    pieces.append(b"\r\n")
    rest = body
    for part, escape in ((variant.text, False), (variant.html, True)):
        lines = _body_lines(part, variant, escape)
        encoded = _encode(lines, values)
        before, found, rest = rest.partition(encoded.encode("ascii"))
        if not found or encoded.encode("ascii") in rest:
            raise _Unsupported("the body is not where it should be")
        pieces.append(before)
        pieces.extend(lines)
    pieces.append(rest)
    return _merge(pieces)


def _body_lines(part: str, variant: RenderedVariant, escape: bool) -> list[bytes | _Line]:
    """A body's lines, each encoded (bytes) or, when it holds a placeholder, a `_Line` to fill."""
    marks = variant.html_placeholders if escape else variant.text_placeholders
    field_of = {ph: field for field, ph in marks.items()}
    pattern = re.compile("(" + "|".join(map(re.escape, field_of)) + ")") if field_of else None
    out: list[bytes | _Line] = []
    # bytes.splitlines, as the email package splits: only CR and LF end a line.
    for line in (raw.decode("utf-8") for raw in part.encode("utf-8").splitlines()):
        pieces = pattern.split(line) if pattern else [line]
        if len(pieces) == 1:
            out.append((qp_line(line) + "\r\n").encode("ascii"))
        else:
            slots = tuple((i, field_of[pieces[i]]) for i in range(1, len(pieces), 2))
            out.append(_Line(tuple(_qp_quote(p) for p in pieces), slots, escape))
    return out


def _encode(lines: list[bytes | _Line], values: Mapping[str, str]) -> str:
    return "".join(x.decode("ascii") if isinstance(x, bytes) else _fill(x, values).decode() for x in lines)


def _fill(line: _Line, values: Mapping[str, str]) -> bytes:
    filled = list(line.pieces)
    for index, field in line.slots:
        value = values[field]
        if _LINE_BREAKS.search(value):
            raise _Unsupported("a value with a line break")
        filled[index] = _qp_quote(html_lib.escape(value) if line.escape else value)
    return (_qp_wrap("".join(filled)) + "\r\n").encode("ascii")


def _merge(pieces: list[Piece]) -> list[Piece]:
    """Neighbouring literal pieces joined into one."""
    merged: list[Piece] = []
    for piece in pieces:
        if isinstance(piece, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += piece
        elif piece != b"":
            merged.append(piece)
    return merged


# --- per-recipient headers -------------------------------------------------------------------------
def _short_line(name: str, value: str) -> bytes:
    line = f"{name}: {value}"
    if len(line) > _MAX_LINE or not line.isascii():
        raise _Unsupported(f"a {name} header that would be folded")
    return (line + "\r\n").encode("ascii")


def _to_line(recipient: Recipient) -> bytes:
    """`To:` as the policy folds it. A plain name and a plain address (the common case) are written
    directly: `Address` would parse the address again, which costs more than the rest of a message."""
    name = header_safe_name(recipient.name)
    if _PLAIN_ADDRESS.fullmatch(recipient.email) and _PLAIN_NAME.fullmatch(name) and "=?" not in name:
        line = f"To: {name} <{recipient.email}>" if name else f"To: {recipient.email}"
        if len(line) <= _MAX_LINE:
            return (line + "\r\n").encode("ascii")
    address = _address(recipient.name, recipient.email)
    if not address.username.isascii():
        raise _Unsupported("an address that needs SMTPUTF8")
    return _SMTP.fold_binary("To", _SMTP.header_factory("To", address))
