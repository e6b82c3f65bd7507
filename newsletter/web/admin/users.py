"""Accounts, for staff: add, change role, reset password, disable or enable, remove."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import Response
from sqlmodel import Session

from newsletter import accounts
from newsletter.audience.subscribers import normalize_email
from newsletter.core.errors import NewsletterError, NotFound
from newsletter.core.status import Role
from newsletter.web.admin.pages import flash, render, see_other
from newsletter.web.auth import StaffUser
from newsletter.web.deps import DbId, SessionDep
from newsletter.web.form_errors import FormErrors

router = APIRouter(prefix="/users")


@router.get("")
def users_page(request: Request, user: StaffUser, session: SessionDep) -> Response:
    return _page(request, session)


def _page(
    request: Request,
    session: Session,
    form_errors: FormErrors | None = None,
    typed: dict[str, str] | None = None,
) -> Response:
    """The accounts page; after a refused form, with its problems and what was typed (never a password)."""
    context = {
        "users": accounts.list_users(session),
        "roles": [r.value for r in Role],
        "form_errors": form_errors or FormErrors(),
        "typed": typed or {},
    }
    return render(request, "users.html", context, status_code=400 if form_errors else 200)


def _new_account_errors(email: str, password: str) -> FormErrors:
    """The add-account form's problems, field by field, from the same checks `create_user` makes."""
    errors = FormErrors()
    try:
        normalize_email(email)
    except ValueError as exc:
        errors.add("email", f"Enter an email address, like name@example.org ({exc}).")
    try:
        accounts.check_password_strength(password)
    except NewsletterError as exc:
        errors.add("password", f"Choose a longer password: {exc}.")
    return errors


@router.post("")
def add_user(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    email: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = Role.VOLUNTEER,
    password: Annotated[str, Form()] = "",
) -> Response:
    errors = _new_account_errors(email, password)
    if not errors:
        try:
            created = accounts.create_user(session, email, password, role, actor=user.email)
        except NewsletterError as exc:
            session.rollback()
            errors.add("email", f"Not added: {exc}.")
    if errors:
        return _page(request, session, errors, {"email": email, "role": role})
    session.commit()
    flash(request, f"Account added for {created.email} ({created.role}).")
    return see_other("/admin/users")


@router.post("/{user_id}")
def change_user(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    user_id: DbId,
    action: Annotated[str, Form()],
    role: Annotated[str, Form()] = "",
    password: Annotated[str, Form()] = "",
) -> Response:
    try:
        target = accounts.get_user_by_id(session, user_id)
    except NotFound as exc:
        raise HTTPException(404, "no such account") from exc
    if target.id == user.id and action in {"disable", "remove", "role"}:
        flash(request, "You cannot disable, remove or demote your own account.", "error")
        return see_other("/admin/users")
    try:
        if action == "role":
            accounts.set_role(session, target, role, actor=user.email)
        elif action == "password":
            accounts.set_password(session, target, password, actor=user.email)
        elif action == "disable":
            accounts.set_active(session, target, False, actor=user.email)
        elif action == "enable":
            accounts.set_active(session, target, True, actor=user.email)
        elif action == "remove":
            accounts.remove_user(session, target, actor=user.email)
        else:
            raise NewsletterError(f"unknown action {action!r}")
    except (NewsletterError, ValueError) as exc:
        session.rollback()
        if action == "password":
            return _page(request, session, FormErrors({f"pw_{user_id}": f"Not changed: {exc}."}))
        flash(request, f"Not changed: {exc}.", "error")
        return see_other("/admin/users")
    session.commit()
    flash(request, f"{target.email}: done ({action}).")
    return see_other("/admin/users")
