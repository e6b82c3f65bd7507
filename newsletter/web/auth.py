"""Admin sessions and the permission dependencies every admin route declares.

The session is Starlette's signed cookie (`SECRET_KEY`, HttpOnly, SameSite=Lax, Secure when `BASE_URL`
is https or `SESSION_COOKIE_SECURE` says so). It holds the user id, the account's session version, the
login time and the CSRF token. The account is read on every request: a cookie whose version is not the
account's current one (after logout, a password or role change, disabling) or whose login is older
than `SESSION_LIFETIME_SECONDS` opens nothing, however recently it was used. Account ids are never
reused, so a removed account's cookie cannot name a new one.

    CurrentUser     any logged-in account (staff or volunteer)
    VolunteerUser   an account that may manage subscribers (volunteers and staff)
    StaffUser       staff only; a volunteer gets 403

Logged out, a GET is redirected to the login page and anything else gets 401. For unsafe methods the
dependencies also check the CSRF token (after the login, before the role), so a route that declares one
of them is protected without further thought.
"""

from __future__ import annotations

import time
from typing import Annotated
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from starlette.middleware.sessions import SessionMiddleware

from newsletter.accounts import may, session_holder
from newsletter.core.config import Settings
from newsletter.core.models import User
from newsletter.web.csrf import check_csrf
from newsletter.web.deps import SessionDep, SettingsDep

SESSION_COOKIE = "newsletter_admin"
USER_KEY = "uid"
VERSION_KEY = "sv"
LOGIN_AT_KEY = "iat"
LOGIN_URL = "/admin/login"


class LoginRequired(Exception):
    """No logged-in account: GET goes to the login page, anything else is refused with 401."""


class Forbidden(Exception):
    """The account's role may not use this page (403)."""


def cookie_is_secure(settings: Settings) -> bool:
    if settings.SESSION_COOKIE_SECURE is not None:
        return settings.SESSION_COOKIE_SECURE
    return settings.BASE_URL.lower().startswith("https://")


def install_sessions(app: FastAPI, settings: Settings) -> None:
    """Add the signed-cookie session middleware (raises ConfigError when SECRET_KEY is missing)."""
    app.add_middleware(
        SessionMiddleware,
        secret_key=settings.secret_keys[0],
        session_cookie=SESSION_COOKIE,
        max_age=settings.SESSION_LIFETIME_SECONDS,
        path="/",
        same_site="lax",
        https_only=cookie_is_secure(settings),
    )


def login_url_for(request: Request) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{LOGIN_URL}?next={quote(target, safe='')}"


def log_in(request: Request, user: User) -> None:
    """Start a fresh session for `user` (a new CSRF token too: nothing of the anonymous one carries over)."""
    request.session.clear()
    request.session[USER_KEY] = user.id
    request.session[VERSION_KEY] = user.session_version
    request.session[LOGIN_AT_KEY] = int(time.time())


def log_out(request: Request) -> None:
    request.session.clear()


def session_user(request: Request, session: SessionDep, settings: SettingsDep) -> User | None:
    """The active account of this session, or None (and the session is emptied)."""
    login_at = request.session.get(LOGIN_AT_KEY)
    fresh = isinstance(login_at, int) and time.time() - login_at < settings.SESSION_LIFETIME_SECONDS
    user = session_holder(session, request.session.get(USER_KEY), request.session.get(VERSION_KEY))
    if user is None or not fresh:
        if USER_KEY in request.session:
            request.session.clear()
        return None
    return user


MaybeUser = Annotated[User | None, Depends(session_user)]


async def current_user(request: Request, user: MaybeUser) -> User:
    if user is None:
        raise LoginRequired()
    await check_csrf(request)
    request.state.user = user
    return user


async def volunteer_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not may(user.role, "subscribers"):
        raise Forbidden()
    return user


async def staff_user(user: Annotated[User, Depends(current_user)]) -> User:
    if not may(user.role, "staff"):
        raise Forbidden()
    return user


CurrentUser = Annotated[User, Depends(current_user)]
VolunteerUser = Annotated[User, Depends(volunteer_user)]
StaffUser = Annotated[User, Depends(staff_user)]
