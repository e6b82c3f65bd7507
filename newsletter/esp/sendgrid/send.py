"""SendGrid: one `POST /v3/mail/send` per batch of up to 1000 personalizations.

The variant's subject, both content parts (text/plain first, as SendGrid requires), the sender and the
List-Id header are the same for every recipient, so they are serialised once per variant; per recipient
only a personalization is written (`personalization`: `to`, `substitutions`, the List-Unsubscribe
headers and `custom_args`, which SendGrid copies into every webhook event so that events find their
delivery), filled into a per-variant template of bytes.

The official library does the HTTP (`SendGridAPIClient(...).client.mail.send.post`); the body is handed
to it already serialised, since building it through the library's helper classes costs far more per
recipient than the request itself. One client per thread: the library's client keeps mutable headers.

Outcomes: 2xx → every recipient accepted with the `X-Message-Id`; 429 → `RateLimited` (retry after
X-RateLimit-Reset or Retry-After, whichever is later, and never at once); 5xx and connections that fail before the request is sent → `RetryableError`; a
connection dropped after the request went out, or no answer within `SENDGRID_TIMEOUT` →
`OutcomeUnknown` (SendGrid may have taken the batch); 400 → `BadRequest` with SendGrid's messages,
blaming the request itself unless every message names a personalization; 413 → `BadRequest` that
splits the batch while fewer recipients can still fit, and blames the bulletin (which pauses the send
rather than failing anyone) once none can: a request for one recipient is too large, or the shared
content alone is at `MAX_BODY_BYTES`; 401/403 (and 404, a wrong
SENDGRID_HOST) → `AuthFailed`. `probe` sends one message in sandbox mode (validated, never delivered).
A recipient whose values SendGrid would refuse (substitutions over 10,000 bytes) is refused here, alone,
rather than costing the whole batch a 400.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import math
import threading
import time
import urllib.error
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from newsletter.content.types import Recipient, RenderedVariant
from newsletter.core.config import Settings
from newsletter.core.errors import ConfigError
from newsletter.esp.base import (
    AuthFailed,
    BadRequest,
    OutcomeUnknown,
    RateLimited,
    RecipientResult,
    RetryableError,
)
from newsletter.esp.sendgrid.personalization import Template, encode, personalization
from newsletter.mail.links import Links, header_safe_name
from newsletter.mail.message import list_id

MAX_PERSONALIZATIONS = 1000
MAX_BODY_BYTES = 30 * 1024 * 1024
"""SendGrid's limit on a Mail Send request: its documentation says the total size must be under 30 MB.
Read as 30 MiB, the larger reading: a request between the two is split rather than blamed, and ends
blamed anyway if a single recipient's request is still refused."""
_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


class _Body:
    """A serialised body as the official library takes it: the library calls `.encode("utf-8")` on a
    body it does not serialise itself, and then formats those bytes into a debug message on every
    request (`'PAYLOAD: {data}'.format(...)`), whether debug logging is on or not: 4 ms for a 1 MB
    body. Here `.encode` hands over the bytes as they are, and they format as their size."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def encode(self, _encoding: str = "utf-8") -> bytes:
        return _SizedBytes(self.data)


class _SizedBytes(bytes):
    def __format__(self, _spec: str) -> str:
        return f"<{len(self)} bytes>"


@dataclass(frozen=True)
class _Prepared:
    """What a variant's requests share: everything after the personalizations, serialised, and the
    template of each personalization (None: every recipient takes the slow path)."""

    tail: bytes
    template: Template | None


class SendGridBackend:
    """Sends through SendGrid's v3 Mail Send API (`SENDGRID_API_KEY`, `SENDGRID_HOST`, `SENDGRID_TIMEOUT`)."""

    name = "sendgrid"
    max_batch = MAX_PERSONALIZATIONS

    def __init__(self, settings: Settings, *, links: Links | None = None) -> None:
        if not settings.SENDGRID_API_KEY:
            raise ConfigError("SENDGRID_API_KEY is not set: the sendgrid backend cannot send without it")
        self.settings = settings
        self.api_key = settings.SENDGRID_API_KEY
        self.host = settings.SENDGRID_HOST.rstrip("/")
        self.timeout = settings.SENDGRID_TIMEOUT
        self.links = links if links is not None else Links(settings)
        self._local = threading.local()
        self._variants: dict[RenderedVariant, _Prepared] = {}
        self._variants_lock = threading.Lock()

    # --- the request -------------------------------------------------------------------------------
    def _client(self) -> SendGridAPIClient:
        client: SendGridAPIClient | None = getattr(self._local, "client", None)
        if client is None:
            client = SendGridAPIClient(api_key=self.api_key, host=self.host)
            self._local.client = client
        return client

    def _prepared(self, variant: RenderedVariant) -> _Prepared:
        prepared = self._variants.get(variant)
        if prepared is None:
            prepared = _Prepared(self._tail(variant), Template.for_variant(self.links, variant))
            with self._variants_lock:
                if len(self._variants) >= 64:
                    self._variants.clear()
                self._variants[variant] = prepared
        return prepared

    def _tail(self, variant: RenderedVariant) -> bytes:
        """Everything of the body after the personalizations."""
        s = self.settings
        rest: dict[str, Any] = {
            "from": {"email": s.FROM_EMAIL, "name": header_safe_name(s.FROM_NAME)}
            if s.FROM_NAME
            else {"email": s.FROM_EMAIL},
            "subject": header_safe_name(variant.subject),
            "content": [
                {"type": "text/plain", "value": variant.text},
                {"type": "text/html", "value": variant.html},
            ],
        }
        if variant.regions:  # a bulletin; a confirmation (no regions) is transactional mail
            rest["headers"] = {"List-Id": list_id(s, encoded_words=True)}
        rest["tracking_settings"] = tracking_settings(s, bulk=bool(variant.regions))
        if s.REPLY_TO:
            rest["reply_to"] = {"email": s.REPLY_TO}
        return b"]," + encode(rest)[1:]

    def body(
        self, variant: RenderedVariant, recipients: Sequence[Recipient]
    ) -> tuple[bytes, list[RecipientResult]]:
        """The JSON body for `recipients`, and the recipients refused before sending (their
        substitutions are over SendGrid's limit). Each personalization comes from the variant's
        template, or from `personalization` for a recipient the template does not cover."""
        prepared = self._prepared(variant)
        fill = prepared.template.fill if prepared.template is not None else None
        parts: list[bytes] = []
        refused: list[RecipientResult] = []
        for r in recipients:
            data = fill(r) if fill is not None else None
            if data is None:
                p = personalization(self.links, variant, r)
                if isinstance(p, str):
                    refused.append(RecipientResult(r, False, error=p, permanent=True))
                    continue
                data = encode(p)
            parts.append(data)
        if not parts:
            return b"", refused
        return b'{"personalizations":[' + b",".join(parts) + prepared.tail, refused

    def send(self, variant: RenderedVariant, recipients: Sequence[Recipient]) -> list[RecipientResult]:
        """POST one batch; see the module docstring for how answers map to results and errors."""
        if len(recipients) > MAX_PERSONALIZATIONS:
            raise ValueError(f"SendGrid takes at most {MAX_PERSONALIZATIONS} recipients per request")
        body, refused = self.body(variant, recipients)
        if not body:
            return refused
        if refused:
            skipped = {id(x.recipient) for x in refused}
            recipients = [r for r in recipients if id(r) not in skipped]
        try:
            message_id = self.post(body)
        except _TooLarge as exc:
            # The subject, both parts and the sender are in every request. While they fit by themselves,
            # fewer recipients make a smaller request: the batch sender splits the batch in halves, and
            # within log2(batch size) requests a half fits or a single recipient is refused too. Only
            # then, or when the shared part alone is over the limit, is the bulletin at fault (a pause),
            # never the recipients.
            if len(recipients) == 1 or len(self._prepared(variant).tail) >= MAX_BODY_BYTES:
                raise BadRequest(
                    f"{exc}: the bulletin itself is too large for SendGrid; shorten it", blames_request=True
                ) from None
            raise
        accepted = RecipientResult._make  # positional: a thousand a request
        return [accepted((r, True, message_id, "", True)) for r in recipients] + refused

    def post(self, body: bytes) -> str | None:
        """POST a serialised Mail Send body; return the X-Message-Id or raise the matching `EspError`."""
        try:
            response = self._client().client.mail.send.post(
                request_body=_Body(body), request_headers=_JSON_HEADERS, timeout=self.timeout
            )
        except HTTPError as exc:
            raise _error_for(exc.status_code, exc.body, exc.headers) from None
        except urllib.error.URLError as exc:
            # urllib wraps what fails while connecting and sending: SendGrid never read a whole request.
            raise RetryableError(f"SendGrid connection failed: {_describe(exc)}") from None
        except TimeoutError:
            raise OutcomeUnknown(f"SendGrid did not answer within {self.timeout:g}s") from None
        except (OSError, http.client.HTTPException) as exc:
            # Raised while waiting for the answer: the request went out whole.
            raise OutcomeUnknown(
                f"SendGrid dropped the connection before answering: {_describe(exc)}"
            ) from None
        message_id = response.headers.get("X-Message-Id")
        return str(message_id) if message_id else None

    def probe(self, variant: RenderedVariant) -> None:
        """One Mail Send of `variant` to the sender's own address in sandbox mode: SendGrid checks the key,
        the sender and the body and answers 200 without delivering anything."""
        probe = Recipient(self.settings.FROM_EMAIL, "", None, None, None)
        body, refused = self.body(variant, [probe])
        if refused:
            raise BadRequest(refused[0].error, blames_request=True)
        self.post(body[:-1] + b',"mail_settings":{"sandbox_mode":{"enable":true}}}')

    def close(self) -> None:
        # urllib opens a connection per request: nothing stays open; drop this thread's client anyway.
        self._local = threading.local()


def tracking_settings(settings: Settings, *, bulk: bool = True) -> dict[str, Any]:
    """SendGrid's `tracking_settings` for a request: `TRACK_OPENS` and `TRACK_CLICKS` for a bulletin.

    Sent explicitly in every request, so the account's own tracking defaults never decide (SendGrid
    applies account-level settings to any request that leaves them out). Plain-text links are never
    rewritten (`enable_text`): a long redirect URL in the text part reads like phishing. A confirmation
    (`bulk=False`) is never tracked: it is transactional, and its one link is the confirmation itself.
    """
    return {
        "click_tracking": {"enable": bulk and settings.TRACK_CLICKS, "enable_text": False},
        "open_tracking": {"enable": bulk and settings.TRACK_OPENS},
        # Never SendGrid's own unsubscribe footer (its suppressions would bypass ours and the one-click
        # link) nor Google Analytics parameters on our links, whatever the account's defaults say.
        "subscription_tracking": {"enable": False},
        "ganalytics": {"enable": False},
    }


def _describe(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None)  # urllib.error.URLError wraps the socket error
    if isinstance(reason, BaseException):
        exc = reason
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _messages(body: object) -> str:
    """SendGrid's `{"errors": [{"message", "field"}]}` as one line, or the raw body if it is not that."""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        errors = json.loads(raw)["errors"]
        parts = [f"{e['field']}: {e['message']}" if e.get("field") else str(e.get("message")) for e in errors]
        return "; ".join(parts) or raw[:500]
    except (ValueError, KeyError, TypeError, AttributeError):
        return raw[:500]


MIN_RATE_LIMIT_WAIT = 1.0
"""The least a 429 waits, whatever its headers say: SendGrid's `X-RateLimit-Reset` is a time on its
clock, and a reset that reads as already past here (clocks differ) would otherwise mean no wait at all,
and a request loop against an endpoint that refuses every request until its period ends."""


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait: the later of X-RateLimit-Reset (epoch seconds) and Retry-After (seconds), at
    least `MIN_RATE_LIMIT_WAIT`; None when neither header is there or readable."""
    if headers is None:
        return None
    waits = []
    for name, now in (("X-RateLimit-Reset", time.time()), ("Retry-After", 0.0)):
        value = headers.get(name)
        if value:
            with contextlib.suppress(ValueError):
                waits.append(float(value) - now)
    waits = [w for w in waits if math.isfinite(w)]
    return max(MIN_RATE_LIMIT_WAIT, *waits) if waits else None


def _error_for(status: int, body: object, headers: Any) -> Exception:
    detail = _messages(body)
    if status == 429:
        return RateLimited(f"SendGrid rate limit (429): {detail}", retry_after=_retry_after(headers))
    if status in (401, 403):
        return AuthFailed(f"SendGrid refused the API key ({status}): {detail}")
    if status in (404, 405):
        return AuthFailed(f"SendGrid answered {status} for /v3/mail/send: is SENDGRID_HOST right? {detail}")
    if status >= 500 or status == 408:
        return RetryableError(f"SendGrid answered {status}: {detail}", retry_after=_retry_after(headers))
    if status == 413:
        return _TooLarge(f"SendGrid refused the batch ({status}): {detail}")
    return BadRequest(
        f"SendGrid refused the batch ({status}): {detail}", blames_request=not _blames_recipients(body)
    )


class _TooLarge(BadRequest):
    """413: the request is over SendGrid's size limit. Fewer recipients may fit, so the batch is split;
    for one recipient, or when the shared part alone is over the limit, splitting cannot help (see
    `SendGridBackend.send`)."""


def _blames_recipients(body: object) -> bool:
    """True when every error SendGrid lists names a personalization (an address, a substitution): then
    splitting the batch finds the recipients at fault. Errors about `from`, `content`, `subject` or with
    no field blame the request, and would recur in every half."""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        fields = [e.get("field") or "" for e in json.loads(raw)["errors"]]
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    return bool(fields) and all(str(f).startswith("personalizations") for f in fields)
