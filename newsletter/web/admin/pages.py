"""How admin routes answer: a page from `templates/web/admin/` with what every admin page needs,
a redirect after a successful POST (so a reload never posts twice), and one-shot messages."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from sqlmodel import Session

from newsletter.core.config import Settings
from newsletter.core.models import User
from newsletter.sending.alerts import Banner, banners
from newsletter.web.csrf import csrf_token

FLASH_KEY = "flash"

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    # Inline styles are allowed for the preview widths; nothing else runs on admin pages.
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; "
    "frame-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
}


def flash(request: Request, text: str, kind: str = "ok") -> None:
    """A message shown once, on the next admin page (kind: ok, info or error)."""
    messages = list(request.session.get(FLASH_KEY, []))
    messages.append([kind, text])
    request.session[FLASH_KEY] = messages


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def local_time(value: datetime | None, settings: Settings, fmt: str = "%a %d %b %Y, %H:%M %Z") -> str:
    """A stored UTC time as the people using the admin read it: in `TIMEZONE`."""
    if value is None:
        return "—"
    return value.astimezone(settings.tz).strftime(fmt)


def _shows_banners(request: Request, who: User | None, status_code: int) -> bool:
    """The home page and dashboards, for staff: where they look for what needs them."""
    path = request.url.path.rstrip("/")
    return (
        who is not None
        and who.role == "staff"
        and status_code < 400
        and (path == "/admin" or path.endswith("/dashboard"))
    )


def _banners(request: Request, settings: Settings) -> list[Banner]:
    """What needs staff now (paused sends, failures, empty slots, no scheduler), on top of every page."""
    session = getattr(request.state, "session", None)
    if session is not None:  # the request's own: on SQLite a second one would wait for its lock
        return banners(session, settings)
    with Session(request.app.state.engine) as own:
        return banners(own, settings)


def render(
    request: Request,
    template: str,
    context: dict[str, Any] | None = None,
    *,
    user: User | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    """Render `admin/<template>` with the user, the CSRF token, pending messages and time helpers."""
    settings: Settings = request.app.state.settings
    templates: Jinja2Templates = request.app.state.templates
    messages = [tuple(m) for m in request.session.pop(FLASH_KEY, [])]
    who = user if user is not None else getattr(request.state, "user", None)
    full: dict[str, Any] = {
        "user": who,
        # Staff pages only, and not on refusals (their request may hold the SQLite lock elsewhere).
        "banners": _banners(request, settings)
        if who is not None and who.role == "staff" and status_code < 400
        else [],
        "csrf_token": csrf_token(request),
        "messages": messages,
        "org_name": settings.ORG_NAME,
        "tz_name": settings.TIMEZONE,
        "when": lambda value, fmt="%a %d %b %Y, %H:%M %Z": local_time(value, settings, fmt),
        "path": request.url.path,
    }
    full.update(context or {})
    response = templates.TemplateResponse(request, f"admin/{template}", full, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response
