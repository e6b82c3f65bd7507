"""Bulletins, for staff: list, create, import from the text format, edit while editable (title, subject,
verse, items per region with kind and Markdown, reorder, delete), and move through the lifecycle:
mark ready, schedule (`send_at` entered and shown in `TIMEZONE`), pause, resume, cancel."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import Response
from sqlmodel import Session

from newsletter.content import items, queries
from newsletter.content.bulletins import (
    get_bulletin,
    list_bulletins,
    parse_bulletin,
    parse_send_at,
    store_bulletin,
)
from newsletter.content.types import BulletinContent
from newsletter.core.errors import ImportFailed, NewsletterError, NotFound
from newsletter.core.models import Bulletin, Item, Region, utcnow
from newsletter.core.status import EDITABLE_BULLETIN, BulletinStatus, ItemKind
from newsletter.sending import lifecycle
from newsletter.sending.slots import slot_plan
from newsletter.web.admin.pages import flash, local_time, render, see_other
from newsletter.web.auth import StaffUser
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(prefix="/bulletins")

B = BulletinStatus
MAX_TEXT_BYTES = 512 * 1024
SCHEDULE_SLACK = timedelta(seconds=30)
"""How far in the past a `send_at` may be and still count as "now" (the form was filled in slowly)."""


def get_bulletin_or_404(session: Session, bulletin_id: int) -> Bulletin:
    try:
        return get_bulletin(session, bulletin_id)
    except NotFound as exc:
        raise HTTPException(404, "no such bulletin") from exc


@router.get("")
def list_page(request: Request, user: StaffUser, session: SessionDep) -> Response:
    return render(request, "bulletins.html", {"bulletins": list_bulletins(session, limit=200)})


@router.post("/new")
def create(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    title: Annotated[str, Form()] = "",
    subject: Annotated[str, Form()] = "",
) -> Response:
    title = " ".join(title.split())[:200] or "Untitled bulletin"
    content = BulletinContent(
        title=title,
        subject=" ".join(subject.split())[:200] or title,
        scripture_text="",
        scripture_reference="",
        sections=(),
    )
    bulletin = store_bulletin(session, content, actor=user.email)
    session.commit()
    flash(request, "Bulletin created: add its verse and items.")
    return see_other(f"/admin/bulletins/{bulletin.id}")


@router.get("/import")
def import_page(request: Request, user: StaffUser) -> Response:
    return render(request, "bulletin_import.html", {"text": "", "problems": []})


@router.post("/import")
async def import_submit(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    settings: SettingsDep,
    text: Annotated[str, Form()] = "",
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    source = "pasted text"
    if file is not None and file.filename:
        raw = await file.read(MAX_TEXT_BYTES + 1)
        source = file.filename
        try:
            text = raw[:MAX_TEXT_BYTES].decode("utf-8-sig")
        except UnicodeDecodeError:
            return render(
                request,
                "bulletin_import.html",
                {"text": "", "problems": [f"{source} is not UTF-8 text; save it as UTF-8."]},
                status_code=400,
            )
    try:
        content = parse_bulletin(text, settings, source=source)
        bulletin = store_bulletin(session, content, actor=user.email)
    except ImportFailed as exc:
        session.rollback()
        return render(
            request,
            "bulletin_import.html",
            {"text": text, "problems": [str(p) for p in exc.problems]},
            status_code=400,
        )
    except NewsletterError as exc:
        session.rollback()
        return render(
            request, "bulletin_import.html", {"text": text, "problems": [str(exc)]}, status_code=400
        )
    session.commit()
    flash(request, f"Imported “{bulletin.title}” as a draft.")
    return see_other(f"/admin/bulletins/{bulletin.id}")


def items_by_region(session: Session, bulletin_id: int) -> list[tuple[Region, list[Item]]]:
    """Every region in display order with the bulletin's items in it (empty regions too: the editor
    offers them for new items)."""
    items = queries.items_in_order(session, bulletin_id)
    return [
        (region, [i for i in items if i.region_id == region.id])
        for region in queries.regions_in_order(session)
    ]


@router.get("/{bulletin_id}")
def editor(
    request: Request, user: StaffUser, session: SessionDep, settings: SettingsDep, bulletin_id: int
) -> Response:
    bulletin = get_bulletin_or_404(session, bulletin_id)
    local = (
        bulletin.send_at.astimezone(settings.tz)
        if bulletin.send_at
        else utcnow().astimezone(settings.tz) + timedelta(hours=1)
    )
    return render(
        request,
        "bulletin.html",
        {
            "bulletin": bulletin,
            "sections": items_by_region(session, bulletin_id),
            "regions": queries.regions_in_order(session),
            "kinds": [k.value for k in ItemKind],
            "editable": bulletin.status in EDITABLE_BULLETIN,
            "send_at_value": local.strftime("%Y-%m-%dT%H:%M"),
            "actions": _actions(bulletin),
        },
    )


def _actions(bulletin: Bulletin) -> list[str]:
    status = bulletin.status
    actions = []
    if status == B.DRAFT:
        actions.append("ready")
    if status == B.READY:
        actions.append("draft")
    if status in {B.READY, B.SENDING}:
        actions.append("pause")
    if status == B.PAUSED:
        actions.append("resume")
    if status not in {B.SENT, B.CANCELLED}:
        actions.append("cancel")
    return actions


def _edited(
    request: Request, session: Session, bulletin_id: int, edit: Callable[[], object], done: str
) -> None:
    """Run one edit service: commit and say `done` (when it changed anything), or roll back and say why
    not. A bulletin or item that does not exist is a 404."""
    try:
        changed = edit()
    except NotFound as exc:
        session.rollback()
        raise HTTPException(404, str(exc)) from exc
    except NewsletterError as exc:
        session.rollback()
        flash(request, f"Not changed: {exc}.", "error")
        return
    session.commit()
    if changed is not False:
        flash(request, done)


@router.post("/{bulletin_id}")
def save_header(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    bulletin_id: int,
    title: Annotated[str, Form()] = "",
    subject: Annotated[str, Form()] = "",
    scripture_text: Annotated[str, Form()] = "",
    scripture_reference: Annotated[str, Form()] = "",
    intro: Annotated[str, Form()] = "",
) -> Response:
    edit = items.HeaderEdit(title, subject, scripture_text, scripture_reference, intro)
    _edited(
        request,
        session,
        bulletin_id,
        lambda: items.edit_header(session, bulletin_id, edit, actor=user.email),
        "Saved.",
    )
    return see_other(f"/admin/bulletins/{bulletin_id}")


@router.post("/{bulletin_id}/items")
def add_item(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    bulletin_id: int,
    region: Annotated[str, Form()],
    body: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = ItemKind.PRAY,
) -> Response:
    added: list[Item] = []

    def add() -> None:
        added.append(items.add_item(session, bulletin_id, region, body, kind, actor=user.email))

    _edited(request, session, bulletin_id, add, "Item added.")
    anchor = f"item-{added[0].id}" if added else "add-item"
    return see_other(f"/admin/bulletins/{bulletin_id}#{anchor}")


@router.post("/{bulletin_id}/items/{item_id}")
def save_item(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    bulletin_id: int,
    item_id: int,
    body: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = ItemKind.PRAY,
    region: Annotated[str, Form()] = "",
) -> Response:
    def edit() -> bool:
        return items.edit_item(
            session, bulletin_id, item_id, body=body, kind=kind, region=region, actor=user.email
        )

    _edited(request, session, bulletin_id, edit, "Item saved.")
    return see_other(f"/admin/bulletins/{bulletin_id}#item-{item_id}")


@router.post("/{bulletin_id}/items/{item_id}/move")
def move_item(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    bulletin_id: int,
    item_id: int,
    direction: Annotated[str, Form()] = "up",
) -> Response:
    """Swap an item with its neighbour in the same region (items are ordered per region)."""
    way: items.Direction = "down" if direction == "down" else "up"
    _edited(
        request,
        session,
        bulletin_id,
        lambda: items.move_item(session, bulletin_id, item_id, way, actor=user.email),
        "Item moved.",
    )
    return see_other(f"/admin/bulletins/{bulletin_id}#item-{item_id}")


@router.post("/{bulletin_id}/items/{item_id}/delete")
def delete_item(
    request: Request, user: StaffUser, session: SessionDep, bulletin_id: int, item_id: int
) -> Response:
    _edited(
        request,
        session,
        bulletin_id,
        lambda: items.delete_item(session, bulletin_id, item_id, actor=user.email),
        "Item deleted.",
    )
    return see_other(f"/admin/bulletins/{bulletin_id}")


@router.post("/{bulletin_id}/status")
def change(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    settings: SettingsDep,
    bulletin_id: int,
    action: Annotated[str, Form()],
    send_at: Annotated[str, Form()] = "",
) -> Response:
    """Lifecycle actions. Scheduling sets `send_at` and makes the bulletin ready; "ready" alone leaves
    it for the next slot of the weekly schedule."""
    bulletin = get_bulletin_or_404(session, bulletin_id)
    back = see_other(f"/admin/bulletins/{bulletin_id}")
    try:
        if action == "ready":
            items.mark_ready(session, bulletin_id, actor=user.email)
            session.commit()
            plan = slot_plan(session, settings, bulletin_id)
            message = f"Ready: it goes out {local_time(plan.slot_at, settings)} (the next slot of the weekly schedule)."
            if plan.ahead:
                flash(request, f"Warning: {plan.warning(bulletin_id, settings)}.", "error")
        elif action == "draft":
            items.back_to_draft(session, bulletin_id, actor=user.email)
            message = "Back to draft."
        elif action == "schedule":
            when = parse_send_at(send_at, settings)
            if when < utcnow() - SCHEDULE_SLACK:
                raise NewsletterError("that time has passed; choose a time in the future")
            lifecycle.schedule(session, bulletin_id, when, actor=user.email)
            message = f"Scheduled for {when.astimezone(settings.tz).strftime('%a %d %b %Y, %H:%M %Z')}."
        elif action == "unschedule":
            items.unschedule(session, bulletin_id, actor=user.email)
            message = "No longer scheduled for a set time: it goes out at the next weekly slot."
        elif action == "pause":
            lifecycle.pause(session, bulletin_id, actor=user.email)
            message = "Paused: nothing more is sent until you resume."
        elif action == "resume":
            lifecycle.resume(session, bulletin_id, actor=user.email, no_section=settings.NO_SECTION)
            message = "Resumed."
        elif action == "cancel":
            skipped = lifecycle.cancel(session, bulletin_id, actor=user.email)
            message = "Cancelled: it will not be sent" + (
                f" ({skipped} pending deliveries skipped)." if skipped else "."
            )
        else:
            raise NewsletterError(f"unknown action {action!r}")
    except NewsletterError as exc:
        session.rollback()
        flash(request, f"Not changed: {exc}.", "error")
        return back
    session.commit()
    flash(request, message)
    if action in {"schedule", "resume"} and bulletin.status in {B.READY, B.SENDING}:
        return see_other(f"/admin/bulletins/{bulletin_id}/dashboard")
    return back
