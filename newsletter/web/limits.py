"""Body caps, enforced before a body is read: an ASGI middleware in front of every route.

Each request falls in a route class with its own cap (settings, documented in .env.example):

    POST /webhooks/…                    MAX_WEBHOOK_BYTES   (SendGrid batches)
    POST /admin/subscribers/import      MAX_UPLOAD_BYTES    (the CSV upload)
    anything else                       MAX_FORM_BYTES      (public and admin forms)

A declared `Content-Length` over the cap is answered 413 at once; a body without one (chunked) is
counted as it streams and cut off with 413 the moment it passes the cap, so nothing larger than the cap
is ever buffered. An unsafe request to the admin (other than the login form) without a signed session
naming an account is answered 401 before its body is read: an anonymous upload is never parsed or
written to disk. The routes still check the account fully (`newsletter.web.auth`).
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from newsletter.core.config import Settings

UPLOAD_PATH = "/admin/subscribers/import"
_SAFE = frozenset({"GET", "HEAD", "OPTIONS"})


class BodyTooLarge(Exception):
    pass


def cap_for(settings: Settings, path: str) -> int:
    """The body cap of the route class `path` belongs to."""
    if path.startswith("/webhooks/"):
        return settings.MAX_WEBHOOK_BYTES
    if path == UPLOAD_PATH:
        return settings.MAX_UPLOAD_BYTES
    return settings.MAX_FORM_BYTES


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return -1
    return None


async def _plain(send: Send, status: int, text: str) -> None:
    body = text.encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """Refuses bodies over their route class's cap, and anonymous unsafe admin requests, unread."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _SAFE:
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if _anonymous_admin_write(scope, path):
            await _plain(send, 401, "Log in first.")
            return
        cap = cap_for(self.settings, path)
        declared = _declared_length(scope)
        if declared is not None and (declared < 0 or declared > cap):
            await _plain(
                send,
                413 if declared > cap else 400,
                "Request body too large." if declared > cap else "Bad Content-Length.",
            )
            return
        await self._counted(scope, receive, send, cap)

    async def _counted(self, scope: Scope, receive: Receive, send: Send, cap: int) -> None:
        """Pass the body through while it stays under `cap`; past it, stop reading and answer 413
        instead of whatever the app makes of the cut-off body (FastAPI would call it a parse error)."""
        seen = 0
        over = False
        answered = False

        async def limited_receive() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > cap:
                    over = True
                    raise BodyTooLarge()
            return message

        async def watched_send(message: Message) -> None:
            nonlocal answered
            if not over:
                answered = answered or message["type"] == "http.response.start"
                await send(message)
            elif not answered:
                answered = True
                await _plain(send, 413, "Request body too large.")

        try:
            await self.app(scope, limited_receive, watched_send)
        except BodyTooLarge:
            if not answered:
                await _plain(send, 413, "Request body too large.")


def _anonymous_admin_write(scope: Scope, path: str) -> bool:
    if not path.startswith("/admin") or path == "/admin/login":
        return False
    session: Any = scope.get("session") or {}
    return not isinstance(session.get("uid"), int)
