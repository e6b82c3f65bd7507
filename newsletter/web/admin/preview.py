"""Preview and test send, for staff.

The preview shows the exact email a region mix receives (subject, HTML in a sandboxed iframe at phone or
desktop width, plain text), rendered by the same `Renderer` as the send. The preview matrix lists every
variant the bulletin's real subscribers will get, with how many get it (`sending.summary.variant_counts`, the
planning rule's own answer), each a click from its preview.

A test send goes to the logged-in user or typed addresses, as any variant or all of them
(`newsletter.sending.test_sends`, shared with `newsletter bulletins test-send`).
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response

from newsletter.content.bulletins import load_content
from newsletter.content.render import Renderer, personalize
from newsletter.content.types import Recipient
from newsletter.core import zones
from newsletter.core.errors import NewsletterError
from newsletter.mail.links import Links
from newsletter.sending.summary import no_section_count, variant_counts
from newsletter.sending.test_sends import ALL_VARIANTS, parse_addresses, send_test, variant_names
from newsletter.web.admin.bulletins import get_bulletin_or_404
from newsletter.web.admin.pages import flash, flash_form, render, see_other
from newsletter.web.auth import StaffUser
from newsletter.web.deps import SessionDep, SettingsDep
from newsletter.web.form_errors import FormErrors

router = APIRouter(prefix="/bulletins")

WIDTHS = {"phone": 375, "desktop": 800}


def renderer_for(request: Request) -> Renderer:
    """One renderer per app, so previews share its cache of rendered variants."""
    renderer = getattr(request.app.state, "admin_renderer", None)
    if renderer is None:
        renderer = Renderer(request.app.state.settings)
        request.app.state.admin_renderer = renderer
    return renderer


def preview_url(bulletin_id: int, codes: list[str] | tuple[str, ...], width: str = "desktop") -> str:
    query = urlencode([("regions", c) for c in codes] + [("width", width)])
    return f"/admin/bulletins/{bulletin_id}/preview?{query}"


@router.get("/{bulletin_id}/preview")
def preview(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    settings: SettingsDep,
    bulletin_id: int,
    regions: Annotated[list[str] | None, Query()] = None,
    width: str = "desktop",
) -> Response:
    bulletin = get_bulletin_or_404(session, bulletin_id)
    content = load_content(session, bulletin_id)
    width = width if width in WIDTHS else "desktop"
    chosen = [c for c in content.region_codes if c in set(regions)] if regions else list(content.region_codes)
    rendered = None
    error = ""
    if not content.sections:
        error = "This bulletin has no items yet."
    elif not chosen:
        error = "Choose at least one region that has items."
    else:
        variant = renderer_for(request).variant(content, chosen)
        recipient = Recipient(email=user.email, name="", subscriber_id=None, bulletin_id=bulletin_id)
        html, text = personalize(variant, Links(settings).values(recipient))
        rendered = {
            "subject": variant.subject,
            "html": html,
            "text": text,
            "key": variant.key,
            "size": len(html.encode("utf-8")),
        }
    counts = variant_counts(session, bulletin_id, no_section=settings.NO_SECTION)
    matrix = [
        {
            "key": key,
            "names": variant_names(settings, key),
            "count": count,
            "url": preview_url(bulletin_id, key.split(","), width),
            "current": rendered is not None and key == rendered["key"],
        }
        for key, count in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]
    default_to = ", ".join(settings.staff_test_recipients) or user.email
    return render(
        request,
        "preview.html",
        {
            "bulletin": bulletin,
            "section_regions": [(s.region_code, s.region_name) for s in content.sections],
            "chosen": chosen,
            "width": width,
            "width_px": WIDTHS[width],
            "widths": list(WIDTHS),
            "rendered": rendered,
            "error": error,
            "matrix": matrix,
            "matrix_total": sum(counts.values()),
            "no_section": (no_section_count(session, bulletin_id), settings.NO_SECTION),
            "chosen_url": lambda w: preview_url(bulletin_id, chosen, w),
            "default_to": default_to,
            "local_window": zones.window(bulletin.local_send_at),
        },
    )


@router.post("/{bulletin_id}/test-send")
def test_send(
    request: Request,
    user: StaffUser,
    session: SessionDep,
    settings: SettingsDep,
    bulletin_id: int,
    to: Annotated[str, Form()] = "",
    variant: Annotated[str, Form()] = "",
    width: Annotated[str, Form()] = "desktop",
) -> Response:
    get_bulletin_or_404(session, bulletin_id)
    which = variant.strip()
    back = see_other(
        preview_url(bulletin_id, which.split(",") if which not in {"", ALL_VARIANTS} else [], width)
    )
    try:
        parse_addresses(to)
    except NewsletterError as exc:  # a field problem: shown on the field, with what was typed
        flash_form(request, FormErrors({"to": f"Not sent: {exc}. Correct it and send again."}), {"to": to})
        return back
    try:
        report = send_test(
            session,
            settings,
            renderer_for(request),
            bulletin_id,
            to=to,
            variant=which,
            fallback_to=[user.email],
            user_id=user.id,
            actor=user.email,
        )
    except NewsletterError as exc:
        session.rollback()
        flash(request, f"Not sent: {exc}.", "error")
        return back
    session.commit()
    if report.problems:
        flash(request, f"Test send problems: {'; '.join(report.problems)}", "error")
    if report.sent:
        sent_to = ", ".join(report.addresses)
        flash(request, f"Sent {report.sent} test message(s) ([TEST] in the subject) to {sent_to}.")
    return back
