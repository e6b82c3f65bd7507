"""Subscribers, for volunteers and staff: find, edit (within the allowed transitions), import, export,
and one subscriber's history."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from sqlmodel import Session

from newsletter.audience import staff, staged_imports, suppressions
from newsletter.audience.search import Filters, export_rows, search_page
from newsletter.audience.subscribers import export_csv, import_subscribers
from newsletter.content.queries import regions_in_order
from newsletter.content.regions import RegionIndex
from newsletter.core.errors import InvalidTransition, NewsletterError, NotFound
from newsletter.core.models import Subscriber, utcnow
from newsletter.core.status import SubscriberStatus
from newsletter.core.zones import all_zones
from newsletter.web.admin.pages import flash, render, see_other
from newsletter.web.auth import VolunteerUser
from newsletter.web.deps import EngineDep, SessionDep, SettingsDep
from newsletter.web.form_errors import FormErrors

router = APIRouter(prefix="/subscribers")


def _clean_filters(session: Session, q: str, region: str, status: str) -> Filters:
    codes = {r.code for r in regions_in_order(session)}
    return Filters(
        q=q.strip()[:320],
        region=region if region in codes else "",
        status=status if status in {s.value for s in SubscriberStatus} else "",
    )


@router.get("")
def list_page(
    request: Request,
    user: VolunteerUser,
    session: SessionDep,
    q: str = "",
    region: str = "",
    status: str = "",
    after: str = "",
    mode: str = "",
) -> Response:
    filters = _clean_filters(session, q, region, status)
    page = search_page(session.connection(), filters, after or None, mode=mode)
    return render(
        request,
        "subscribers.html",
        {
            "filters": filters,
            "page": page,
            "regions": regions_in_order(session),
            "statuses": [s.value for s in SubscriberStatus],
            "first_page": not after,
        },
    )


@router.get("/export.csv")
def export(
    user: VolunteerUser, session: SessionDep, engine: EngineDep, region: str = "", status: str = ""
) -> StreamingResponse:
    filters = _clean_filters(session, "", region, status)
    session.commit()  # end this read before the export's own connection starts (SQLite has one writer)

    def lines() -> Iterator[str]:
        with engine.connect() as conn:
            yield from export_csv(export_rows(conn, filters.region or None, filters.status or None))

    stamp = utcnow().strftime("%Y%m%d-%H%M")
    return StreamingResponse(
        lines(),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="subscribers-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.get("/import")
def import_page(request: Request, user: VolunteerUser) -> Response:
    return render(request, "subscribers_import.html", {"report": None, "filename": ""})


async def _read_upload(file: UploadFile | None, cap: int) -> tuple[str, str, str]:
    """(filename, text, error) of an uploaded CSV, capped before it is read."""
    if file is None:
        return "", "", "Choose a CSV file to upload."
    raw = await file.read(cap + 1)
    filename = file.filename or "upload.csv"
    if len(raw) > cap:
        return (
            filename,
            "",
            f"The file is larger than {cap // (1024 * 1024)} MB; split it or use the command line.",
        )
    try:
        return filename, raw.decode("utf-8-sig"), ""
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return (
            filename,
            "",
            f"Line {line} is not valid UTF-8: save the file as “CSV UTF-8” and upload it again.",
        )


@router.post("/import")
async def import_upload(
    request: Request,
    user: VolunteerUser,
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile | None, File()] = None,
    dry_run: Annotated[bool, Form()] = False,
    staged: Annotated[str, Form()] = "",
) -> Response:
    """Import a CSV; a dry run keeps the checked file so that the real run needs no second upload."""
    if staged:
        try:
            filename, text = staged_imports.take(staged, user.email)
            error = ""
        except NewsletterError as exc:
            filename, text, error = "", "", f"{str(exc)[:1].upper()}{str(exc)[1:]}."
    else:
        filename, text, error = await _read_upload(file, settings.MAX_UPLOAD_BYTES)
    if error:
        return render(
            request,
            "subscribers_import.html",
            {"report": None, "filename": filename, "form_errors": FormErrors({"file": error})},
            status_code=400,
        )
    # Parsing and importing a big file is seconds of CPU: in the threadpool, not on the event loop.
    report = await run_in_threadpool(
        import_subscribers,
        session,
        text,
        RegionIndex.from_db(session, settings),
        dry_run=dry_run,
        source=f"upload:{filename}"[:40],
        actor=user.email,
    )
    if dry_run:
        session.rollback()
    else:
        session.commit()
    token = staged_imports.stage(text, filename, user.email) if dry_run and report.stored else ""
    context = {"report": report, "filename": filename, "staged": token}
    return render(request, "subscribers_import.html", context)


def _get(session: Session, subscriber_id: int) -> Subscriber:
    try:
        return staff.get_subscriber(session, subscriber_id)
    except NotFound as exc:
        raise HTTPException(404, "no such subscriber") from exc


def _detail(
    request: Request,
    session: Session,
    subscriber: Subscriber,
    status_code: int = 200,
    form_errors: FormErrors | None = None,
    typed: dict[str, Any] | None = None,
) -> Response:
    """The subscriber's page; after a refused edit, with the problems and what was typed (`typed`)."""
    history = staff.history(session, subscriber)
    typed = typed or {}
    context = {
        "subscriber": subscriber,
        "regions": regions_in_order(session),
        "current_regions": typed.get("regions", staff.regions_of(session, subscriber)),
        "allowed_statuses": staff.allowed_statuses(subscriber),
        "suppression": suppressions.find(session, subscriber.email),
        "form_errors": form_errors or FormErrors(),
        "name_value": typed.get("name", subscriber.name),
        "status_value": typed.get("status", subscriber.status),
        "timezone_value": typed.get("timezone", subscriber.timezone or ""),
        "zones": sorted(all_zones()),
        "entries": history.entries,
        "deliveries": history.deliveries,
        "events": history.events,
        "bulletin_of": history.bulletin_of,
    }
    return render(request, "subscriber.html", context, status_code=status_code)


@router.get("/{subscriber_id}")
def detail(request: Request, user: VolunteerUser, session: SessionDep, subscriber_id: int) -> Response:
    return _detail(request, session, _get(session, subscriber_id))


def _edit_errors(exc: NewsletterError) -> FormErrors:
    """A refused edit on the field it is about: the status (a move the lifecycle forbids), the regions
    (an unknown one, or none ticked), else the name."""
    if isinstance(exc, InvalidTransition):
        return FormErrors({"status": f"Choose another status: {exc}. Nothing was saved."})
    if isinstance(exc, NotFound | staff.NoRegions):
        return FormErrors({"regions": f"Choose the regions again: {exc}. Nothing was saved."})
    return FormErrors({"name": f"Check the name: {exc}. Nothing was saved."})


@router.post("/{subscriber_id}")
async def update(
    request: Request,
    user: VolunteerUser,
    session: SessionDep,
    subscriber_id: int,
    name: Annotated[str, Form()] = "",
    status: Annotated[str, Form()] = "",
    regions: Annotated[list[str] | None, Form()] = None,
    timezone: Annotated[str, Form()] = "",
) -> Response:
    """Change name, regions, time zone and status; a status the lifecycle forbids or a zone `zoneinfo`
    does not know is refused and nothing changes. An empty zone leaves it as it is."""
    subscriber = _get(session, subscriber_id)
    edit = staff.SubscriberEdit(
        name=name, status=status or None, regions=regions or [], timezone=timezone.strip() or None
    )
    try:
        changed = staff.update_subscriber(session, subscriber_id, edit, actor=user.email)
    except NewsletterError as exc:
        session.rollback()
        typed = {"name": name, "status": status or subscriber.status, "regions": regions or []}
        return _detail(request, session, subscriber, 400, _edit_errors(exc), typed)
    session.commit()
    if changed:
        flash(request, "Saved.")
    else:
        flash(request, "Nothing to change.", "info")
    return see_other(f"/admin/subscribers/{subscriber_id}")
