"""How admin routes answer: a page from `templates/web/admin/` with what every admin page needs,
a redirect after a successful POST (so a reload never posts twice), and one-shot messages.

A refused form is shown again with its `FormErrors` (`form_errors`) and what was typed (`typed`): either
rendered at once with status 400, or, when the form lives on a page that another route draws, carried
over the redirect once by `flash_form`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

from newsletter.core.config import Settings
from newsletter.core.models import User
from newsletter.web.csrf import csrf_token
from newsletter.web.form_errors import FormErrors

FLASH_KEY = "flash"
FORM_KEY = "form"

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


def flash_form(request: Request, errors: FormErrors, typed: dict[str, str]) -> None:
    """A refused form's problems and typed values, shown once by the next admin page (small values only:
    they travel in the session cookie)."""
    request.session[FORM_KEY] = {"errors": dict(errors), "prefix": errors.prefix, "typed": typed}


def see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def local_time(value: datetime | None, settings: Settings, fmt: str = "%a %d %b %Y, %H:%M %Z") -> str:
    """A stored UTC time as the people using the admin read it: in `TIMEZONE`."""
    if value is None:
        return "—"
    return value.astimezone(settings.tz).strftime(fmt)


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
    form = request.session.pop(FORM_KEY, None) or {}
    full: dict[str, Any] = {
        "user": user if user is not None else getattr(request.state, "user", None),
        "csrf_token": csrf_token(request),
        "messages": messages,
        "org_name": settings.ORG_NAME,
        "tz_name": settings.TIMEZONE,
        "when": lambda value, fmt="%a %d %b %Y, %H:%M %Z": local_time(value, settings, fmt),
        "path": request.url.path,
        "form_errors": FormErrors(form.get("errors"), prefix=form.get("prefix", "")),
        "typed": form.get("typed", {}),
    }
    full.update(context or {})
    response = templates.TemplateResponse(request, f"admin/{template}", full, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response
