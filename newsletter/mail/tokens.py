"""Signed, URL-safe tokens naming a subscriber and a purpose: the key to every link in an email.

A token is 40 characters of base64url (no padding, nothing a URL or a SendGrid substitution would
escape: only ``A-Z a-z 0-9 - _``) encoding 30 bytes::

    byte 0      version (high nibble) and purpose (low nibble)
    bytes 1-8   subscriber id, unsigned big-endian
    bytes 9-12  issue time, unix seconds, unsigned big-endian
    bytes 13-29 the tag: 136 bits of an HMAC (see the versions below)

Thirty bytes is a multiple of three, so every 40-character string decodes to exactly one byte string
and no two token strings mean the same thing: changing any character changes the bytes, which the tag
refuses. The send path makes the links of tens of thousands of recipients a second, hence this compact
format with pre-keyed HMAC states instead of itsdangerous (a few µs a token instead of 20 or more).

Two versions, same layout, both verified:

- version 2, for the links every bulletin carries (unsubscribe, preferences, view: the *lane*
  purposes): one keyed BLAKE2b (RFC 7693; personalisation "newsletter-links", a 51-byte digest) over
  (subscriber id, issue time, secret), and each lane purpose takes its own 17-byte slice of it as its
  tag, in the order unsubscribe, preferences, view. One MAC per recipient thus signs all
  of that recipient's links (`make_tokens`), while each link still opens only its own purpose: the
  slices of a MAC are independent, so the unsubscribe link a mailbox provider holds (List-Unsubscribe)
  tells nothing about the preferences tag of the same email. The purpose nibble picks the slice, so
  changing it is refused as a bad signature.
- version 1, for the links sent alone (confirm, my-data), and for lane-purpose links issued before
  version 2: HMAC-SHA256 over (bytes 0-12, secret), truncated to 17 bytes.

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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from hashlib import blake2b, sha256


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
_LANE_VERSION = 2
_LANES = (Purpose.UNSUBSCRIBE, Purpose.PREFERENCES, Purpose.VIEW)
"""The purposes signed together by one version-2 MAC, each by its own slice (its index here)."""
SIGNED_TOGETHER = frozenset(_LANES)
"""The purposes `make_tokens` signs with one MAC: the links every bulletin carries."""
_PURPOSE_CODE: dict[Purpose, int] = {
    Purpose.UNSUBSCRIBE: 1,
    Purpose.PREFERENCES: 2,
    Purpose.VIEW: 3,
    Purpose.CONFIRM: 4,
    Purpose.MY_DATA: 5,
}
_PURPOSE_BY_CODE = {code: purpose for purpose, code in _PURPOSE_CODE.items()}
_PAYLOAD = struct.Struct(">BQI")
_SUBJECT = struct.Struct(">QI")
_TAG_BYTES = 17
_BLAKE2B_KEY_BYTES = 64
_PERSON = b"newsletter-links"
"""BLAKE2b's personalisation: these MACs can never collide with another use of the same key."""
_LANE_SLICE = {
    purpose: (
        bytes(((_LANE_VERSION << 4) | _PURPOSE_CODE[purpose],)),
        lane * _TAG_BYTES,
        (lane + 1) * _TAG_BYTES,
    )
    for lane, purpose in enumerate(_LANES)
}
"""Each lane purpose's token head byte, and where its tag lies in the MAC."""
_LANE_BY_CODE = {_PURPOSE_CODE[purpose]: _LANE_SLICE[purpose] for purpose in _LANES}
_TOKEN_CHARS = 40
_MAX_ID = 2**64 - 1
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
# "+" and "/" are not in the URL-safe alphabet: mapped to "!", which strict decoding refuses.
_FROM_URLSAFE = bytes.maketrans(b"-_+/", b"+/!!")

assert (_PAYLOAD.size + _TAG_BYTES) * 4 == _TOKEN_CHARS * 3


class _Mac:
    """One signing key, its MAC states computed once: each MAC then costs a `.copy()` of a C hash object
    instead of the `hmac` module's Python-level object per call, which matters at a MAC per recipient."""

    __slots__ = ("inner", "lanes_base", "outer")

    def __init__(self, key: bytes) -> None:
        # Version 1: HMAC-SHA256 (RFC 2104), its inner and outer states keyed here.
        block = sha256().block_size
        padded = (sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self.inner = sha256(bytes(b ^ 0x36 for b in padded))
        self.outer = sha256(bytes(b ^ 0x5C for b in padded))
        # Version 2: keyed BLAKE2b (RFC 7693), a MAC by design; its key is at most 64 bytes.
        lanes_key = key if len(key) <= _BLAKE2B_KEY_BYTES else blake2b(key).digest()
        self.lanes_base = blake2b(key=lanes_key, digest_size=len(_LANES) * _TAG_BYTES, person=_PERSON)

    def tag(self, payload: bytes, secret: bytes) -> bytes:
        """The tag of a token's first 13 bytes (`payload`), bound to the subscriber's `secret`."""
        if payload[0] >> 4 == _LANE_VERSION:
            lane = _LANE_BY_CODE.get(payload[0] & 0x0F)
            if lane is None:
                return b""  # no version-2 token has this purpose: matches no tag
            _, start, end = lane
            return self.lanes(payload[1:], secret)[start:end]
        inner = self.inner.copy()
        inner.update(payload + secret)
        outer = self.outer.copy()
        outer.update(inner.digest())
        return outer.digest()[:_TAG_BYTES]

    def lanes(self, subject: bytes, secret: bytes) -> bytes:
        """The version-2 MAC of (subscriber id, issue time) = `subject`: every lane's tag, in lane order."""
        mac = self.lanes_base.copy()
        mac.update(subject + secret)
        return mac.digest()


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
    if purpose in _LANE_SLICE:
        return make_tokens(keys, subscriber_id, (purpose,), secret=secret, now=now)[purpose]
    payload = _PAYLOAD.pack((_VERSION << 4) | _PURPOSE_CODE[purpose], _checked(subscriber_id), _seconds(now))
    return _text(payload + _macs(tuple(keys))[0].tag(payload, secret.encode("utf-8")))


def make_tokens(
    keys: Sequence[str],
    subscriber_id: int,
    purposes: Iterable[Purpose],
    *,
    secret: str = "",
    now: datetime | None = None,
) -> dict[Purpose, str]:
    """A token for each of `purposes` (unsubscribe, preferences, view), all signed by one MAC.

    What a bulletin's links need per recipient, for the price of about one token (see the module doc).
    """
    subject = _SUBJECT.pack(_checked(subscriber_id), _seconds(now))
    tags = _macs(tuple(keys))[0].lanes(subject, secret.encode("utf-8"))
    tokens: dict[Purpose, str] = {}
    for purpose in purposes:
        lane = _LANE_SLICE.get(purpose)
        if lane is None:
            raise ValueError(f"{purpose} links are signed on their own (make_token), not with the others")
        head, start, end = lane
        tokens[purpose] = _text(head + subject + tags[start:end])
    return tokens


def _checked(subscriber_id: int) -> int:
    if not 0 <= subscriber_id <= _MAX_ID:
        raise ValueError(f"subscriber id out of range: {subscriber_id}")
    return subscriber_id


def _text(raw: bytes) -> str:
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
    bound = secret.encode("utf-8")
    for mac in _macs(tuple(keys)):
        if hmac.compare_digest(mac.tag(payload, bound), tag):
            break
    else:
        raise TokenError("bad signature")
    head, subscriber_id, issued = _PAYLOAD.unpack(payload)
    if head >> 4 not in (_VERSION, _LANE_VERSION):
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
