"""The delivery dashboard of one bulletin, for staff: counts per delivery status, progress and rate
while sending (a Refresh link; automatic refresh only on request, `?live=1`, with a link that stops it:
WCAG 2.2.1 forbids a page that reloads under the reader, and the admin's CSP forbids scripts), failures
with their reasons, bounces and complaints, and opens and clicks from the ESP's events. The figures come from `sending.summary.dashboard`."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from newsletter.core import zones
from newsletter.core.errors import NewsletterError
from newsletter.sending import lifecycle
from newsletter.sending.summary import dashboard as read_dashboard
from newsletter.web.admin.bulletins import get_bulletin_or_404
from newsletter.web.admin.pages import duration_text, flash, render, see_other
from newsletter.web.auth import StaffUser
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(prefix="/bulletins")

REFRESH_SECONDS = 5


@router.get("/{bulletin_id}/dashboard")
def dashboard(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    settings: SettingsDep,
    bulletin_id: int,
    live: str = "",
) -> Response:
    get_bulletin_or_404(session, bulletin_id)
    board = read_dashboard(session, bulletin_id, default_zone=settings.TIMEZONE)
    return render(
        request,
        "dashboard.html",
        {
            "bulletin": board.bulletin,
            "counts": board.counts,
            "errors": board.summary.errors,
            "progress": board.progress,
            "duration_text": duration_text(board.progress.duration),
            "events": board.events,
            "problems": board.problems,
            "tests": board.tests,
            "live": board.live,
            "refresh_every": REFRESH_SECONDS,
            "refresh": REFRESH_SECONDS if board.live and live == "1" else None,
            "zones": board.summary.zones,
            "local_window": zones.window(board.bulletin.local_send_at),
            "now": board.summary.as_of,
        },
    )


@router.post("/{bulletin_id}/retry-failed")
def retry_failed(request: Request, user: StaffUser, session: SessionDep, bulletin_id: int) -> Response:
    """Queue a sent bulletin's failed deliveries again (never an address the ESP refused); the scheduler
    sends them."""
    get_bulletin_or_404(session, bulletin_id)
    try:
        queued = lifecycle.retry_failed(session, bulletin_id, actor=user.email)
    except NewsletterError as exc:
        session.rollback()
        flash(request, f"Not changed: {exc}.", "error")
        return see_other(f"/admin/bulletins/{bulletin_id}/dashboard")
    session.commit()
    flash(
        request,
        f"{queued} failed deliveries queued again."
        if queued
        else "Nothing to retry: every failure was an address the email service refused.",
    )
    return see_other(f"/admin/bulletins/{bulletin_id}/dashboard")
