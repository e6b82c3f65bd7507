"""A bulletin's lifecycle from the admin: mark ready, back to draft, schedule (at a time in `TIMEZONE`, or
at a wall-clock time in each subscriber's own zone), unschedule, pause, resume, cancel (asked first).
The rules are `content.items` and `sending.lifecycle`'s; this module parses the form and says what
happened."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response
from sqlmodel import Session

from newsletter.content import items
from newsletter.content.bulletins import parse_send_at
from newsletter.core import zones
from newsletter.core.config import Settings
from newsletter.core.errors import NewsletterError
from newsletter.core.models import Bulletin, utcnow
from newsletter.sending import lifecycle
from newsletter.sending.slots import slot_plan
from newsletter.web.admin.bulletins import B, confirm_page, get_bulletin_or_404
from newsletter.web.admin.pages import flash, flash_form, local_time, see_other
from newsletter.web.auth import StaffUser
from newsletter.web.deps import SessionDep, SettingsDep
from newsletter.web.form_errors import FormErrors

router = APIRouter(prefix="/bulletins")


class BadSendTime(NewsletterError):
    """The send time typed in the form is what is wrong (not the bulletin): the field is marked."""


def _confirm_cancel(request: Request, bulletin: Bulletin) -> Response:
    return confirm_page(
        request,
        f"Cancel “{bulletin.title}”?",
        f"/admin/bulletins/{bulletin.id}/status",
        f"/admin/bulletins/{bulletin.id}",
        hidden_fields={"action": "cancel"},
        detail="A cancelled bulletin is never sent, and this cannot be undone"
        + (": deliveries not yet sent are skipped." if bulletin.status == B.SENDING else "."),
        confirm_label="Cancel the bulletin",
        back_label="Keep it",
    )


@router.post("/{bulletin_id}/status")
def change(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    settings: SettingsDep,
    bulletin_id: int,
    action: Annotated[str, Form()],
    send_at: Annotated[str, Form()] = "",
    local: Annotated[str, Form()] = "",
    confirmed: Annotated[str, Form()] = "",
) -> Response:
    """Lifecycle actions. Scheduling sets `send_at` and makes the bulletin ready (with `local`, the time is
    each subscriber's own wall-clock time); "ready" alone leaves it for the next slot of the weekly
    schedule. Cancelling asks first (it cannot be undone)."""
    bulletin = get_bulletin_or_404(session, bulletin_id)
    back = see_other(f"/admin/bulletins/{bulletin_id}")
    if action == "cancel" and confirmed != "yes":
        return _confirm_cancel(request, bulletin)
    try:
        message = _act(request, session, settings, user.email, bulletin_id, action, send_at, local)
    except BadSendTime as exc:  # the form's own field is at fault: mark it
        session.rollback()
        flash_form(
            request, FormErrors({"send_at": f"Choose another send time: {exc}."}), {"send_at": send_at}
        )
        return back
    except NewsletterError as exc:
        session.rollback()
        flash(request, f"Not changed: {exc}.", "error")
        return back
    session.commit()
    flash(request, message)
    if action in {"schedule", "resume"} and bulletin.status in {B.READY, B.SENDING}:
        return see_other(f"/admin/bulletins/{bulletin_id}/dashboard")
    return back


def _act(
    request: Request,
    session: Session,
    settings: Settings,
    actor: str,
    bulletin_id: int,
    action: str,
    send_at: str,
    local: str,
) -> str:
    """Carry out one lifecycle action; the message for the person (NewsletterError when refused)."""
    if action == "ready":
        items.mark_ready(session, bulletin_id, actor=actor)
        session.commit()
        plan = slot_plan(session, settings, bulletin_id)
        if plan.ahead:
            flash(request, f"Warning: {plan.warning(bulletin_id, settings)}.", "error")
        return (
            f"Ready: it goes out {local_time(plan.slot_at, settings)} (the next slot of the weekly schedule)."
        )
    if action == "draft":
        items.back_to_draft(session, bulletin_id, actor=actor)
        return "Back to draft."
    if action == "schedule" and local:
        return _schedule_local(session, settings, bulletin_id, send_at, actor)
    if action == "schedule":
        try:
            when = parse_send_at(send_at, settings)
            lifecycle.ensure_future(when)
        except NewsletterError as exc:
            raise BadSendTime(str(exc)) from exc
        lifecycle.schedule(session, bulletin_id, when, actor=actor)
        return f"Scheduled for {when.astimezone(settings.tz).strftime('%a %d %b %Y, %H:%M %Z')}."
    if action == "unschedule":
        items.unschedule(session, bulletin_id, actor=actor)
        return "No longer scheduled for a set time: it goes out at the next weekly slot."
    if action == "pause":
        lifecycle.pause(session, bulletin_id, actor=actor)
        return "Paused: nothing more is sent until you resume."
    if action == "resume":
        lifecycle.resume(
            session,
            bulletin_id,
            actor=actor,
            default_zone=settings.TIMEZONE,
            no_section=settings.NO_SECTION,
        )
        return "Resumed."
    if action == "cancel":
        skipped = lifecycle.cancel(session, bulletin_id, actor=actor)
        return "Cancelled: it will not be sent" + (
            f" ({skipped} pending deliveries skipped)." if skipped else "."
        )
    raise NewsletterError(f"unknown action {action!r}")


def _schedule_local(session: Session, settings: Settings, bulletin_id: int, text: str, actor: str) -> str:
    """Schedule at a wall-clock time each subscriber receives in their own zone; the flash message."""
    try:
        wall = zones.parse_wall(text)
    except ValueError as exc:
        raise NewsletterError(str(exc)) from exc
    first, last = zones.first_and_last(wall)
    if first < utcnow() - lifecycle.SCHEDULE_SLACK:
        raise NewsletterError("that local time has already come in the first time zone; choose a later one")
    lifecycle.schedule_local(session, bulletin_id, wall, actor=actor)

    def shown(t: datetime) -> str:
        return t.astimezone(settings.tz).strftime("%a %d %b %Y, %H:%M %Z")

    return (
        f"Scheduled for {wall.strftime('%a %d %b %Y, %H:%M')} in each subscriber's own time zone: "
        f"the first zone receives it {shown(first)}, the last {shown(last)}."
    )
