"""Logging in and out, and the admin home page (the next bulletin to go out, the last one sent)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlmodel import col, select

from newsletter.accounts import LoginRefused, authenticate
from newsletter.core import audit
from newsletter.core.models import Bulletin
from newsletter.core.status import BulletinStatus
from newsletter.web.admin.pages import flash, render, see_other
from newsletter.web.auth import CurrentUser, MaybeUser, log_in, log_out
from newsletter.web.csrf import check_csrf
from newsletter.web.deps import SessionDep, SettingsDep
from newsletter.web.form_errors import FormErrors

router = APIRouter()


def _safe_next(target: str | None) -> str:
    """Only a path inside the admin: `next` must never send someone to another site."""
    if target and target.startswith("/admin") and not target.startswith("//") and "\\" not in target:
        return target
    return "/admin"


def _login_errors(exc: LoginRefused) -> FormErrors:
    """The refusal on the address; the password field is marked too when it may be the wrong one."""
    errors = FormErrors({"email": str(exc)})
    if exc.locked_until is None:
        errors.add("password", "Type your password again: it is not kept after a failed attempt.")
    return errors


@router.get("/login")
def login_page(request: Request, user: MaybeUser, next: str | None = None) -> Response:
    if user is not None:
        return see_other(_safe_next(next))
    context = {"next": _safe_next(next), "email": "", "form_errors": FormErrors()}
    return render(request, "login.html", context, user=None)


@router.post("/login")
async def login_submit(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    email: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/admin",
) -> Response:
    await check_csrf(request)
    try:
        user = authenticate(session, email, password, settings)
    except LoginRefused as exc:
        session.commit()  # the failure count must stick
        return render(
            request,
            "login.html",
            {"next": _safe_next(next), "email": email, "form_errors": _login_errors(exc)},
            user=None,
            status_code=401,
        )
    audit.record(session, user.email, "user.login", "user", user.id)
    session.commit()
    log_in(request, user)
    return see_other(_safe_next(next))


@router.post("/logout")
def logout(request: Request, user: CurrentUser) -> Response:
    log_out(request)
    flash(request, "You are logged out.", "info")
    return see_other("/admin/login")


@router.get("")
@router.get("/")
def home(request: Request, user: CurrentUser, session: SessionDep) -> Response:
    upcoming = session.exec(
        select(Bulletin)
        .where(
            col(Bulletin.status).in_([BulletinStatus.READY, BulletinStatus.SENDING, BulletinStatus.PAUSED])
        )
        .order_by(col(Bulletin.send_at).is_(None), col(Bulletin.send_at), col(Bulletin.id))
        .limit(5)
    ).all()
    last_sent = session.exec(
        select(Bulletin)
        .where(Bulletin.status == BulletinStatus.SENT)
        .order_by(col(Bulletin.finished_at).desc(), col(Bulletin.id).desc())
        .limit(1)
    ).first()
    return render(request, "home.html", {"upcoming": upcoming, "last_sent": last_sent})
