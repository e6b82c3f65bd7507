"""Preview and test send, for staff.

The preview shows the exact email a region mix receives (subject, HTML in a sandboxed iframe at phone or
desktop width, plain text), rendered by the same `Renderer` as the send. The preview matrix lists every
variant the bulletin's real subscribers will get, with how many get it (`sending.summary.variant_counts`, the
planning rule's own answer), each a click from its preview.

A test send goes to the logged-in user or typed addresses, as any variant or all of them, with "[TEST]"
in the subject and a banner in the body. It is recorded as a `TestSend`, never as a delivery.
"""

from __future__ import annotations

import re
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import Response
from sqlmodel import Session

from newsletter.audience.subscribers import normalize_email
from newsletter.content.bulletins import load_content
from newsletter.content.render import Renderer, personalize
from newsletter.content.types import BulletinContent, Recipient
from newsletter.core import audit
from newsletter.core.config import Settings
from newsletter.core.models import TestSend, User
from newsletter.esp import EspError, backend_for
from newsletter.mail.links import Links
from newsletter.sending.summary import no_section_count, variant_counts
from newsletter.web.admin.bulletins import get_bulletin_or_404
from newsletter.web.admin.pages import flash, render, see_other
from newsletter.web.auth import StaffUser
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter(prefix="/bulletins")

MAX_TEST_RECIPIENTS = 20
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


def _names(settings: Settings, key: str) -> str:
    names = dict(settings.regions)
    return " + ".join(names.get(code, code) for code in key.split(",") if code)


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
    nobody = no_section_count(session, bulletin_id)
    matrix = [
        {
            "key": key,
            "names": _names(settings, key),
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
            "no_section": nobody,
            "no_section_policy": settings.NO_SECTION,
            "chosen_url": lambda w: preview_url(bulletin_id, chosen, w),
            "default_to": default_to,
        },
    )


def parse_addresses(text: str) -> list[str]:
    """Addresses separated by commas, semicolons, spaces or lines; ValueError names the first bad one."""
    result: list[str] = []
    for part in re.split(r"[\s,;]+", text):
        if not part:
            continue
        try:
            address = normalize_email(part)
        except ValueError as exc:
            raise ValueError(f"{part!r} is not an email address") from exc
        if address not in result:
            result.append(address)
    return result


def _test_variants(session: Session, content: BulletinContent, which: str) -> list[str]:
    if which == "all":
        keys = list(variant_counts(session, content.id or 0)) if content.id else []
        return keys or [",".join(content.region_codes)]
    wanted = set(which.split(","))
    return [",".join(c for c in content.region_codes if c in wanted)]


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
    content = load_content(session, bulletin_id)
    which = variant.strip() or ",".join(content.region_codes)
    back = see_other(
        preview_url(bulletin_id, which.split(",") if which != "all" else content.region_codes, width)
    )
    try:
        addresses = parse_addresses(to) or [user.email]
    except ValueError as exc:
        flash(request, f"Not sent: {exc}.", "error")
        return back
    if len(addresses) > MAX_TEST_RECIPIENTS:
        flash(request, f"Not sent: a test goes to at most {MAX_TEST_RECIPIENTS} addresses.", "error")
        return back
    if not content.sections:
        flash(request, "Not sent: this bulletin has no items yet.", "error")
        return back
    keys = [k for k in _test_variants(session, content, which) if k]
    if not keys:
        flash(request, "Not sent: that region mix has no section in this bulletin.", "error")
        return back
    sent, failed = send_tests(session, settings, renderer_for(request), content, keys, addresses, user)
    audit.record(
        session,
        user.email,
        "bulletin.test_send",
        "bulletin",
        bulletin_id,
        {"variants": keys, "to": addresses, "failed": failed},
    )
    session.commit()
    if failed:
        flash(request, f"Test send problems: {'; '.join(failed)}", "error")
    if sent:
        flash(request, f"Sent {sent} test message(s) ([TEST] in the subject) to {', '.join(addresses)}.")
    return back


def send_tests(
    session: Session,
    settings: Settings,
    renderer: Renderer,
    content: BulletinContent,
    keys: list[str],
    addresses: list[str],
    user: User,
) -> tuple[int, list[str]]:
    """Send each variant in `keys` to `addresses` as a test; one `TestSend` per variant. Returns
    (messages sent, problems)."""
    backend = backend_for(settings)
    sent = 0
    problems: list[str] = []
    try:
        for key in keys:
            variant = renderer.variant(content, key, test=True)
            recipients = [
                Recipient(email=a, name="", subscriber_id=None, bulletin_id=content.id) for a in addresses
            ]
            error = ""
            try:
                results = backend.send(variant, recipients)
            except EspError as exc:
                error = str(exc) or type(exc).__name__
            else:
                refused = [f"{r.recipient.email}: {r.error or 'refused'}" for r in results if not r.accepted]
                sent += len(results) - len(refused)
                error = "; ".join(refused)
            if error:
                problems.append(f"{_names(settings, key)}: {error}")
            assert content.id is not None
            session.add(
                TestSend(
                    bulletin_id=content.id,
                    user_id=user.id,
                    variant=key,
                    recipients=", ".join(addresses),
                    error=error,
                )
            )
    finally:
        backend.close()
    return sent, problems
