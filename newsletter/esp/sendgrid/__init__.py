"""Everything this project knows about SendGrid: sending (`send`), each recipient's part of a Mail Send
body (`personalization`), its event webhook body (`events`) and the webhook's signature (`signature`).
Imported only when `ESP_BACKEND=sendgrid` or a webhook arrives."""

from __future__ import annotations

from newsletter.esp.sendgrid.send import SendGridBackend

__all__ = ["SendGridBackend"]
