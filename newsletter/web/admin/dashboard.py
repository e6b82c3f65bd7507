"""The delivery dashboard of one bulletin, for staff: counts per delivery status, progress and rate
while sending (a Refresh link; automatic refresh only on request, `?live=1`, with a link that stops it:
WCAG 2.2.1 forbids a page that reloads under the reader, and the admin's CSP forbids scripts), failures with their reasons, bounces and complaints, and
opens and clicks from the ESP's events."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlmodel import Session, col, func, select

from newsletter.core.models import Bulletin, Delivery, DeliveryEvent, Subscriber, TestSend, utcnow
from newsletter.core.status import BulletinStatus, DeliveryStatus
from newsletter.sending import dispatcher
from newsletter.sending.dispatcher import SendSummary
from newsletter.web.admin.bulletins import get_bulletin_or_404
from newsletter.web.admin.pages import render
from newsletter.web.auth import StaffUser
from newsletter.web.deps import SessionDep

router = APIRouter(prefix="/bulletins")

REFRESH_SECONDS = 5
PROBLEM_STATUSES = (
    DeliveryStatus.FAILED,
    DeliveryStatus.BOUNCED,
    DeliveryStatus.DROPPED,
    DeliveryStatus.COMPLAINED,
    DeliveryStatus.DEFERRED,
)
RATE_WINDOW = timedelta(seconds=60)


def delivery_counts(summary: SendSummary) -> dict[str, int]:
    """Deliveries per status from the ledger, every status listed (zeros too) so the table never jumps."""
    counts = {s.value: 0 for s in DeliveryStatus}
    counts.update(summary.counts)
    return counts


def event_counts(session: Session, bulletin_id: int) -> dict[str, dict[str, int]]:
    """ESP events of a bulletin's deliveries per event name: how many, and for how many recipients."""
    rows = session.exec(
        select(DeliveryEvent.event, func.count(), func.count(sa.distinct(col(DeliveryEvent.delivery_id))))
        .join(Delivery, col(Delivery.id) == col(DeliveryEvent.delivery_id))
        .where(Delivery.bulletin_id == bulletin_id)
        .group_by(col(DeliveryEvent.event))
    ).all()
    return {event: {"events": int(n), "recipients": int(u)} for event, n, u in rows}


def _progress(session: Session, bulletin: Bulletin, summary: SendSummary) -> dict[str, Any]:
    now = utcnow()
    recent = session.exec(
        select(func.count())
        .select_from(Delivery)
        .where(Delivery.bulletin_id == bulletin.id, col(Delivery.sent_at) >= now - RATE_WINDOW)
    ).one()
    recent_rate = recent / RATE_WINDOW.total_seconds()
    total = summary.total
    return {
        "total": total,
        "done": summary.done,
        "sent": summary.sent,
        "open": summary.open,
        "percent": round(100 * summary.done / total, 1) if total else 0.0,
        "recent_rate": recent_rate,
        "average_rate": summary.rate or 0.0,
        "duration": summary.duration,
        "eta": summary.open / recent_rate if recent and summary.open else None,
    }


@router.get("/{bulletin_id}/dashboard")
def dashboard(
    request: Request, user: StaffUser, session: SessionDep, bulletin_id: int, live: str = ""
) -> Response:
    bulletin = get_bulletin_or_404(session, bulletin_id)
    summary = dispatcher.summary(session, bulletin_id)
    problems = session.exec(
        select(Delivery, Subscriber.email)
        .outerjoin(Subscriber, col(Subscriber.id) == col(Delivery.subscriber_id))
        .where(Delivery.bulletin_id == bulletin_id, col(Delivery.status).in_(PROBLEM_STATUSES))
        .order_by(col(Delivery.updated_at).desc(), col(Delivery.id).desc())
        .limit(100)
    ).all()
    tests = session.exec(
        select(TestSend)
        .where(TestSend.bulletin_id == bulletin_id)
        .order_by(col(TestSend.id).desc())
        .limit(20)
    ).all()
    is_live = bulletin.status == BulletinStatus.SENDING or (
        bulletin.status == BulletinStatus.READY
        and bulletin.send_at is not None
        and bulletin.send_at - utcnow() < timedelta(minutes=10)
    )
    return render(
        request,
        "dashboard.html",
        {
            "bulletin": bulletin,
            "counts": delivery_counts(summary),
            "errors": summary.errors,
            "progress": _progress(session, bulletin, summary),
            "events": event_counts(session, bulletin_id),
            "problems": problems,
            "tests": tests,
            "live": is_live,
            "refresh_every": REFRESH_SECONDS,
            "refresh": REFRESH_SECONDS if is_live and live == "1" else None,
        },
    )
