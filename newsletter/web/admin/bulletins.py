"""Bulletins, for staff: list, create, import from the text format, edit while editable (title, subject,
verse, items per region with kind and Markdown, reorder, delete), and move through the lifecycle:
mark ready, schedule (`send_at` entered and shown in `TIMEZONE`), pause, resume, cancel."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import Response
from sqlmodel import Session, col, select

from newsletter.content.bulletins import (
    change_status,
    list_bulletins,
    parse_bulletin,
    parse_send_at,
    store_bulletin,
)
from newsletter.content.types import BulletinContent
from newsletter.core import audit
from newsletter.core.errors import ImportFailed, NewsletterError
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


def _regions(session: Session) -> list[Region]:
    return list(session.exec(select(Region).order_by(col(Region.position), col(Region.id))).all())


def get_bulletin_or_404(session: Session, bulletin_id: int) -> Bulletin:
    bulletin = session.get(Bulletin, bulletin_id)
    if bulletin is None:
        raise HTTPException(404, "no such bulletin")
    return bulletin


def _editable(request: Request, bulletin: Bulletin) -> bool:
    if bulletin.status in EDITABLE_BULLETIN:
        return True
    flash(request, f"A {bulletin.status} bulletin can no longer be edited.", "error")
    return False


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
    items = session.exec(
        select(Item).where(Item.bulletin_id == bulletin_id).order_by(col(Item.position), col(Item.id))
    ).all()
    return [(region, [i for i in items if i.region_id == region.id]) for region in _regions(session)]


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
            "regions": _regions(session),
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
    bulletin = get_bulletin_or_404(session, bulletin_id)
    if not _editable(request, bulletin):
        return see_other(f"/admin/bulletins/{bulletin_id}")
    new = {
        "title": " ".join(title.split())[:200] or bulletin.title,
        "subject": " ".join(subject.split())[:200] or bulletin.subject,
        "scripture_text": scripture_text.strip(),
        "scripture_reference": " ".join(scripture_reference.split())[:120],
        "intro": intro.strip(),
    }
    changes = audit.diff({k: getattr(bulletin, k) for k in new}, new)
    if changes:
        for key, value in new.items():
            setattr(bulletin, key, value)
        bulletin.updated_at = utcnow()
        session.add(bulletin)
        audit.record(session, user.email, "bulletin.edit", "bulletin", bulletin.id, changes)
        session.commit()
        flash(request, "Saved.")
    return see_other(f"/admin/bulletins/{bulletin_id}")


def _region_id(session: Session, code: str) -> int:
    region = session.exec(select(Region).where(Region.code == code)).first()
    if region is None or region.id is None:
        raise HTTPException(400, "unknown region")
    return region.id


def _kind(kind: str) -> ItemKind:
    try:
        return ItemKind(kind)
    except ValueError as exc:
        raise HTTPException(400, "unknown kind") from exc


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
    bulletin = get_bulletin_or_404(session, bulletin_id)
    if not _editable(request, bulletin):
        return see_other(f"/admin/bulletins/{bulletin_id}")
    if not body.strip():
        flash(request, "An item needs some text.", "error")
        return see_other(f"/admin/bulletins/{bulletin_id}#add-item")
    last = session.exec(
        select(Item.position).where(Item.bulletin_id == bulletin_id).order_by(col(Item.position).desc())
    ).first()
    item = Item(
        bulletin_id=bulletin_id,
        region_id=_region_id(session, region),
        kind=_kind(kind),
        position=(last or 0) + 1,
        body=body.strip(),
    )
    session.add(item)
    session.flush()
    audit.record(
        session,
        user.email,
        "bulletin.item.add",
        "bulletin",
        bulletin_id,
        {"item": item.id, "region": region, "kind": kind},
    )
    _touch(session, bulletin)
    flash(request, "Item added.")
    return see_other(f"/admin/bulletins/{bulletin_id}#item-{item.id}")


def _touch(session: Session, bulletin: Bulletin) -> None:
    bulletin.updated_at = utcnow()
    session.add(bulletin)
    session.commit()


def _item(session: Session, bulletin_id: int, item_id: int) -> Item:
    item = session.get(Item, item_id)
    if item is None or item.bulletin_id != bulletin_id:
        raise HTTPException(404, "no such item")
    return item


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
    bulletin = get_bulletin_or_404(session, bulletin_id)
    item = _item(session, bulletin_id, item_id)
    if not _editable(request, bulletin):
        return see_other(f"/admin/bulletins/{bulletin_id}")
    if not body.strip():
        flash(request, "An item needs some text (use Delete to remove it).", "error")
        return see_other(f"/admin/bulletins/{bulletin_id}#item-{item_id}")
    before = {"body": item.body, "kind": item.kind, "region_id": item.region_id}
    after = {
        "body": body.strip(),
        "kind": str(_kind(kind)),
        "region_id": _region_id(session, region) if region else item.region_id,
    }
    changes = audit.diff(before, after)
    if changes:
        item.body, item.kind, item.region_id = after["body"], after["kind"], after["region_id"]  # type: ignore[assignment]
        session.add(item)
        if "body" in changes:
            changes["body"] = ["…", "changed"]  # the text itself stays in the bulletin, not the log
        audit.record(
            session, user.email, "bulletin.item.edit", "bulletin", bulletin_id, {"item": item_id, **changes}
        )
        _touch(session, bulletin)
        flash(request, "Item saved.")
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
    bulletin = get_bulletin_or_404(session, bulletin_id)
    item = _item(session, bulletin_id, item_id)
    if not _editable(request, bulletin):
        return see_other(f"/admin/bulletins/{bulletin_id}")
    siblings = list(
        session.exec(
            select(Item)
            .where(Item.bulletin_id == bulletin_id, Item.region_id == item.region_id)
            .order_by(col(Item.position), col(Item.id))
        ).all()
    )
    index = next(i for i, s in enumerate(siblings) if s.id == item.id)
    other = index - 1 if direction == "up" else index + 1
    if 0 <= other < len(siblings):
        siblings[index], siblings[other] = siblings[other], siblings[index]
        positions = sorted(s.position for s in siblings)
        if len(set(positions)) < len(positions):  # repair ties so that a swap is visible
            positions = list(range(positions[0], positions[0] + len(siblings)))
        for sibling, position in zip(siblings, positions, strict=True):
            sibling.position = position
            session.add(sibling)
        audit.record(
            session,
            user.email,
            "bulletin.item.move",
            "bulletin",
            bulletin_id,
            {"item": item_id, "direction": direction},
        )
        _touch(session, bulletin)
    return see_other(f"/admin/bulletins/{bulletin_id}#item-{item_id}")


@router.post("/{bulletin_id}/items/{item_id}/delete")
def delete_item(
    request: Request, user: StaffUser, session: SessionDep, bulletin_id: int, item_id: int
) -> Response:
    bulletin = get_bulletin_or_404(session, bulletin_id)
    item = _item(session, bulletin_id, item_id)
    if not _editable(request, bulletin):
        return see_other(f"/admin/bulletins/{bulletin_id}")
    audit.record(
        session,
        user.email,
        "bulletin.item.delete",
        "bulletin",
        bulletin_id,
        {"item": item_id, "body": item.body[:200]},
    )
    session.delete(item)
    _touch(session, bulletin)
    flash(request, "Item deleted.")
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
        if action in {"ready", "schedule"}:
            has_items = session.exec(select(Item.id).where(Item.bulletin_id == bulletin_id).limit(1)).first()
            if has_items is None:
                raise NewsletterError("a bulletin without items cannot be sent")
        if action == "ready":
            change_status(session, bulletin, B.READY, actor=user.email)
            session.commit()
            plan = slot_plan(session, settings, bulletin_id)
            message = f"Ready: it goes out {local_time(plan.slot_at, settings)} (the next slot of the weekly schedule)."
            if plan.ahead:
                flash(request, f"Warning: {plan.warning(bulletin_id, settings)}.", "error")
        elif action == "draft":
            change_status(session, bulletin, B.DRAFT, actor=user.email)
            message = "Back to draft."
        elif action == "schedule":
            when = parse_send_at(send_at, settings)
            if when < utcnow() - SCHEDULE_SLACK:
                raise NewsletterError("that time has passed; choose a time in the future")
            lifecycle.schedule(session, bulletin_id, when, actor=user.email)
            message = f"Scheduled for {when.astimezone(settings.tz).strftime('%a %d %b %Y, %H:%M %Z')}."
        elif action == "unschedule":
            change_status(
                session, bulletin, B(bulletin.status), actor=user.email, send_at=None, set_send_at=True
            )
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
