"""Bulletins, for staff: list, create, import from the text format, edit while editable (title, subject,
verse, items per region with kind and Markdown, reorder, delete), and move through the lifecycle:
mark ready, schedule (`send_at` entered and shown in `TIMEZONE`), pause, resume, cancel."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import Response
from sqlmodel import Session

from newsletter.content import items, queries
from newsletter.content.bulletins import (
    duplicate_bulletin,
    get_bulletin,
    list_bulletins,
    parse_bulletin,
    store_bulletin,
)
from newsletter.content.types import BulletinContent
from newsletter.core import zones
from newsletter.core.errors import ImportFailed, NewsletterError, NotFound
from newsletter.core.models import Bulletin, Item, Region, utcnow
from newsletter.core.status import EDITABLE_BULLETIN, BulletinStatus, ItemKind
from newsletter.web.admin.pages import flash, flash_form, render, see_other
from newsletter.web.auth import StaffUser
from newsletter.web.deps import SessionDep, SettingsDep
from newsletter.web.form_errors import FormErrors

router = APIRouter(prefix="/bulletins")

B = BulletinStatus
MAX_TEXT_BYTES = 512 * 1024


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


def _import_refused(request: Request, field: str, text: str, problems: list[str]) -> Response:
    """The import form again with what was pasted, the problems listed and the field marked."""
    if len(problems) == 1:
        message = f"Nothing was stored: {problems[0]}"
    else:
        message = f"Nothing was stored: {len(problems)} problems, listed under the field."
    context = {"text": text, "problems": problems, "form_errors": FormErrors({field: message})}
    return render(request, "bulletin_import.html", context, status_code=400)


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
            return _import_refused(request, "file", "", [f"{source} is not UTF-8 text; save it as UTF-8."])
    try:
        content = parse_bulletin(text, settings, source=source)
        bulletin = store_bulletin(session, content, actor=user.email)
    except ImportFailed as exc:
        session.rollback()
        return _import_refused(request, "text", text, [str(p) for p in exc.problems])
    except NewsletterError as exc:
        session.rollback()
        return _import_refused(request, "text", text, [str(exc)])
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
            "local_window": zones.window(bulletin.local_send_at),
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
    request: Request,
    session: Session,
    bulletin_id: int,
    edit: Callable[[], object],
    done: str,
    field: str = "",
    typed: dict[str, str] | None = None,
) -> bool:
    """Run one edit service: commit and say `done` (when it changed anything), or roll back and say why
    not, on the form's `field` (with the small values in `typed`) when there is one; False then, so that
    the redirect carries no #fragment (it would take focus from the error summary). A bulletin or item
    that does not exist is a 404."""
    try:
        changed = edit()
    except NotFound as exc:
        session.rollback()
        raise HTTPException(404, str(exc)) from exc
    except NewsletterError as exc:
        session.rollback()
        if not field:
            flash(request, f"Not changed: {exc}.", "error")
            return True
        flash_form(request, FormErrors({field: f"Not saved: {exc}."}), typed or {})
        return False
    session.commit()
    if changed is not False:
        flash(request, done)
    return True


def _editor_form(form: Any) -> tuple[items.HeaderEdit, list[items.ItemEdit], items.ItemEdit]:
    """The editor's one form as edits: the header, each item (`body-<id>`…), the new item."""

    def text(name: str) -> str:
        value = form.get(name, "")
        return value if isinstance(value, str) else ""

    header = items.HeaderEdit(
        text("title"), text("subject"), text("scripture_text"), text("scripture_reference"), text("intro")
    )
    edits = [
        items.ItemEdit(int(i), text(f"body-{i}"), text(f"kind-{i}") or ItemKind.PRAY, text(f"region-{i}"))
        for i in form.getlist("item")
        if isinstance(i, str) and i.isdigit()
    ]
    new = items.ItemEdit(0, text("new_body"), text("new_kind") or ItemKind.PRAY, text("new_region"))
    return header, edits, new


@router.post("/{bulletin_id}/edit")
async def save_editor(request: Request, user: StaffUser, session: SessionDep, bulletin_id: int) -> Response:
    """The editor's single form: every field saved together, then the button's own step (move an item,
    or ask before deleting one). Works without JavaScript: each button is a submit button of the form."""
    form = await request.form()
    header, edits, new = _editor_form(form)
    op = form.get("op", "save")
    op = op if isinstance(op, str) else "save"
    action, _, target = op.partition(":")
    saved: list[bool] = []

    def save() -> bool:
        saved.append(bool(items.save_editor(session, bulletin_id, header, edits, new, actor=user.email)))
        if action in ("up", "down") and target.isdigit():
            way: items.Direction = "down" if action == "down" else "up"
            items.move_item(session, bulletin_id, int(target), way, actor=user.email)
        return True

    _edited(request, session, bulletin_id, save, "Saved.")
    if action == "delete" and target.isdigit() and saved:
        item = items.find_item(session, bulletin_id, int(target))
        return confirm_page(
            request,
            "Delete this item?",
            f"/admin/bulletins/{bulletin_id}/items/{target}/delete",
            f"/admin/bulletins/{bulletin_id}#item-{target}",
            quote=item.body,
            detail="Your other changes are saved. The item is removed from the bulletin for good.",
            confirm_label="Delete the item",
            back_label="Keep it",
        )
    anchor = f"#item-{target}" if target.isdigit() else ""
    return see_other(f"/admin/bulletins/{bulletin_id}{anchor}")


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

    typed = {"region": region, "kind": kind}
    field = "" if body.strip() else "new_body"  # an empty text is the form's problem; others are banners
    if not _edited(request, session, bulletin_id, add, "Item added.", field=field, typed=typed):
        return see_other(f"/admin/bulletins/{bulletin_id}")
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

    field = "" if body.strip() else f"body_{item_id}"
    if not _edited(request, session, bulletin_id, edit, "Item saved.", field=field):
        return see_other(f"/admin/bulletins/{bulletin_id}")
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


def confirm_page(
    request: Request, question: str, action_url: str, back_url: str, **extra: object
) -> Response:
    """The step between a destructive button and its effect: the same form again, with `confirmed=yes`.
    Works without JavaScript; nothing has changed until the second button is pressed."""
    context: dict[str, object] = {
        "question": question,
        "action_url": action_url,
        "back_url": back_url,
        "hidden_fields": {},
        "detail": "",
        "quote": "",
        "confirm_label": "Yes",
        "back_label": "No, go back",
    }
    context.update(extra)
    return render(request, "confirm.html", context)


@router.post("/{bulletin_id}/items/{item_id}/delete")
def delete_item(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    bulletin_id: int,
    item_id: int,
    confirmed: Annotated[str, Form()] = "",
) -> Response:
    if confirmed != "yes":
        try:
            item = items.find_item(session, bulletin_id, item_id)
        except NotFound as exc:
            raise HTTPException(404, "no such item") from exc
        return confirm_page(
            request,
            "Delete this item?",
            f"/admin/bulletins/{bulletin_id}/items/{item_id}/delete",
            f"/admin/bulletins/{bulletin_id}#item-{item_id}",
            quote=item.body,
            detail="It is removed from the bulletin for good.",
            confirm_label="Delete the item",
            back_label="Keep it",
        )
    _edited(
        request,
        session,
        bulletin_id,
        lambda: items.delete_item(session, bulletin_id, item_id, actor=user.email),
        "Item deleted.",
    )
    return see_other(f"/admin/bulletins/{bulletin_id}")


@router.post("/{bulletin_id}/duplicate")
def duplicate(request: Request, user: StaffUser, session: SessionDep, bulletin_id: int) -> Response:
    """A new draft with this bulletin's heading, verse and items (listmonk's Clone, Mailchimp's Replicate)."""
    get_bulletin_or_404(session, bulletin_id)
    copy = duplicate_bulletin(session, bulletin_id, actor=user.email)
    session.commit()
    flash(request, f"This is a new draft copied from bulletin {bulletin_id}: edit it and mark it ready.")
    return see_other(f"/admin/bulletins/{copy.id}")
