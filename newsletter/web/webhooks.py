"""`POST /webhooks/sendgrid`: SendGrid's signed Event Webhook, applied by `newsletter.sending.events`.

SendGrid signs `timestamp + raw body` with ECDSA P-256 / SHA-256 and sends the base64 DER signature and
the timestamp in two headers; the public key (Settings → Mail Settings → Signed Event Webhook) is
`SENDGRID_WEBHOOK_PUBLIC_KEY`, base64 DER as SendGrid shows it, or PEM. Answers:

    200  stored and applied (replayed events are recognised by id and not applied twice)
    400  not a batch of events: nothing stored
    403  signature missing or wrong, or timestamp older (or further ahead) than WEBHOOK_MAX_AGE_SECONDS
    413  body larger than MAX_WEBHOOK_BYTES (refused before it is read: `newsletter.web.limits`)
    503  no public key configured: every request is refused rather than trusted

The signature is checked with `cryptography` over the exact bytes received, before the body is parsed.
"""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse

from newsletter.esp.sendgrid.events import MalformedEvents, parse_events
from newsletter.esp.sendgrid.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadKey,
    load_public_key,
    signature_valid,
    timestamp_fresh,
)
from newsletter.sending.events import apply_events
from newsletter.web.deps import SessionDep, SettingsDep

log = logging.getLogger(__name__)

router = APIRouter()


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
    if len(body) > settings.MAX_WEBHOOK_BYTES:
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
