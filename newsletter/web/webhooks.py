"""`POST /webhooks/sendgrid`: SendGrid's signed Event Webhook, applied by `newsletter.sending.events`.

SendGrid signs `timestamp + raw body` with ECDSA P-256 / SHA-256 and sends the base64 DER signature and
the timestamp in two headers; the public key (Settings → Mail Settings → Signed Event Webhook) is
`SENDGRID_WEBHOOK_PUBLIC_KEY`, base64 DER as SendGrid shows it, or PEM. Answers:

    200  stored and applied (replayed events are recognised by id and not applied twice)
    400  not a batch of events: nothing stored
    403  signature missing or wrong, or timestamp older (or further ahead) than WEBHOOK_MAX_AGE_SECONDS
    413  body larger than MAX_WEBHOOK_BYTES (refused before it is read: `newsletter.web.limits`)
    408  the body arrived too slowly (see below)
    503  no public key configured: every request is refused rather than trusted; or too many
         bodies in flight (with Retry-After)

The key, both signature headers (present, and the signature shaped as one can be) and the timestamp's
freshness are checked before the body is read, so an unsigned or stale request costs no buffer; then
the signature is checked with `cryptography` over the exact bytes received, before the body is parsed.

Those checks cost a stranger nothing to pass (a fresh timestamp and any well-formed signature), so
reading bodies is bounded three ways, per process (`BodySlots`):
- at most `BODIES_AT_ONCE` bodies are read and verified at a time, so memory for unverified bodies stays
  within `BODIES_AT_ONCE × MAX_WEBHOOK_BYTES`; a request that finds no slot within `SLOT_WAIT_SECONDS`
  is answered 503 with `Retry-After`;
- one client (`deps.client_ip`) holds at most `BODIES_PER_CLIENT` of them; one more is answered 503 at
  once;
- a body must arrive at `MIN_BYTES_PER_SECOND` of what it announces (plus `BODY_GRACE_SECONDS`), or it is
  answered 408: a slot cannot be held by a sender that trickles a byte a second.
SendGrid retries a batch it could not deliver, so a burst delays events rather than losing them. What
this cannot stop is many clients each sending fast enough; a reverse proxy that buffers request bodies
before passing them on (nginx does by default) hands the app whole bodies only (docs/security.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Annotated

from cryptography.hazmat.primitives.asymmetric import ec
from fastapi import APIRouter, Depends, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from newsletter.core.config import Settings
from newsletter.esp.sendgrid.events import MalformedEvents, parse_events
from newsletter.esp.sendgrid.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    BadKey,
    load_public_key,
    signature_shaped,
    signature_valid,
    timestamp_fresh,
)
from newsletter.sending.events import apply_events
from newsletter.web.deps import SessionDep, SettingsDep, client_ip

log = logging.getLogger(__name__)

router = APIRouter()

BODIES_AT_ONCE = 4
"""Webhook bodies read and verified at once by one process (each up to `MAX_WEBHOOK_BYTES`)."""
BODIES_PER_CLIENT = 2
"""Of those, how many one client may hold."""
SLOT_WAIT_SECONDS = 10.0
RETRY_AFTER_SECONDS = 30
MIN_BYTES_PER_SECOND = 256 * 1024
"""The slowest a body may arrive (a 16 MiB body then has a minute): anything slower is holding a slot."""
BODY_GRACE_SECONDS = 5.0


class BodySlots:
    """The slots for bodies in flight, one set per app (`app.state.webhook_slots`): an asyncio
    semaphore belongs to the event loop that first waits on it. Used on the event loop only, so the
    per-client counts need no lock."""

    def __init__(self) -> None:
        self.free = asyncio.Semaphore(BODIES_AT_ONCE)
        self.by_client: Counter[str] = Counter()


def _busy(why: str) -> JSONResponse:
    log.warning("SendGrid webhook: %s; asked to retry", why)
    answer = _refuse(503, "busy, retry later")
    answer.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return answer


def _read_deadline(request: Request, settings: Settings) -> float:
    """Seconds the body may take: `BODY_GRACE_SECONDS` plus its announced length (or the cap, when it
    announces none) at `MIN_BYTES_PER_SECOND`."""
    declared = request.headers.get("content-length", "")
    size = int(declared) if declared.isdigit() else settings.MAX_WEBHOOK_BYTES
    return BODY_GRACE_SECONDS + min(size, settings.MAX_WEBHOOK_BYTES) / MIN_BYTES_PER_SECOND


def _refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _signed_body(
    request: Request,
    settings: SettingsDep,
    signature: Annotated[str, Header(alias=SIGNATURE_HEADER)] = "",
    timestamp: Annotated[str, Header(alias=TIMESTAMP_HEADER)] = "",
) -> bytes | JSONResponse:
    """The body SendGrid signed, or the answer refusing the request.

    Everything that needs no body is checked before a byte of it is read: a configured key, both
    signature headers, a fresh timestamp. Anyone may post here, and a body may be `MAX_WEBHOOK_BYTES`
    (16 MiB by default), so a request that cannot be SendGrid's must cost a header check, not a buffer
    of that size. Then the body is read (its cap enforced as it streams: `newsletter.web.limits`) and
    the signature verified over its exact bytes, before anything parses it.
    """
    if not settings.SENDGRID_WEBHOOK_PUBLIC_KEY.strip():
        log.error("SendGrid webhook refused: SENDGRID_WEBHOOK_PUBLIC_KEY is not set")
        return _refuse(503, "webhook not configured")
    try:
        key = load_public_key(settings.SENDGRID_WEBHOOK_PUBLIC_KEY)
    except BadKey as exc:
        log.error("SendGrid webhook refused: %s", exc)
        return _refuse(503, "webhook not configured")
    if not signature or not timestamp or not signature_shaped(signature):
        log.warning("SendGrid webhook: missing or malformed signature")
        return _refuse(403, "bad signature")
    if not timestamp_fresh(timestamp, settings.WEBHOOK_MAX_AGE_SECONDS):
        log.warning("SendGrid webhook: stale timestamp %s", timestamp[:20])
        return _refuse(403, "stale timestamp")
    slots: BodySlots = request.app.state.webhook_slots
    client = client_ip(request)
    if slots.by_client[client] >= BODIES_PER_CLIENT:
        return _busy(f"client {client} already sends {BODIES_PER_CLIENT} bodies")
    slots.by_client[client] += 1  # counted while it waits too, so a client's burst cannot all queue
    try:
        try:
            await asyncio.wait_for(slots.free.acquire(), SLOT_WAIT_SECONDS)
        except TimeoutError:
            return _busy(f"{BODIES_AT_ONCE} bodies already in flight")
        try:
            return await _verified_body(request, settings, key, signature, timestamp, client)
        finally:
            slots.free.release()
    finally:
        slots.by_client[client] -= 1
        if slots.by_client[client] <= 0:
            del slots.by_client[client]


async def _verified_body(
    request: Request,
    settings: Settings,
    key: ec.EllipticCurvePublicKey,
    signature: str,
    timestamp: str,
    client: str,
) -> bytes | JSONResponse:
    """The body, read within its deadline and checked against the signature (the caller holds a slot)."""
    try:
        async with asyncio.timeout(_read_deadline(request, settings)):
            body = await request.body()
    except TimeoutError:
        log.warning("SendGrid webhook: a body from %s arrived too slowly", client)
        return _refuse(408, "body too slow")
    if len(body) > settings.MAX_WEBHOOK_BYTES:
        return _refuse(413, "body too large")
    # Hashing up to MAX_WEBHOOK_BYTES and an ECDSA check are CPU work: off the event loop.
    if not await run_in_threadpool(signature_valid, key, signature, timestamp, body):
        log.warning("SendGrid webhook: bad signature")
        return _refuse(403, "bad signature")
    return body


@router.post("/webhooks/sendgrid", include_in_schema=False)
def sendgrid_events(
    signed: Annotated[bytes | JSONResponse, Depends(_signed_body)], session: SessionDep
) -> JSONResponse:
    if isinstance(signed, JSONResponse):
        return signed
    try:
        events = parse_events(signed)
    except MalformedEvents as exc:
        log.warning("SendGrid webhook: malformed body: %s", exc)
        return _refuse(400, str(exc))
    report = apply_events(session, events)
    session.commit()
    return JSONResponse({"received": report.received, "new": report.new})
