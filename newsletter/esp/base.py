"""The ESP port: send one batch of personalised recipients of one rendered variant.

    EspError                     anything a backend reports instead of a per-recipient outcome
    ├── RetryableError           try the whole batch again later (5xx, refused connection): nothing was sent
    │     ├── RateLimited        429: `retry_after` seconds come from X-RateLimit-Reset
    │     └── OutcomeUnknown     the request went out but no answer came back (dropped after sending,
    │                            timed out waiting): the ESP may have taken the batch
    ├── BadRequest               the ESP refused the batch as malformed (400). `blames_request=False`:
    │                            the dispatcher splits the batch to find the recipients at fault and fails
    │                            only them; True (the sender, the content): no recipient is at fault
    └── AuthFailed               401/403: every batch would fail; the bulletin is paused

A backend returns one `RecipientResult` per recipient it was given, in any order, for outcomes it
knows per recipient (SMTP refusing one RCPT, say), and raises for outcomes that concern the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, Protocol

from newsletter.content.types import Recipient, RenderedVariant


class EspError(Exception):
    pass


class RetryableError(EspError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    pass


class OutcomeUnknown(RetryableError):
    """The ESP may or may not have accepted the batch: resending risks duplicates (`RESEND_ON_UNKNOWN`)."""


class BadRequest(EspError):
    def __init__(self, message: str, *, blames_request: bool = False) -> None:
        super().__init__(message)
        self.blames_request = blames_request


class AuthFailed(EspError):
    pass


class RecipientResult(NamedTuple):
    """What the ESP did with one recipient (a named tuple: one is made per recipient sent)."""

    recipient: Recipient
    accepted: bool
    message_id: str | None = None
    error: str = ""
    permanent: bool = True
    """For a refused recipient: True means never retry (bad address), False means retry later."""


class EspBackend(Protocol):
    """What every backend module (`outbox`, `sendgrid`, `smtp`) provides."""

    name: str
    max_batch: int
    """The most recipients one `send` call takes (SendGrid: 1000 personalizations; SMTP and outbox: any)."""

    def send(self, variant: RenderedVariant, recipients: Sequence[Recipient]) -> list[RecipientResult]:
        """Send `variant` to each recipient, personalised; raise an `EspError` for batch-wide failures."""
        ...

    def probe(self, variant: RenderedVariant) -> None:
        """Check, without mailing anyone, that the ESP answers and takes these credentials and this
        sender (SendGrid: a sandbox-mode Mail Send; SMTP: connect, EHLO, STARTTLS, AUTH; outbox: a
        write). Raises the `EspError` a real send would meet."""
        ...

    def close(self) -> None:
        """Release connections; the backend may be used again afterwards (it reconnects)."""
        ...
