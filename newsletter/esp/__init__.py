"""Email service providers behind one port (`base.EspBackend`), chosen by `ESP_BACKEND`.

    backend = backend_for(settings)        # outbox | sendgrid | smtp (see Settings.esp_backend)
    for batch in batches(recipients, backend.max_batch):
        results = backend.send(variant, batch)   # or raises an EspError for the whole batch
    backend.close()

Each backend lives in its own module and is imported only when chosen, so an installation that writes
to the outbox never loads the SendGrid library. All SendGrid knowledge (sending, its event webhook's
body and signature) lives in `esp.sendgrid`.

May import: `core`, `content`, `mail`.
"""

from __future__ import annotations

from newsletter.core.config import Settings
from newsletter.core.errors import ConfigError
from newsletter.esp.base import (
    AuthFailed,
    BadRequest,
    EspBackend,
    EspError,
    OutcomeUnknown,
    RateLimited,
    RecipientResult,
    RetryableError,
)
from newsletter.mail.links import Links

BACKENDS = ("outbox", "sendgrid", "smtp")

__all__ = [
    "BACKENDS",
    "AuthFailed",
    "BadRequest",
    "EspBackend",
    "EspError",
    "OutcomeUnknown",
    "RateLimited",
    "RecipientResult",
    "RetryableError",
    "backend_for",
]


def backend_for(settings: Settings, *, links: Links | None = None) -> EspBackend:
    """The backend `settings.esp_backend` names, configured from `settings`.

    Raises ConfigError when the chosen backend lacks what it needs (an API key, an SMTP host).
    """
    name = settings.esp_backend
    # Each backend is imported only when chosen (see the module docstring).
    if name == "sendgrid":
        from newsletter.esp.sendgrid import SendGridBackend

        return SendGridBackend(settings, links=links)
    if name == "smtp":
        from newsletter.esp.smtp import SmtpBackend

        return SmtpBackend(settings, links=links)
    if name == "outbox":
        from newsletter.esp.outbox import OutboxBackend

        return OutboxBackend(settings, links=links)
    raise ConfigError(f"ESP_BACKEND: unknown backend {name!r} (choose one of {', '.join(BACKENDS)})")
