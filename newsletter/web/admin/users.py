"""Accounts, for staff: add, change role, reset password, disable or enable, remove."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import Response

from newsletter import accounts
from newsletter.core.errors import NewsletterError, NotFound
from newsletter.core.status import Role
from newsletter.web.admin.pages import flash, render, see_other
from newsletter.web.auth import StaffUser
from newsletter.web.deps import DbId, SessionDep

router = APIRouter(prefix="/users")


@router.get("")
def users_page(request: Request, user: StaffUser, session: SessionDep) -> Response:
    return render(
        request, "users.html", {"users": accounts.list_users(session), "roles": [r.value for r in Role]}
    )


@router.post("")
def add_user(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    email: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = Role.VOLUNTEER,
    password: Annotated[str, Form()] = "",
) -> Response:
    try:
        created = accounts.create_user(session, email, password, role, actor=user.email)
    except NewsletterError as exc:
        session.rollback()
        flash(request, f"Not added: {exc}.", "error")
        return see_other("/admin/users")
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
        flash(request, f"Not changed: {exc}.", "error")
        return see_other("/admin/users")
    session.commit()
    flash(request, f"{target.email}: done ({action}).")
    return see_other("/admin/users")
