"""Subscribers, for volunteers and staff: find, edit (within the allowed transitions), import, export,
and one subscriber's history."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response, StreamingResponse
from sqlmodel import Session

from newsletter.audience import staff, suppressions
from newsletter.audience.search import Filters, export_rows, search_page
from newsletter.audience.subscribers import export_csv, import_subscribers
from newsletter.content.queries import regions_in_order
from newsletter.content.regions import RegionIndex
from newsletter.core.errors import NewsletterError, NotFound
from newsletter.core.models import Subscriber, utcnow
from newsletter.core.status import SubscriberStatus
from newsletter.web.admin.pages import flash, render, see_other
from newsletter.web.auth import VolunteerUser
from newsletter.web.deps import EngineDep, SessionDep, SettingsDep

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


@router.post("/import")
async def import_upload(
    request: Request,
    user: VolunteerUser,
    session: SessionDep,
    settings: SettingsDep,
    file: Annotated[UploadFile, File()],
    dry_run: Annotated[bool, Form()] = False,
) -> Response:
    cap = settings.MAX_UPLOAD_BYTES
    raw = await file.read(cap + 1)
    filename = file.filename or "upload.csv"
    error = ""
    if len(raw) > cap:
        error = f"The file is larger than {cap // (1024 * 1024)} MB; split it or use the command line."
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            error = f"Line {line} is not valid UTF-8: save the file as “CSV UTF-8” and upload it again."
    if error:
        return render(
            request,
            "subscribers_import.html",
            {"report": None, "filename": filename, "error": error},
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
    return render(request, "subscribers_import.html", {"report": report, "filename": filename})


def _get(session: Session, subscriber_id: int) -> Subscriber:
    try:
        return staff.get_subscriber(session, subscriber_id)
    except NotFound as exc:
        raise HTTPException(404, "no such subscriber") from exc


def _detail(
    request: Request, session: Session, subscriber: Subscriber, status_code: int = 200, error: str = ""
) -> Response:
    history = staff.history(session, subscriber)
    context = {
        "subscriber": subscriber,
        "regions": regions_in_order(session),
        "current_regions": staff.regions_of(session, subscriber),
        "allowed_statuses": staff.allowed_statuses(subscriber),
        "suppression": suppressions.find(session, subscriber.email),
        "error": error,
        "entries": history.entries,
        "deliveries": history.deliveries,
        "events": history.events,
        "bulletin_of": history.bulletin_of,
    }
    return render(request, "subscriber.html", context, status_code=status_code)


@router.get("/{subscriber_id}")
def detail(request: Request, user: VolunteerUser, session: SessionDep, subscriber_id: int) -> Response:
    return _detail(request, session, _get(session, subscriber_id))


@router.post("/{subscriber_id}")
async def update(
    request: Request,
    user: VolunteerUser,
    session: SessionDep,
    subscriber_id: int,
    name: Annotated[str, Form()] = "",
    status: Annotated[str, Form()] = "",
    regions: Annotated[list[str] | None, Form()] = None,
) -> Response:
    """Change name, regions and status; a status the lifecycle forbids is refused and nothing changes."""
    subscriber = _get(session, subscriber_id)
    edit = staff.SubscriberEdit(name=name, status=status or None, regions=regions or [])
    try:
        changed = staff.update_subscriber(session, subscriber_id, edit, actor=user.email)
    except NewsletterError as exc:
        session.rollback()
        return _detail(request, session, subscriber, 400, f"Not saved: {exc}.")
    session.commit()
    if changed:
        flash(request, "Saved.")
    else:
        flash(request, "Nothing to change.", "info")
    return see_other(f"/admin/subscribers/{subscriber_id}")
