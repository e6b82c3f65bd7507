"""Signed, URL-safe tokens naming a subscriber and a purpose: the key to every link in an email.

A token is 40 characters of base64url (no padding, nothing a URL or a SendGrid substitution would
escape: only ``A-Z a-z 0-9 - _``) encoding 30 bytes::

    byte 0      version (high nibble) and purpose (low nibble)
    bytes 1-8   subscriber id, unsigned big-endian
    bytes 9-12  issue time, unix seconds, unsigned big-endian
    bytes 13-29 HMAC-SHA256 of bytes 0-12, truncated to 136 bits

Thirty bytes is a multiple of three, so every 40-character string decodes to exactly one byte string
and no two token strings mean the same thing: changing any character changes the bytes, which the tag
refuses. The send path makes three tokens per recipient at tens of thousands of recipients a second,
hence this compact format with pre-keyed HMAC states instead of itsdangerous (a few µs a token
instead of 20 or more).

Keys come newest first (`Settings.secret_keys`): the first signs, every one verifies, so a key can be
rotated without breaking the links in emails already sent.

Every token is also bound to its subscriber's own random `secret` (`Subscriber.link_secret`), which the
tag covers but the token does not carry: erasing the subscriber destroys the secret, so every link they
were ever sent stops working, even if a database restore or a sequence reset handed their id to someone
else. A reader first takes the id the token claims (`claimed_id`), looks up that subscriber's secret,
then verifies (`read_claims`).
"""

from __future__ import annotations

import binascii
import hmac
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from hashlib import sha256


class Purpose(StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    PREFERENCES = "preferences"
    VIEW = "view"
    CONFIRM = "confirm"
    MY_DATA = "my-data"
    """Export and erase: a short-lived link sent by email on request, never printed in a shared page."""


class TokenError(Exception):
    """A token that must not be honoured. `reason` is one of REASONS, for logs and the page shown."""

    REASONS = ("malformed", "bad signature", "expired", "wrong purpose")

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_VERSION = 1
_PURPOSE_CODE: dict[Purpose, int] = {
    Purpose.UNSUBSCRIBE: 1,
    Purpose.PREFERENCES: 2,
    Purpose.VIEW: 3,
    Purpose.CONFIRM: 4,
    Purpose.MY_DATA: 5,
}
_PURPOSE_BY_CODE = {code: purpose for purpose, code in _PURPOSE_CODE.items()}
_PAYLOAD = struct.Struct(">BQI")
_TAG_BYTES = 17
_TOKEN_CHARS = 40
_MAX_ID = 2**64 - 1
_BLOCK = 64  # SHA-256 block size
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
# "+" and "/" are not in the URL-safe alphabet: mapped to "!", which strict decoding refuses.
_FROM_URLSAFE = bytes.maketrans(b"-_+/", b"+/!!")

assert (_PAYLOAD.size + _TAG_BYTES) * 4 == _TOKEN_CHARS * 3


class _Mac:
    """HMAC-SHA256 (RFC 2104) with the keyed inner and outer hash states computed once.

    Each tag then costs two `.copy()`s of C hash objects instead of the `hmac` module's Python-level
    object per call: about half the time, which matters at three tokens per recipient.
    """

    __slots__ = ("inner", "outer")

    def __init__(self, key: bytes) -> None:
        if len(key) > _BLOCK:
            key = sha256(key).digest()
        key = key.ljust(_BLOCK, b"\0")
        self.inner = sha256(bytes(b ^ 0x36 for b in key))
        self.outer = sha256(bytes(b ^ 0x5C for b in key))

    def tag(self, payload: bytes) -> bytes:
        inner = self.inner.copy()
        inner.update(payload)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:_TAG_BYTES]


@lru_cache(maxsize=32)
def _macs(keys: tuple[str, ...]) -> tuple[_Mac, ...]:
    if not keys:
        raise ValueError("no signing key given")
    return tuple(_Mac(k.encode("utf-8")) for k in keys)


def _seconds(now: datetime | None) -> int:
    return int(time.time()) if now is None else int(now.timestamp())


def make_token(
    keys: Sequence[str],
    subscriber_id: int,
    purpose: Purpose,
    *,
    secret: str = "",
    now: datetime | None = None,
) -> str:
    """A token for `subscriber_id` and `purpose`, signed with the first of `keys` and bound to the
    subscriber's `secret`, issued at `now`."""
    if not 0 <= subscriber_id <= _MAX_ID:
        raise ValueError(f"subscriber id out of range: {subscriber_id}")
    issued = _seconds(now)
    payload = _PAYLOAD.pack((_VERSION << 4) | _PURPOSE_CODE[purpose], subscriber_id, issued)
    raw = payload + _macs(tuple(keys))[0].tag(payload + secret.encode("utf-8"))
    return binascii.b2a_base64(raw, newline=False).translate(_TO_URLSAFE).decode("ascii")


def _decode(token: object) -> bytes:
    if not isinstance(token, str) or len(token) != _TOKEN_CHARS:
        raise TokenError("malformed")
    try:
        raw = binascii.a2b_base64(token.encode("ascii").translate(_FROM_URLSAFE), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error):
        raise TokenError("malformed") from None
    if len(raw) != _PAYLOAD.size + _TAG_BYTES:  # "=" padding inside 40 characters
        raise TokenError("malformed")
    return raw


def claimed_id(token: str) -> int:
    """The subscriber id `token` claims, NOT verified: only for looking up the secret to verify it with.

    Raises TokenError("malformed") for anything that is not a token at all.
    """
    _, subscriber_id, _ = _PAYLOAD.unpack(_decode(token)[: _PAYLOAD.size])
    return int(subscriber_id)


@dataclass(frozen=True)
class Claims:
    """What a verified token says: whom it names and when it was issued."""

    subscriber_id: int
    issued_at: datetime


def read_claims(
    keys: Sequence[str],
    token: str,
    purpose: Purpose,
    *,
    max_age: timedelta,
    secret: str = "",
    now: datetime | None = None,
) -> Claims:
    """The claims of `token`, if any of `keys` signed it for `purpose`, bound to `secret`, within `max_age`.

    Raises TokenError otherwise. The checks run in the order of the reasons, so a forged token is
    never told whether its purpose or age would have passed.
    """
    raw = _decode(token)
    payload, tag = raw[: _PAYLOAD.size], raw[_PAYLOAD.size :]
    signed = payload + secret.encode("utf-8")
    for mac in _macs(tuple(keys)):
        if hmac.compare_digest(mac.tag(signed), tag):
            break
    else:
        raise TokenError("bad signature")
    head, subscriber_id, issued = _PAYLOAD.unpack(payload)
    if head >> 4 != _VERSION:
        raise TokenError("malformed")
    if _PURPOSE_BY_CODE.get(head & 0x0F) != purpose:
        raise TokenError("wrong purpose")
    if _seconds(now) - issued > max_age.total_seconds():
        raise TokenError("expired")
    return Claims(int(subscriber_id), datetime.fromtimestamp(issued, UTC))


def read_token(
    keys: Sequence[str],
    token: str,
    purpose: Purpose,
    *,
    max_age: timedelta,
    secret: str = "",
    now: datetime | None = None,
) -> int:
    """The subscriber id of a valid `token` (see `read_claims`)."""
    return read_claims(keys, token, purpose, max_age=max_age, secret=secret, now=now).subscriber_id
