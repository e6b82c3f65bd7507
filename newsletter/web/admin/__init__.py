"""The staff and volunteer admin under `/admin`: server-rendered pages behind login, with roles.

    install(app, settings)   sessions, the refusal pages (401/403) and every admin router

Each area is its own router module: `login` (log in/out, home), `subscribers`, `bulletins` (editor and
status), `preview` (preview, matrix, test send), `dashboard`, `reports` (engagement), `suppressions`,
`audit_log`, `users`.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from newsletter.core.config import Settings
from newsletter.web.admin import (
    audit_log,
    bulletin_status,
    bulletins,
    dashboard,
    login,
    preview,
    reports,
    subscribers,
    suppressions,
    users,
)
from newsletter.web.admin.pages import render
from newsletter.web.auth import Forbidden, LoginRequired, install_sessions, login_url_for
from newsletter.web.csrf import CsrfRefused


def _refusal(request: Request, status: int, title: str, text: str) -> HTMLResponse:
    return render(request, "refused.html", {"title": title, "text": text}, status_code=status)


async def _login_required(request: Request, exc: Exception) -> Response:
    if request.method in {"GET", "HEAD"}:
        return RedirectResponse(login_url_for(request), status_code=303)
    return _refusal(
        request, 401, "Please log in", "You are not logged in (or your session ended). Nothing was changed."
    )


async def _forbidden(request: Request, exc: Exception) -> Response:
    return _refusal(request, 403, "Not allowed", "Your account may not use this page. Nothing was changed.")


async def _csrf_refused(request: Request, exc: Exception) -> Response:
    return _refusal(
        request,
        403,
        "Form expired",
        "This form was not sent from this admin session (its security token is missing or out of date). "
        "Nothing was changed: go back, reload the page and try again.",
    )


def install(app: FastAPI, settings: Settings) -> None:
    """Mount the admin on `app`: session middleware, refusal handlers and routers."""
    install_sessions(app, settings)
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(Forbidden, _forbidden)
    app.add_exception_handler(CsrfRefused, _csrf_refused)
    for module in (
        bulletin_status,
        login,
        subscribers,
        bulletins,
        preview,
        dashboard,
        reports,
        suppressions,
        audit_log,
        users,
    ):
        app.include_router(module.router, prefix="/admin")
