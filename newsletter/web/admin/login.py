"""Logging in and out, and the admin home page (the next bulletin to go out, the last one sent)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from newsletter.accounts import LoginRefused, authenticate, revoke_sessions
from newsletter.content.queries import last_sent, upcoming
from newsletter.core import audit
from newsletter.web.admin.pages import flash, render, see_other
from newsletter.web.auth import CurrentUser, MaybeUser, log_in, log_out
from newsletter.web.csrf import CsrfChecked
from newsletter.web.deps import ClientIp, SessionDep, SettingsDep

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a path inside the admin: `next` must never send someone to another site."""
    if target and target.startswith("/admin") and not target.startswith("//") and "\\" not in target:
        return target
    return "/admin"


@router.get("/login")
def login_page(request: Request, user: MaybeUser, next: str | None = None) -> Response:
    if user is not None:
        return see_other(_safe_next(next))
    return render(request, "login.html", {"next": _safe_next(next), "email": "", "error": ""}, user=None)


@router.post("/login")
def login_submit(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    client_ip: ClientIp,
    _csrf: CsrfChecked,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/admin",
) -> Response:
    """A plain `def`: argon2 takes a sixth of a second of CPU, so it runs in the threadpool, never on
    the event loop (which would stall every other request)."""
    try:
        user = authenticate(session, email, password, settings, client=client_ip)
    except LoginRefused as exc:
        session.commit()  # the failure count must stick
        return render(
            request,
            "login.html",
            {"next": _safe_next(next), "email": email, "error": str(exc)},
            user=None,
            status_code=401,
        )
    audit.record(session, user.email, "user.login", "user", user.id)
    session.commit()
    log_in(request, user)
    return see_other(_safe_next(next))


@router.post("/logout")
def logout(request: Request, user: CurrentUser, session: SessionDep) -> Response:
    """Ends this account's sessions everywhere, not only this cookie (a copied cookie dies too)."""
    revoke_sessions(session, user)
    session.commit()
    log_out(request)
    flash(request, "You are logged out.", "info")
    return see_other("/admin/login")


@router.get("")
@router.get("/")
def home(request: Request, user: CurrentUser, session: SessionDep) -> Response:
    return render(request, "home.html", {"upcoming": upcoming(session), "last_sent": last_sent(session)})
