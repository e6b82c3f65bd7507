"""The ESP port: send one batch of personalised recipients of one rendered variant.

    EspError                     anything a backend reports instead of a per-recipient outcome
    ├── RetryableError           try the whole batch again later (5xx, timeout, refused/dropped connection)
    │     └── RateLimited        429: `retry_after` seconds come from X-RateLimit-Reset
    ├── BadRequest               the ESP refused the batch as malformed (400): the dispatcher splits
    │                            the batch to find the recipients at fault and fails only them
    └── AuthFailed               401/403: every batch would fail; the bulletin is paused

A backend returns one `RecipientResult` per recipient it was given, in any order, for outcomes it
knows per recipient (SMTP refusing one RCPT, say), and raises for outcomes that concern the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from newsletter.content.types import Recipient, RenderedVariant


class EspError(Exception):
    pass


class RetryableError(EspError):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(RetryableError):
    pass


class BadRequest(EspError):
    pass


class AuthFailed(EspError):
    pass


@dataclass(frozen=True)
class RecipientResult:
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

    def close(self) -> None:
        """Release connections; the backend may be used again afterwards (it reconnects)."""
        ...
