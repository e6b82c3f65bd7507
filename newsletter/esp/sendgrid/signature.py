"""SendGrid's Signed Event Webhook: ECDSA P-256 / SHA-256 over `timestamp + raw body`.

The public key (Settings → Mail Settings → Signed Event Webhook) is base64 DER as SendGrid shows it, or
PEM. The signature is checked over the exact bytes received, before anything parses the body.
"""

from __future__ import annotations

import base64
import binascii
import time
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"


MAX_SIGNATURE_BYTES = 72
"""The longest DER ECDSA P-256 signature: a SEQUENCE of two INTEGERs of at most 33 bytes (RFC 3279)."""


class BadKey(ValueError):
    pass


@lru_cache(maxsize=8)
def load_public_key(text: str) -> ec.EllipticCurvePublicKey:
    """The EC public key from base64 DER (SendGrid's form) or PEM; BadKey when it is neither."""
    text = text.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode("ascii"))
        else:
            key = serialization.load_der_public_key(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, UnicodeEncodeError) as exc:
        raise BadKey(f"SENDGRID_WEBHOOK_PUBLIC_KEY is not a public key: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BadKey("SENDGRID_WEBHOOK_PUBLIC_KEY is not an elliptic-curve key")
    return key


def signature_valid(key: ec.EllipticCurvePublicKey, signature: str, timestamp: str, body: bytes) -> bool:
    """True when `signature` (base64 DER ECDSA) signs `timestamp` followed by the raw `body`."""
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, timestamp.encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error, UnicodeEncodeError):
        return False
    return True


def signature_shaped(signature: str) -> bool:
    """Whether `signature` can be a P-256 ECDSA signature at all (base64 of a DER SEQUENCE of two
    INTEGERs, at most `MAX_SIGNATURE_BYTES`): checked before a body is read, so a header that cannot
    verify anything costs no buffer."""
    if len(signature) > 4 * MAX_SIGNATURE_BYTES // 3 + 4 or not signature.isascii():
        return False
    try:
        raw = base64.b64decode(signature, validate=True)
        r, s = decode_dss_signature(raw)
    except (ValueError, binascii.Error):
        return False
    return len(raw) <= MAX_SIGNATURE_BYTES and 0 < r < 1 << 256 and 0 < s < 1 << 256


def timestamp_fresh(timestamp: str, max_age: int, *, now: float | None = None) -> bool:
    """True when `timestamp` (unix seconds) is within `max_age` seconds of now, either way."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    now = time.time() if now is None else now
    return abs(now - int(timestamp)) <= max_age
