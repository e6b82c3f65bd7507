"""The supporters' pages: no account, everything starts from a form or a signed link in an email.

    GET  /subscribe                      the form (email, name, regions; a honeypot field)
    POST /subscribe                      double opt-in: a pending subscriber and a confirmation email
    GET  /subscribe/embed                the form as an HTML snippet for the charity's own site
    GET  /confirm/{token}                pending → active
    GET  /preferences/{token}            the preference centre
    POST /preferences/{token}            action=regions|pause|resume|unsubscribe|resubscribe|download|erase
    GET  /unsubscribe/{token}            a page with one button (mail scanners fetch links: GET changes nothing)
    POST /unsubscribe/{token}            RFC 8058 one-click: no cookie, no CSRF token, 200 without a redirect
    GET  /view/{bulletin_id}/{token}     the bulletin online, as the subscriber's variant

A forged, truncated, wrong-purpose or expired link gets a page saying so, with status 400 (404 when the
subscriber it names no longer exists), and changes nothing. The token in the URL is the credential, so
these forms carry no CSRF token: a cross-site POST would need the token, which only the subscriber has.
Pages holding a token are sent with `Referrer-Policy: no-referrer` and are never cached.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session, select

from newsletter.audience import optin, preferences, suppressions
from newsletter.audience.subscribers import normalize_email, validate_name
from newsletter.audience.timezones import change_timezone
from newsletter.content.bulletins import load_content
from newsletter.content.regions import RegionIndex
from newsletter.content.render import Renderer, personalize
from newsletter.content.types import Recipient
from newsletter.core.config import Settings
from newsletter.core.models import Bulletin, Delivery, Subscriber
from newsletter.core.status import BulletinStatus, SubscriberStatus
from newsletter.core.zones import all_zones, check_zone
from newsletter.mail.links import Links
from newsletter.mail.tokens import Purpose, TokenError, read_token
from newsletter.web.deps import SessionDep, SettingsDep, TemplatesDep

log = logging.getLogger(__name__)

router = APIRouter()

HONEYPOT_FIELD = "website"
"""Hidden from people (CSS and aria-hidden), filled in by form-filling bots."""

_TOKEN_PAGE_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
}
_VISIBLE_BULLETIN = frozenset({BulletinStatus.SENDING, BulletinStatus.SENT})


class _BadLink(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def get_renderer(request: Request) -> Renderer:
    """One Renderer per app (it caches rendered variants)."""
    state = request.app.state
    renderer = getattr(state, "renderer", None)
    if not isinstance(renderer, Renderer):
        renderer = Renderer(state.settings)
        state.renderer = renderer
    return renderer


def _page(
    request: Request,
    templates: Any,
    settings: Settings,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    token_page: bool = False,
) -> HTMLResponse:
    ctx = {"org_name": settings.ORG_NAME, **(context or {})}
    response: HTMLResponse = templates.TemplateResponse(request, f"public/{name}", ctx, status_code=status)
    if token_page:
        response.headers.update(_TOKEN_PAGE_HEADERS)
    return response


def _subscriber_for(session: Session, settings: Settings, token: str, purpose: Purpose) -> Subscriber:
    """The subscriber a link names, or _BadLink (400 for a bad token, 404 for an unknown subscriber)."""
    if purpose is Purpose.CONFIRM:
        max_age = timedelta(seconds=settings.CONFIRM_TTL)
    else:
        max_age = timedelta(days=settings.TOKEN_TTL_DAYS)
    try:
        subscriber_id = read_token(settings.secret_keys, token, purpose, max_age=max_age)
    except TokenError as exc:
        raise _BadLink(400, exc.reason) from exc
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        raise _BadLink(404, "unknown subscriber")
    return subscriber


def _bad_link(
    request: Request, templates: Any, settings: Settings, problem: _BadLink, purpose: Purpose
) -> HTMLResponse:
    return _page(
        request,
        templates,
        settings,
        "link_problem.html",
        {"reason": problem.reason, "purpose": str(purpose)},
        status=problem.status,
        token_page=True,
    )


def _date(value: datetime) -> str:
    return f"{value.day} {value:%B %Y}"


def _client_ip(request: Request) -> str:
    return request.client.host if request.client else "unknown"


# --- subscribe -----------------------------------------------------------------------------------
def _form_context(
    session: Session, settings: Settings, values: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    index = RegionIndex.from_db(session, settings)
    values = dict(values or {})
    values.setdefault("regions", list(index.codes))
    return {
        "regions": index.regions,
        "values": values,
        "action": settings.BASE_URL.rstrip("/") + "/subscribe",
        "honeypot": HONEYPOT_FIELD,
        "timezone_script": settings.BASE_URL.rstrip("/") + "/static/timezone.js",
        "errors": {},
    }


@router.get("/subscribe", response_class=HTMLResponse)
def subscribe_form(
    request: Request, session: SessionDep, settings: SettingsDep, templates: TemplatesDep
) -> Response:
    return _page(request, templates, settings, "subscribe.html", _form_context(session, settings))


@router.post("/subscribe", response_class=HTMLResponse)
def subscribe(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    templates: TemplatesDep,
    email: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    regions: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies the default
    website: Annotated[str, Form()] = "",
    timezone: Annotated[str, Form()] = "",
) -> Response:
    if website.strip():
        log.info("subscribe: honeypot filled in from %s; nothing stored", _client_ip(request))
        return _page(request, templates, settings, "check_inbox.html")
    index = RegionIndex.from_db(session, settings)
    errors: dict[str, str] = {}
    try:
        address = normalize_email(email)
    except ValueError:
        errors["email"] = "Please enter a valid email address, like name@example.org."
    try:
        clean = validate_name(name)
    except ValueError as exc:
        errors["name"] = f"Please check your name: {exc}."
    codes = index.order(c for c in regions if c in index.codes)
    if not codes:
        errors["regions"] = "Please choose at least one region."
    if errors:
        context = _form_context(session, settings, {"email": email, "name": name, "regions": list(codes)})
        return _page(
            request, templates, settings, "subscribe.html", {**context, "errors": errors}, status=400
        )

    result = optin.request_subscription(
        session,
        settings,
        address,
        clean,
        codes,
        client_ip=_client_ip(request),
        timezone=_zone_or_none(timezone),
    )
    session.commit()
    if result.outcome is optin.Outcome.TOO_MANY:
        return _page(request, templates, settings, "too_many.html", status=429)
    if result.outcome is optin.Outcome.SEND:
        assert result.recipient is not None
        if not optin.send_confirmation(settings, get_renderer(request), result.recipient):
            return _page(request, templates, settings, "send_failed.html", status=503)
    return _page(request, templates, settings, "check_inbox.html")


def _zone_or_none(raw: str) -> str | None:
    """The browser's zone from the form's hidden field, or None (the default zone applies). The visitor
    never typed it, so a value `zoneinfo` does not know is dropped rather than shown as an error."""
    try:
        return check_zone(raw) if raw.strip() else None
    except ValueError:
        log.info("subscribe: unknown time zone %r from the browser; the default applies", raw[:64])
        return None


@router.get("/subscribe/embed", response_class=HTMLResponse)
def subscribe_embed(
    request: Request, session: SessionDep, settings: SettingsDep, templates: TemplatesDep
) -> Response:
    """A page showing the form snippet to paste into the charity's site, and the snippet itself, live."""
    context = _form_context(session, settings)
    snippet = templates.get_template("public/_form.html").render({**context, "embed": True})
    return _page(request, templates, settings, "embed.html", {**context, "snippet": snippet})


# --- confirm -------------------------------------------------------------------------------------
@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm(
    request: Request, token: str, session: SessionDep, settings: SettingsDep, templates: TemplatesDep
) -> Response:
    try:
        subscriber = _subscriber_for(session, settings, token, Purpose.CONFIRM)
    except _BadLink as problem:
        return _bad_link(request, templates, settings, problem, Purpose.CONFIRM)
    outcome = optin.confirm(session, subscriber)
    session.commit()
    assert subscriber.id is not None
    context = {
        "outcome": str(outcome),
        "preferences_url": Links(settings).preferences_url(subscriber.id),
    }
    status = 400 if outcome is optin.Confirmation.REFUSED else 200
    return _page(request, templates, settings, "confirmed.html", context, status=status, token_page=True)


# --- preference centre ---------------------------------------------------------------------------
def _preferences_page(
    request: Request,
    session: Session,
    settings: Settings,
    templates: Any,
    subscriber: Subscriber,
    *,
    notice: str = "",
    errors: Mapping[str, str] | None = None,
    chosen: list[str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    index = RegionIndex.from_db(session, settings)
    messages = [("ok", notice)] if notice else []
    messages += [("error", text) for text in (errors or {}).values()]
    context = {
        "subscriber": subscriber,
        "regions": index.regions,
        "chosen": chosen if chosen is not None else preferences.regions_of(session, subscriber),
        "paused": preferences.is_paused(subscriber),
        "paused_until": _date(subscriber.paused_until) if subscriber.paused_until else "",
        "max_pause_weeks": preferences.MAX_PAUSE_WEEKS,
        "errors": errors or {},
        "messages": messages,
        "active": subscriber.status in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING),
        "can_resubscribe": subscriber.status == SubscriberStatus.UNSUBSCRIBED,
        "timezone": subscriber.timezone or settings.TIMEZONE,
        "zones": sorted(all_zones()),
    }
    return _page(request, templates, settings, "preferences.html", context, status=status, token_page=True)


@router.get("/preferences/{token}", response_class=HTMLResponse)
def preferences_page(
    request: Request, token: str, session: SessionDep, settings: SettingsDep, templates: TemplatesDep
) -> Response:
    try:
        subscriber = _subscriber_for(session, settings, token, Purpose.PREFERENCES)
    except _BadLink as problem:
        return _bad_link(request, templates, settings, problem, Purpose.PREFERENCES)
    return _preferences_page(request, session, settings, templates, subscriber)


def _timezone_action(
    session: Session, subscriber: Subscriber, raw: str, page: Callable[..., HTMLResponse]
) -> HTMLResponse:
    """The preference centre's time zone form: saved (moving deliveries not yet due), or a 400 saying why."""
    try:
        changed = change_timezone(session, subscriber, raw)
    except ValueError as exc:
        return page(errors={"timezone": f"Please choose your time zone from the list ({exc})."}, status=400)
    session.commit()
    return page(notice="Your time zone is saved." if changed else "Your time zone is unchanged.")


@router.post("/preferences/{token}", response_class=HTMLResponse)
def preferences_change(
    request: Request,
    token: str,
    session: SessionDep,
    settings: SettingsDep,
    templates: TemplatesDep,
    action: Annotated[str, Form()] = "",
    regions: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies the default
    weeks: Annotated[str, Form()] = "",
    confirm_erase: Annotated[str, Form()] = "",
    timezone: Annotated[str, Form()] = "",
) -> Response:
    try:
        subscriber = _subscriber_for(session, settings, token, Purpose.PREFERENCES)
    except _BadLink as problem:
        return _bad_link(request, templates, settings, problem, Purpose.PREFERENCES)

    def page(**kwargs: Any) -> HTMLResponse:
        return _preferences_page(request, session, settings, templates, subscriber, **kwargs)

    if action == "regions":
        index = RegionIndex.from_db(session, settings)
        codes = list(index.order(c for c in regions if c in index.codes))
        if not codes:
            return page(errors={"regions": "Please choose at least one region."}, chosen=[], status=400)
        changed = preferences.change_regions(session, subscriber, codes)
        session.commit()
        return page(notice="Your regions are saved." if changed else "Your regions are unchanged.")
    if action == "timezone":
        return _timezone_action(session, subscriber, timezone, page)
    if action == "pause":
        try:
            until = preferences.pause(session, subscriber, int(weeks))
        except ValueError:
            text = f"Please choose a number of weeks between 1 and {preferences.MAX_PAUSE_WEEKS}."
            return page(errors={"weeks": text}, status=400)
        session.commit()
        return page(notice=f"Paused: we will not email you until {_date(until)}.")
    if action == "resume":
        preferences.resume(session, subscriber)
        session.commit()
        return page(notice="Welcome back: you will receive the next bulletin.")
    if action == "unsubscribe":
        suppressions.unsubscribe(session, subscriber, how="preferences")
        session.commit()
        return page(notice="You are unsubscribed. We will not email you again.")
    if action == "resubscribe":
        if subscriber.status != SubscriberStatus.UNSUBSCRIBED:
            return page()
        result = optin.request_subscription(
            session,
            settings,
            subscriber.email,
            subscriber.name,
            preferences.regions_of(session, subscriber) or list(RegionIndex.from_db(session, settings).codes),
            client_ip=_client_ip(request),
        )
        session.commit()
        if result.outcome is optin.Outcome.SEND and result.recipient is not None:
            if not optin.send_confirmation(settings, get_renderer(request), result.recipient):
                return _page(request, templates, settings, "send_failed.html", status=503, token_page=True)
        elif result.outcome is optin.Outcome.TOO_MANY:
            return _page(request, templates, settings, "too_many.html", status=429, token_page=True)
        return _page(request, templates, settings, "check_inbox.html", token_page=True)
    if action == "download":
        data = preferences.personal_data(session, subscriber)
        return Response(
            json.dumps(data, ensure_ascii=False, indent=2),
            media_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="my-data.json"', **_TOKEN_PAGE_HEADERS},
        )
    if action == "erase":
        if confirm_erase != "yes":
            text = "To erase your data, tick the box that says you understand, then press the button again."
            return page(errors={"confirm_erase": text}, status=400)
        preferences.erase(session, subscriber)
        session.commit()
        return _page(request, templates, settings, "erased.html", token_page=True)
    return page(errors={"action": "Unknown action."}, status=400)


# --- unsubscribe ---------------------------------------------------------------------------------
@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(
    request: Request, token: str, session: SessionDep, settings: SettingsDep, templates: TemplatesDep
) -> Response:
    """One button, nothing else: mail scanners and link previews fetch GET links, so GET never unsubscribes."""
    try:
        subscriber = _subscriber_for(session, settings, token, Purpose.UNSUBSCRIBE)
    except _BadLink as problem:
        return _bad_link(request, templates, settings, problem, Purpose.UNSUBSCRIBE)
    context = {"subscriber": subscriber, "done": subscriber.status != SubscriberStatus.ACTIVE}
    return _page(request, templates, settings, "unsubscribe.html", context, token_page=True)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_one_click(
    request: Request, token: str, session: SessionDep, settings: SettingsDep, templates: TemplatesDep
) -> Response:
    """RFC 8058: the mailbox provider POSTs `List-Unsubscribe=One-Click` (urlencoded or multipart).

    The body is not required: the signed token alone decides, and a person pressing the button of the
    GET page sends the same field. Takes effect before the answer; answers 200, never a redirect.
    """
    try:
        subscriber = _subscriber_for(session, settings, token, Purpose.UNSUBSCRIBE)
    except _BadLink as problem:
        return _bad_link(request, templates, settings, problem, Purpose.UNSUBSCRIBE)
    suppressions.unsubscribe(session, subscriber, how="one-click")
    session.commit()
    assert subscriber.id is not None
    context = {"preferences_url": Links(settings).preferences_url(subscriber.id)}
    return _page(request, templates, settings, "unsubscribed.html", context, token_page=True)


# --- view online ---------------------------------------------------------------------------------
@router.get("/view/{bulletin_id}/{token}", response_class=HTMLResponse)
def view_online(
    request: Request,
    bulletin_id: int,
    token: str,
    session: SessionDep,
    settings: SettingsDep,
    templates: TemplatesDep,
) -> Response:
    """The bulletin as this subscriber received it (their delivery's regions, else their current ones)."""
    try:
        subscriber = _subscriber_for(session, settings, token, Purpose.VIEW)
    except _BadLink as problem:
        return _bad_link(request, templates, settings, problem, Purpose.VIEW)
    bulletin = session.get(Bulletin, bulletin_id)
    delivery = session.exec(
        select(Delivery).where(Delivery.bulletin_id == bulletin_id, Delivery.subscriber_id == subscriber.id)
    ).first()
    if bulletin is None or (delivery is None and bulletin.status not in _VISIBLE_BULLETIN):
        return _bad_link(request, templates, settings, _BadLink(404, "unknown bulletin"), Purpose.VIEW)
    content = load_content(session, bulletin_id)
    renderer = get_renderer(request)
    regions: list[str] = (
        delivery.variant.split(",") if delivery else preferences.regions_of(session, subscriber)
    )
    try:
        variant = renderer.variant(content, regions)
    except ValueError:  # none of their regions has a section this week: show the whole bulletin
        variant = renderer.variant(content, content.region_codes)
    assert subscriber.id is not None
    recipient = Recipient(
        email=subscriber.email,
        name=subscriber.name,
        subscriber_id=subscriber.id,
        delivery_id=delivery.id if delivery else None,
        bulletin_id=bulletin_id,
    )
    html, _ = personalize(variant, Links(settings).values(recipient))
    return HTMLResponse(html, headers=_TOKEN_PAGE_HEADERS)
