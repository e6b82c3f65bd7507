"""Response headers every page gets, and access-log lines without credentials.

Every response carries `X-Content-Type-Options: nosniff`, a Referrer-Policy, and (unless the route set
its own, as the admin preview does) a Content-Security-Policy that allows no plugins, no `<base>`, no
framing by other sites and scripts from this site only. Pages holding a token send their own
`Referrer-Policy: no-referrer` (`newsletter.web.public`). HSTS is sent when the site is served over
HTTPS (`BASE_URL` https, or the request came in over TLS).

Tokens in URLs are credentials: `redact_tokens` shortens them in uvicorn's access log.
"""

from __future__ import annotations

import logging
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.core.config import Settings

CSP = (
    "default-src 'self'; img-src 'self' https: data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'self'"
)
HSTS = "max-age=31536000; includeSubDomains"

_TOKEN_PATH = re.compile(
    r"(/(?:confirm|preferences|unsubscribe|my-data|view/\d+)/)([A-Za-z0-9_-]{6})[^/?\s\"]*"
)


def redact(text: str) -> str:
    """`text` with every link token cut to its first six characters and an ellipsis."""
    return _TOKEN_PATH.sub(r"\1\2…", text)


class _RedactTokens(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        return True


def redact_tokens_in_access_log() -> None:
    """Install the filter on uvicorn's access logger (idempotent)."""
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, _RedactTokens) for f in logger.filters):
        logger.addFilter(_RedactTokens())


class SecurityHeaders:
    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.https = settings.BASE_URL.lower().startswith("https://")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        https = self.https or scope.get("scheme") == "https"

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                defaults = [
                    (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"strict-origin-when-cross-origin"),
                    (b"content-security-policy", CSP.encode()),
                    (b"x-frame-options", b"SAMEORIGIN"),
                ]
                if https:
                    defaults.append((b"strict-transport-security", HSTS.encode()))
                headers += [(n, v) for n, v in defaults if n not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
