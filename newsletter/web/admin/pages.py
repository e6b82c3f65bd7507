"""How admin routes answer: a page from `templates/web/admin/` with what every admin page needs,
a redirect after a successful POST (so a reload never posts twice), and one-shot messages.

A refused form is shown again with its `FormErrors` (`form_errors`) and what was typed (`typed`): either
rendered at once with status 400, or, when the form lives on a page that another route draws, carried
over the redirect once by `flash_form`."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from markupsafe import Markup
from sqlmodel import Session

from newsletter.core.config import Settings
from newsletter.core.models import User
from newsletter.sending.alerts import Banner, banners
from newsletter.web.csrf import csrf_token
from newsletter.web.form_errors import FormErrors

FLASH_KEY = "flash"
FORM_KEY = "form"

SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    # Inline styles are allowed for the preview widths. Scripts only from our own /static (the preview's
    # frame sizing): never inline, so nothing a user typed can run.
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: https:; "
    "frame-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
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
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # stored times are UTC; SQLite returns them naive
    return value.astimezone(settings.tz).strftime(fmt)


_STORED_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:\d{2}|Z)?$")


def time_element(value: datetime | None, settings: Settings) -> Markup:
    """A time for people: `<time>` showing the day and minute in `TIMEZONE`, with the exact instant
    (seconds, zone and UTC offset) on hover and in `datetime` for machines. "—" when there is none."""
    if value is None:
        return Markup("—")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)  # stored times are UTC; SQLite returns them naive
    local = value.astimezone(settings.tz)
    exact = local.strftime("%A %d %B %Y, %H:%M:%S %Z (UTC%z)")
    return Markup('<time datetime="{}" title="{}">{}</time>').format(
        value.astimezone(UTC).isoformat(timespec="seconds"), exact, local.strftime("%d %b %Y, %H:%M %Z")
    )


def audit_value(value: Any, settings: Settings) -> Markup | str:
    """A value in an audit entry's changes: stored times (kept as text) shown like every other time."""
    if value is None:
        return "—"
    if isinstance(value, str) and _STORED_TIME.match(value):
        try:
            return time_element(datetime.fromisoformat(value), settings)
        except ValueError:
            return value
    return str(value)


def duration_text(seconds: float | None) -> str:
    """A duration as people say it: "48 s", "3 min 05 s", "2 h 04 min"; "—" when unknown."""
    if seconds is None:
        return "—"
    whole = round(seconds)
    if whole < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{whole} s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


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
    form = request.session.pop(FORM_KEY, None) or {}
    who = user if user is not None else getattr(request.state, "user", None)
    full: dict[str, Any] = {
        "user": who,
        "banners": _banners(request, settings) if _shows_banners(request, who, status_code) else [],
        "csrf_token": csrf_token(request),
        "messages": messages,
        "org_name": settings.ORG_NAME,
        "tz_name": settings.TIMEZONE,
        "when": lambda value, fmt="%a %d %b %Y, %H:%M %Z": local_time(value, settings, fmt),
        "time_tag": lambda value: time_element(value, settings),
        "audit_value": lambda value: audit_value(value, settings),
        "path": request.url.path,
        "form_errors": FormErrors(form.get("errors"), prefix=form.get("prefix", "")),
        "typed": form.get("typed", {}),
    }
    full.update(context or {})
    response = templates.TemplateResponse(request, f"admin/{template}", full, status_code=status_code)
    response.headers.update(SECURITY_HEADERS)
    return response
