"""Subscribers, for volunteers and staff: find, edit (within the allowed transitions), import, export,
and one subscriber's history."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import Response, StreamingResponse
from sqlmodel import Session, col, select

from newsletter.audience import suppressions
from newsletter.audience.search import Filters, export_rows, search_page
from newsletter.audience.subscribers import import_subscribers, subscriber_regions, validate_name
from newsletter.audience.timezones import change_timezone
from newsletter.content.regions import RegionIndex
from newsletter.core import audit
from newsletter.core.errors import InvalidTransition
from newsletter.core.models import (
    AuditEntry,
    Bulletin,
    Delivery,
    DeliveryEvent,
    Region,
    Subscriber,
    Subscription,
    utcnow,
)
from newsletter.core.status import (
    SUBSCRIBER_TRANSITIONS,
    SubscriberStatus,
    SuppressionReason,
    check_subscriber,
)
from newsletter.core.zones import all_zones, check_zone
from newsletter.web.admin.pages import flash, render, see_other
from newsletter.web.auth import VolunteerUser
from newsletter.web.deps import EngineDep, SessionDep, SettingsDep

router = APIRouter(prefix="/subscribers")

MAX_UPLOAD_BYTES = 20 * 1024 * 1024


def _regions(session: Session) -> list[Region]:
    return list(session.exec(select(Region).order_by(col(Region.position), col(Region.id))).all())


def _clean_filters(session: Session, q: str, region: str, status: str) -> Filters:
    codes = {r.code for r in _regions(session)}
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
            "regions": _regions(session),
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
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        with engine.connect() as conn:
            for row in export_rows(conn, filters.region or None, filters.status or None):
                writer.writerow(row)
                if buffer.tell() > 64 * 1024:
                    yield buffer.getvalue()
                    buffer.seek(0)
                    buffer.truncate()
        yield buffer.getvalue()

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
    raw = await file.read(MAX_UPLOAD_BYTES + 1)
    filename = file.filename or "upload.csv"
    error = ""
    if len(raw) > MAX_UPLOAD_BYTES:
        error = f"The file is larger than {MAX_UPLOAD_BYTES // (1024 * 1024)} MB; split it or use the command line."
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
    report = import_subscribers(
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
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise HTTPException(404, "no such subscriber")
    return subscriber


def _history(session: Session, subscriber: Subscriber) -> dict[str, Any]:
    entries = session.exec(
        select(AuditEntry)
        .where(AuditEntry.entity_type == "subscriber", AuditEntry.entity_id == subscriber.id)
        .order_by(col(AuditEntry.at).desc(), col(AuditEntry.id).desc())
        .limit(200)
    ).all()
    deliveries = session.exec(
        select(Delivery, Bulletin)
        .join(Bulletin, col(Bulletin.id) == col(Delivery.bulletin_id))
        .where(Delivery.subscriber_id == subscriber.id)
        .order_by(col(Delivery.id).desc())
        .limit(100)
    ).all()
    ids = [d.id for d, _ in deliveries]
    events = (
        session.exec(
            select(DeliveryEvent)
            .where(col(DeliveryEvent.delivery_id).in_(ids))
            .order_by(col(DeliveryEvent.occurred_at).desc())
            .limit(500)
        ).all()
        if ids
        else []
    )
    return {
        "entries": [(e, _changes(e.changes)) for e in entries],
        "deliveries": deliveries,
        "events": events,
        "bulletin_of": {d.id: b for d, b in deliveries},
    }


def _changes(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {"?": raw}
    return value if isinstance(value, dict) else {"?": value}


def _detail(
    request: Request, session: Session, subscriber: Subscriber, status_code: int = 200, error: str = ""
) -> Response:
    assert subscriber.id is not None
    current = subscriber_regions(session, [subscriber.id])[subscriber.id]
    allowed = [subscriber.status, *sorted(SUBSCRIBER_TRANSITIONS[SubscriberStatus(subscriber.status)])]
    context = {
        "subscriber": subscriber,
        "regions": _regions(session),
        "current_regions": current,
        "allowed_statuses": allowed,
        "suppression": suppressions.find(session, subscriber.email),
        "zones": sorted(all_zones()),
        "error": error,
        **_history(session, subscriber),
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
    timezone: Annotated[str, Form()] = "",
) -> Response:
    """Change name, regions, time zone and status; a status the lifecycle forbids or a zone `zoneinfo`
    does not know is refused and nothing changes. An empty zone leaves it as it is."""
    subscriber = _get(session, subscriber_id)
    assert subscriber.id is not None
    try:
        new_name = validate_name(name)
    except ValueError as exc:
        return _detail(request, session, subscriber, 400, str(exc))
    new_status = status or subscriber.status
    try:
        SubscriberStatus(new_status)
        check_subscriber(subscriber.status, new_status)
    except (ValueError, InvalidTransition) as exc:
        return _detail(request, session, subscriber, 400, f"Status not changed: {exc}.")
    try:
        zone = check_zone(timezone) if timezone.strip() else None
    except ValueError as exc:
        return _detail(request, session, subscriber, 400, f"Time zone not changed: {exc}.")
    all_regions = {r.code: r for r in _regions(session)}
    wanted = [code for code in all_regions if code in set(regions or [])]
    before_regions = subscriber_regions(session, [subscriber.id])[subscriber.id]
    changes: dict[str, Any] = {}
    now = utcnow()
    if new_name != subscriber.name:
        changes["name"] = [subscriber.name, new_name]
        subscriber.name = new_name
    if wanted != before_regions:
        changes["regions"] = [";".join(before_regions), ";".join(wanted)]
        for sub in session.exec(
            select(Subscription).where(Subscription.subscriber_id == subscriber.id)
        ).all():
            session.delete(sub)
        session.flush()
        for code in wanted:
            region_id = all_regions[code].id
            assert region_id is not None
            session.add(Subscription(subscriber_id=subscriber.id, region_id=region_id))
    if zone is not None and change_timezone(session, subscriber, zone, actor=user.email, now=now):
        flash(request, f"Time zone set to {zone}; bulletins not yet due move to its local time.", "info")
    old_status = subscriber.status
    if new_status != old_status:
        if new_status == SubscriberStatus.UNSUBSCRIBED:
            suppressions.unsubscribe(session, subscriber, actor=user.email, how="admin", now=now)
        else:
            changes["status"] = [old_status, new_status]
            subscriber.status = new_status
            if new_status == SubscriberStatus.ACTIVE and subscriber.confirmed_at is None:
                subscriber.confirmed_at = now
            reason = {
                SubscriberStatus.BOUNCED: SuppressionReason.BOUNCE,
                SubscriberStatus.COMPLAINED: SuppressionReason.COMPLAINT,
            }.get(SubscriberStatus(new_status))
            if reason is not None:
                suppressions.add_many(session, [(subscriber.email, reason, f"set by {user.email}")])
    if changes:
        subscriber.updated_at = now
        session.add(subscriber)
        audit.record(session, user.email, "subscriber.update", "subscriber", subscriber.id, changes)
    session.commit()
    if changes or new_status != old_status:
        flash(request, "Saved.")
    else:
        flash(request, "Nothing to change.", "info")
    return see_other(f"/admin/subscribers/{subscriber.id}")
