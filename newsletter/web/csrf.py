"""CSRF tokens for the admin's forms: one random token per session, sent back in every form.

The session cookie is SameSite=Lax, which already keeps most cross-site posts out; the token closes the
rest (a sibling subdomain, an old browser). Every admin POST goes through `check_csrf` (the user
dependencies in `newsletter.web.auth` call it for unsafe methods), and a missing or wrong token is a
403 before the route runs, so nothing changes.
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated

from fastapi import Depends, Request
from starlette.datastructures import UploadFile

FIELD = "csrf_token"
"""The form field (and `X-CSRF-Token` header, for scripts) that carries the token."""
HEADER = "x-csrf-token"
SESSION_KEY = "csrf"


class CsrfRefused(Exception):
    """The request's token is missing or does not match its session's."""


def csrf_token(request: Request) -> str:
    """The session's token, made on first use (templates put it in a hidden field)."""
    token = request.session.get(SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        request.session[SESSION_KEY] = token
    return token


async def check_csrf(request: Request) -> None:
    """Raise CsrfRefused unless the request carries the session's token (form field or header)."""
    if request.method in {"GET", "HEAD", "OPTIONS"}:
        return
    expected = request.session.get(SESSION_KEY)
    sent = request.headers.get(HEADER)
    if sent is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(FIELD)
            sent = value if isinstance(value, str) and not isinstance(value, UploadFile) else None
    if not isinstance(expected, str) or not expected or not sent:
        raise CsrfRefused()
    if not hmac.compare_digest(expected.encode(), sent.encode()):
        raise CsrfRefused()


async def require_csrf(request: Request) -> None:
    """`check_csrf` as a dependency, for routes with no logged-in user (the login form)."""
    await check_csrf(request)


CsrfChecked = Annotated[None, Depends(require_csrf)]
