"""Suppressions, for staff: addresses never to be mailed again.

    GET  /admin/suppressions?q=&reason=&before=    list and search (address prefix), newest first
    POST /admin/suppressions                       add one, with a reason and a note
    POST /admin/suppressions/{id}/remove           lift one (an erased address stays suppressed)

Bounces and complaints show what the email service said and when (the stored webhook event).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import Response

from newsletter.audience import suppressions
from newsletter.audience.subscribers import normalize_email
from newsletter.core.errors import NewsletterError
from newsletter.core.status import SuppressionReason
from newsletter.web.admin.pages import flash, render, see_other
from newsletter.web.auth import StaffUser
from newsletter.web.deps import SessionDep

router = APIRouter(prefix="/suppressions")

PAGE_SIZE = 50
ADDABLE = (
    SuppressionReason.MANUAL,
    SuppressionReason.BOUNCE,
    SuppressionReason.COMPLAINT,
    SuppressionReason.UNSUBSCRIBE,
)
"""Reasons staff may give (`erased` is the erasure's own, never typed in)."""


@router.get("")
def suppressions_page(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    q: str = "",
    reason: str = "",
    before: int | None = None,
) -> Response:
    known = {r.value for r in SuppressionReason}
    problem = f"Unknown reason {reason!r}." if reason and reason not in known else ""
    page = suppressions.search(
        session, q[:320], reason=reason if reason in known else None, before=before, limit=PAGE_SIZE
    )
    return render(
        request,
        "suppressions.html",
        {
            "page": page,
            "q": q,
            "reason": reason,
            "reasons": sorted(known),
            "addable": [r.value for r in ADDABLE],
            "problem": problem,
        },
        status_code=400 if problem else 200,
    )


@router.post("")
def add_suppression(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    email: Annotated[str, Form()] = "",
    reason: Annotated[str, Form()] = SuppressionReason.MANUAL,
    note: Annotated[str, Form()] = "",
) -> Response:
    try:
        address = normalize_email(email)
    except ValueError:
        flash(request, f"Not added: {email.strip()[:320]!r} is not a valid email address.", "error")
        return see_other("/admin/suppressions")
    if reason not in {r.value for r in ADDABLE}:
        flash(request, f"Not added: choose a reason ({', '.join(r.value for r in ADDABLE)}).", "error")
        return see_other("/admin/suppressions")
    added = suppressions.add(
        session, address, SuppressionReason(reason), note=note.strip()[:500], actor=user.email
    )
    session.commit()
    if added:
        flash(request, f"{address} is suppressed ({reason}): no bulletin will be sent to it.")
    else:
        flash(request, f"{address} was already suppressed for as strong a reason; that reason stays.", "info")
    return see_other("/admin/suppressions?q=" + address)


@router.post("/{suppression_id}/remove")
def remove_suppression(
    request: Request, user: StaffUser, session: SessionDep, suppression_id: int
) -> Response:
    try:
        lifted = suppressions.remove_by_id(session, suppression_id, actor=user.email)
    except NewsletterError as exc:
        session.rollback()
        flash(request, f"Not removed: {exc}.", "error")
        return see_other("/admin/suppressions")
    session.commit()
    flash(
        request,
        f"Suppression of {lifted.email} ({lifted.reason}) removed. An unsubscribed person stays unsubscribed "
        "until they confirm again.",
    )
    return see_other("/admin/suppressions")
