"""Admin accounts: argon2 password hashes, logging in with a throttle, sessions that can be revoked,
and who may do what.

A staff member may do everything in the admin; a volunteer manages subscribers only (`may`). Logging
in counts failures per (address typed, client address): after `LOGIN_MAX_FAILURES` in the window of
`LOGIN_LOCKOUT_SECONDS`, the next try must wait 30 seconds, and each further failure doubles the wait
(up to that window). Failures from one client never lock the account for anyone else and never end a live
session, so nobody can lock staff out. Every refusal, throttled or not, known address or not, says the
same thing and costs the same argon2 work, so answers do not tell which addresses have accounts.

`User.session_version` is written into the session cookie at login; raising it (logout, password,
role, disable) ends every session of that account at once (`newsletter.web.auth`).
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlmodel import Session, col, select

from newsletter.audience import ratelimit_store
from newsletter.audience.subscribers import normalize_email
from newsletter.core import audit
from newsletter.core.config import Settings
from newsletter.core.dialect import lock_key
from newsletter.core.errors import NewsletterError, NotFound
from newsletter.core.models import User, utcnow
from newsletter.core.status import Role

MIN_PASSWORD_LENGTH = 10
FIRST_WAIT_SECONDS = 30.0
"""The wait after the last free failure; each further failure doubles it (up to LOGIN_LOCKOUT_SECONDS)."""

_hasher = PasswordHasher()
_ARGON2_SLOTS = threading.BoundedSemaphore(max(1, (os.cpu_count() or 2) - 1))
"""Hashes computed at once: one core is left for the event loop, so forty concurrent logins queue
here (without using CPU) instead of starving every other request."""


@cache
def _dummy_hash() -> str:
    """A hash to verify against when the address is unknown, so that a login for an unknown address
    takes as long as one for a known address. Made on first use: argon2 needs 64 MiB and a sixth of a
    second, which every process importing this module (a send worker, say) would otherwise pay."""
    return _hasher.hash("not a password of anyone's")


class LoginRefused(NewsletterError):
    """Wrong address or password, a disabled account, or too many tries: one message for all of them."""

    def __init__(self) -> None:
        super().__init__("Wrong email address or password, or too many tries: wait a moment and try again.")


def hash_password(password: str) -> str:
    with _ARGON2_SLOTS:
        return _hasher.hash(password)


def check_password_strength(password: str) -> None:
    """Raise NewsletterError for a password too short to keep an admin account safe."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise NewsletterError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters long")


def password_matches(password_hash: str, password: str) -> bool:
    try:
        with _ARGON2_SLOTS:
            return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def find_user(session: Session, email: str) -> User | None:
    return session.exec(select(User).where(User.email == email.strip().lower())).first()


def create_user(
    session: Session, email: str, password: str, role: Role | str, *, actor: str = audit.CLI_ACTOR
) -> User:
    """Add an account (flushed, not committed). Raises NewsletterError for a bad address, role or
    password, or an address that already has an account."""
    try:
        address = normalize_email(email)
    except ValueError as exc:
        raise NewsletterError(f"invalid email address {email!r}: {exc}") from exc
    try:
        role = Role(role)
    except ValueError as exc:
        raise NewsletterError(f"unknown role {role!r} (staff or volunteer)") from exc
    check_password_strength(password)
    if find_user(session, address) is not None:
        raise NewsletterError(f"{address} already has an account")
    user = User(email=address, password_hash=hash_password(password), role=role)
    session.add(user)
    session.flush()
    audit.record(session, actor, "user.create", "user", user.id, {"email": address, "role": str(role)})
    return user


def _throttle_key(email: str, client: str) -> str:
    return ratelimit_store.window_key("login", f"{email.strip().lower()}\n{client}")


def _throttled(session: Session, key: str, settings: Settings, now: datetime) -> bool:
    """Whether this (address, client) must wait before its next try (the wait doubles per failure)."""
    window = timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS)
    failures = ratelimit_store.count(session, key, window, now=now)
    if failures < settings.LOGIN_MAX_FAILURES:
        return False
    doubling = FIRST_WAIT_SECONDS * 2.0 ** (failures - settings.LOGIN_MAX_FAILURES)
    wait = min(doubling, float(settings.LOGIN_LOCKOUT_SECONDS))
    last = ratelimit_store.latest(session, key)
    return last is not None and now - last < timedelta(seconds=wait)


def authenticate(
    session: Session,
    email: str,
    password: str,
    settings: Settings,
    *,
    client: str = "unknown",
    now: datetime | None = None,
) -> User:
    """The active account `email` names if `password` is right; otherwise raise LoginRefused.

    Every try that gets as far as the password check is counted as a failure for this (address,
    client) *before* the check, under a lock on that key, and the count committed: concurrent guesses
    then each see the others, where counting after the check let a burst of them all read "fewer than
    `LOGIN_MAX_FAILURES`" and all be checked. A success forgets the failures (in the caller's
    transaction, which the caller commits). Call it with nothing else pending.
    """
    now = now or utcnow()
    key = _throttle_key(email, client)
    lock_key(session, key)
    user = find_user(session, email)
    throttled = _throttled(session, key, settings, now)
    if not throttled:
        ratelimit_store.hit(session, key, timedelta(seconds=settings.LOGIN_LOCKOUT_SECONDS), now=now)
    # End the transaction before a sixth of a second of argon2: on SQLite every transaction holds the
    # write lock, and forty concurrent logins would otherwise queue on it past the busy timeout.
    session.commit()
    if throttled:
        password_matches(_dummy_hash(), password)  # same work as a real check
        raise LoginRefused()
    if user is None or not user.is_active:
        password_matches(_dummy_hash(), password)
        ok = False
    else:
        ok = password_matches(user.password_hash, password)
    if not ok or user is None:
        raise LoginRefused()  # already counted
    ratelimit_store.forget(session, key)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    user.last_login_at = now
    session.add(user)
    session.flush()
    return user


def revoke_sessions(session: Session, user: User) -> None:
    """End every admin session of `user` (their cookies carry the old version)."""
    user.session_version += 1
    session.add(user)


def session_holder(session: Session, user_id: object, version: object) -> User | None:
    """The active account a session cookie names, if the cookie's version is the account's current one."""
    if not isinstance(user_id, int) or not isinstance(version, int) or not 0 < user_id < 2**63:
        return None
    user = session.get(User, user_id)
    if user is None or not user.is_active or user.session_version != version:
        return None
    return user


def get_user_by_id(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound("no such account")
    return user


def may(role: str, area: str) -> bool:
    """Whether `role` may use an `area` of the admin: "subscribers" (both roles) or anything else (staff)."""
    if role == Role.STAFF:
        return True
    return role == Role.VOLUNTEER and area == "subscribers"


def list_users(session: Session) -> list[User]:
    return list(session.exec(select(User).order_by(col(User.email))).all())


def get_user(session: Session, email: str) -> User:
    user = find_user(session, email)
    if user is None:
        raise NotFound(f"no account for {email}")
    return user


def set_active(session: Session, user: User, active: bool, *, actor: str = audit.CLI_ACTOR) -> User:
    """Disable (keeps the account and its history) or re-enable an account."""
    if user.is_active != active:
        audit.record(
            session,
            actor,
            "user.enable" if active else "user.disable",
            "user",
            user.id,
            {"is_active": [user.is_active, active]},
        )
        user.is_active = active
        user.failed_logins = 0
        user.locked_until = None
        revoke_sessions(session, user)
        session.add(user)
        session.flush()
    return user


def set_role(session: Session, user: User, role: Role | str, *, actor: str = audit.CLI_ACTOR) -> User:
    role = Role(role)
    if user.role != role:
        audit.record(session, actor, "user.role", "user", user.id, {"role": [user.role, str(role)]})
        user.role = role
        revoke_sessions(session, user)
        session.add(user)
        session.flush()
    return user


def set_password(session: Session, user: User, password: str, *, actor: str = audit.CLI_ACTOR) -> User:
    check_password_strength(password)
    user.password_hash = hash_password(password)
    user.failed_logins = 0
    user.locked_until = None
    revoke_sessions(session, user)
    session.add(user)
    audit.record(session, actor, "user.password", "user", user.id, {})
    session.flush()
    return user


def remove_user(session: Session, user: User, *, actor: str = audit.CLI_ACTOR) -> None:
    """Delete an account; its test sends keep their record without it (SET NULL), the audit keeps the email."""
    audit.record(session, actor, "user.remove", "user", user.id, {"email": user.email, "role": user.role})
    session.delete(user)
    session.flush()
