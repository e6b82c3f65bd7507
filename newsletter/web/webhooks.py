"""`POST /webhooks/sendgrid`: SendGrid's signed Event Webhook, applied by `newsletter.events`.

SendGrid signs `timestamp + raw body` with ECDSA P-256 / SHA-256 and sends the base64 DER signature and
the timestamp in two headers; the public key (Settings → Mail Settings → Signed Event Webhook) is
`SENDGRID_WEBHOOK_PUBLIC_KEY`, base64 DER as SendGrid shows it, or PEM. Answers:

    200  stored and applied (replayed events are recognised by id and not applied twice)
    400  not a batch of events: nothing stored
    403  signature missing or wrong, or timestamp older (or further ahead) than WEBHOOK_MAX_AGE_SECONDS
    413  body larger than MAX_BODY_BYTES
    503  no public key configured: every request is refused rather than trusted

The signature is checked with `cryptography` over the exact bytes received, before the body is parsed.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from functools import lru_cache
from typing import Annotated

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from newsletter.events import MalformedEvents, apply_events, parse_events
from newsletter.web.deps import SessionDep, SettingsDep

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
MAX_BODY_BYTES = 16 * 1024 * 1024
"""SendGrid posts batches of up to a few thousand events; far more than that is not SendGrid."""

router = APIRouter()


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


def timestamp_fresh(timestamp: str, max_age: int, *, now: float | None = None) -> bool:
    """True when `timestamp` (unix seconds) is within `max_age` seconds of now, either way."""
    if not timestamp.isascii() or not timestamp.isdigit() or len(timestamp) > 12:
        return False
    now = time.time() if now is None else now
    return abs(now - int(timestamp)) <= max_age


async def _raw_body(request: Request) -> bytes:
    return await request.body()


def _refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@router.post("/webhooks/sendgrid", include_in_schema=False)
def sendgrid_events(
    body: Annotated[bytes, Depends(_raw_body)],
    settings: SettingsDep,
    session: SessionDep,
    signature: Annotated[str, Header(alias=SIGNATURE_HEADER)] = "",
    timestamp: Annotated[str, Header(alias=TIMESTAMP_HEADER)] = "",
) -> JSONResponse:
    if not settings.SENDGRID_WEBHOOK_PUBLIC_KEY.strip():
        log.error("SendGrid webhook refused: SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
        return _refuse(503, "webhook not configured")
    try:
        key = load_public_key(settings.SENDGRID_WEBHOOK_PUBLIC_KEY)
    except BadKey as exc:
        log.error("SendGrid webhook refused: %s", exc)
        return _refuse(503, "webhook not configured")
    if len(body) > MAX_BODY_BYTES:
        return _refuse(413, "body too large")
    if not signature or not timestamp or not signature_valid(key, signature, timestamp, body):
        log.warning("SendGrid webhook: bad or missing signature")
        return _refuse(403, "bad signature")
    if not timestamp_fresh(timestamp, settings.WEBHOOK_MAX_AGE_SECONDS):
        log.warning("SendGrid webhook: stale timestamp %s", timestamp)
        return _refuse(403, "stale timestamp")
    try:
        events = parse_events(body)
    except MalformedEvents as exc:
        log.warning("SendGrid webhook: malformed body: %s", exc)
        return _refuse(400, str(exc))
    report = apply_events(session, events)
    session.commit()
    return JSONResponse({"received": report.received, "new": report.new})
