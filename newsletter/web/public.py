"""The supporters' pages: no account, everything starts from a form or a signed link in an email.

    GET  /subscribe                      the form (email, name, regions; a honeypot field)
    POST /subscribe                      double opt-in: the confirmation email goes out after the answer
    GET  /subscribe/embed                the form as an HTML snippet for the charity's own site
    GET  /confirm/{token}                a page with one button (mail scanners fetch links)
    POST /confirm/{token}                pending → active
    GET  /preferences/{token}            the preference centre
    POST /preferences/{token}            action=name|regions|timezone|pause|resume|unsubscribe|resubscribe|
                                         my-data-link
    GET  /my-data/{token}                download or erase (a short-lived link sent by email on request)
    POST /my-data/{token}                action=download|erase
    GET  /unsubscribe/{token}            a page with one button (GET changes nothing)
    POST /unsubscribe/{token}            RFC 8058 one-click: no cookie, no CSRF token, 200 without a redirect
    GET  /view/{bulletin_id}/{token}     the bulletin online, as the subscriber's variant

Each token route declares the link it needs (`ConfirmLink`, `PreferencesLink`, …: one dependency per
purpose, `audience.credentials`); a bad link raises `BadLink`, which one handler (`bad_link_page`)
answers with a page and status 400 (404 for a bulletin that is not theirs), having changed nothing.
The token in the URL is the credential, so these forms carry no CSRF token. Which link may do what is
written in docs/security.md.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlmodel import Session

from newsletter.audience import my_data, name_change, optin, owner_mail, preferences, suppressions, welcome
from newsletter.audience.credentials import BadLink, holder_of
from newsletter.audience.subscribers import normalize_email, validate_name
from newsletter.audience.timezones import change_timezone
from newsletter.audience.view_online import online_view
from newsletter.content.regions import RegionIndex
from newsletter.content.render import Renderer, as_web_page, display_name, personalize
from newsletter.core.config import Settings
from newsletter.core.models import Subscriber
from newsletter.core.status import SubscriberStatus
from newsletter.core.zones import all_zones, check_zone
from newsletter.mail.links import Links
from newsletter.mail.tokens import Claims, Purpose
from newsletter.web.background import after_response
from newsletter.web.deps import ClientIp, DbId, SessionDep, SettingsDep, TemplatesDep
from newsletter.web.form_errors import FormErrors

log = logging.getLogger(__name__)

router = APIRouter()

SUBSCRIBE_FIELD_PREFIX = "nl-"
"""Ids of the subscription form's fields start with this: the form is also pasted into other sites."""
HONEYPOT_FIELD = "website"
"""Hidden from people (CSS and aria-hidden), filled in by form-filling bots."""

TOKEN_PAGE_HEADERS = {
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Robots-Tag": "noindex, nofollow",
}


class LinkHolder:
    """The subscriber a valid link names, and what its token says."""

    def __init__(self, subscriber: Subscriber, claims: Claims) -> None:
        self.subscriber = subscriber
        self.claims = claims


def _link(purpose: Purpose) -> Callable[[str, Session, Settings], LinkHolder]:
    def holder(token: str, session: SessionDep, settings: SettingsDep) -> LinkHolder:
        return LinkHolder(*holder_of(session, settings, token, purpose))

    holder.__name__ = f"{purpose.name.lower()}_link"
    return holder


ConfirmLink = Annotated[LinkHolder, Depends(_link(Purpose.CONFIRM))]
PreferencesLink = Annotated[LinkHolder, Depends(_link(Purpose.PREFERENCES))]
MyDataLink = Annotated[LinkHolder, Depends(_link(Purpose.MY_DATA))]
UnsubscribeLink = Annotated[LinkHolder, Depends(_link(Purpose.UNSUBSCRIBE))]
ViewLink = Annotated[LinkHolder, Depends(_link(Purpose.VIEW))]


def get_renderer(request: Request) -> Renderer:
    """One Renderer per app (it caches rendered variants)."""
    state = request.app.state
    renderer = getattr(state, "renderer", None)
    if not isinstance(renderer, Renderer):
        renderer = Renderer(state.settings)
        state.renderer = renderer
    return renderer


def page(
    request: Request,
    name: str,
    context: Mapping[str, Any] | None = None,
    *,
    status: int = 200,
    token_page: bool = False,
) -> HTMLResponse:
    settings: Settings = request.app.state.settings
    ctx = {"org_name": settings.ORG_NAME, **(context or {})}
    templates = request.app.state.templates
    response: HTMLResponse = templates.TemplateResponse(request, f"public/{name}", ctx, status_code=status)
    if token_page:
        response.headers.update(TOKEN_PAGE_HEADERS)
    return response


def bad_link_page(request: Request, problem: Exception) -> Response:
    """The one answer to a link that must not be honoured (registered for BadLink in `create_app`)."""
    assert isinstance(problem, BadLink)
    context = {"reason": problem.reason, "purpose": str(problem.purpose)}
    return page(request, "link_problem.html", context, status=problem.status, token_page=True)


def _date(value: datetime) -> str:
    return f"{value.day} {value:%B %Y}"


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
        "form_errors": FormErrors(prefix=SUBSCRIBE_FIELD_PREFIX),
        "timezone_script": settings.BASE_URL.rstrip("/") + "/static/timezone.js",
        "embed": False,
    }


@router.get("/subscribe", response_class=HTMLResponse)
def subscribe_form(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    return page(request, "subscribe.html", _form_context(session, settings))


@router.post("/subscribe", response_class=HTMLResponse)
def subscribe(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    client_ip: ClientIp,
    background: BackgroundTasks,
    email: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    regions: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies the default
    website: Annotated[str, Form()] = "",
    timezone: Annotated[str, Form()] = "",
) -> Response:
    if website.strip():
        log.info("subscribe: honeypot filled in; nothing stored")
        return page(request, "check_inbox.html")
    index = RegionIndex.from_db(session, settings)
    errors: dict[str, str] = {}
    try:
        address = normalize_email(email)
    except ValueError:
        errors["email"] = "Please enter a valid email address, like name@example.org."
    try:
        clean = validate_name(name)
    except ValueError as exc:
        errors["name"] = _name_problem(exc)
    codes = index.order(c for c in regions if c in index.codes)
    if not codes:
        errors["regions"] = "Please choose at least one region."
    if errors:
        context = _form_context(session, settings, {"email": email, "name": name, "regions": list(codes)})
        form_errors = FormErrors(errors, prefix=SUBSCRIBE_FIELD_PREFIX)
        return page(request, "subscribe.html", {**context, "form_errors": form_errors}, status=400)
    result = optin.request_subscription(
        session, settings, address, clean, codes, client_ip=client_ip, timezone=_zone_or_none(timezone)
    )
    session.commit()
    if result.outcome is optin.Outcome.TOO_MANY:
        return page(request, "too_many.html", status=429)
    if result.outcome is optin.Outcome.SEND and result.recipient is not None:
        after_response(
            request, background, optin.send_confirmation, settings, get_renderer(request), result.recipient
        )
    return page(request, "check_inbox.html")


def _name_problem(problem: ValueError) -> str:
    """What a form says of a name `validate_name` refused: the subscription form and the preference centre."""
    return f"Please check your name: {problem}."


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
    return page(request, "embed.html", {**context, "snippet": snippet})


# --- confirm -------------------------------------------------------------------------------------
@router.get("/confirm/{token}", response_class=HTMLResponse)
def confirm_page(request: Request, link: ConfirmLink) -> Response:
    """One button: link scanners fetch every link in an email, so GET never confirms anything."""
    context = {"outcome": "ask", "email": link.subscriber.email}
    return page(request, "confirmed.html", context, token_page=True)


@router.post("/confirm/{token}", response_class=HTMLResponse)
def confirm(request: Request, link: ConfirmLink, session: SessionDep, settings: SettingsDep) -> Response:
    subscriber = link.subscriber
    outcome = welcome.confirm_with_welcome(
        session, settings, get_renderer(request), subscriber, issued_at=link.claims.issued_at
    )
    context = {
        "outcome": str(outcome),
        "preferences_url": Links(settings).preferences_url(subscriber.id, subscriber.link_secret),
        # Whoever first asked for this address chose the name, and nothing showed it before: now that
        # the owner has proved the address is theirs, they see it, with the way to change it.
        "name": display_name(subscriber.name),
    }
    status = 400 if outcome is optin.Confirmation.REFUSED else 200
    return page(request, "confirmed.html", context, status=status, token_page=True)


# --- preference centre ---------------------------------------------------------------------------
def _preferences_page(
    request: Request,
    session: Session,
    settings: Settings,
    subscriber: Subscriber,
    *,
    notice: str = "",
    errors: Mapping[str, str] | None = None,
    chosen: list[str] | None = None,
    values: Mapping[str, str] | None = None,
    status: int = 200,
) -> HTMLResponse:
    index = RegionIndex.from_db(session, settings)
    messages = [("ok", notice)] if notice else []
    context = {
        "subscriber": subscriber,
        "regions": index.regions,
        "chosen": chosen if chosen is not None else preferences.regions_of(session, subscriber),
        "paused": preferences.is_paused(subscriber),
        "paused_until": _date(subscriber.paused_until) if subscriber.paused_until else "",
        "max_pause_weeks": preferences.MAX_PAUSE_WEEKS,
        "form_errors": FormErrors(errors),
        "values": values or {},
        "messages": messages,
        "active": subscriber.status in (SubscriberStatus.ACTIVE, SubscriberStatus.PENDING),
        "can_resubscribe": subscriber.status == SubscriberStatus.UNSUBSCRIBED,
        "timezone": subscriber.timezone or settings.TIMEZONE,
        "zones": sorted(all_zones()),
        "my_data_minutes": max(1, settings.MY_DATA_TTL_SECONDS // 60),
    }
    return page(request, "preferences.html", context, status=status, token_page=True)


@router.get("/preferences/{token}", response_class=HTMLResponse)
def preferences_page(
    request: Request, link: PreferencesLink, session: SessionDep, settings: SettingsDep
) -> Response:
    return _preferences_page(request, session, settings, link.subscriber)


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
    link: PreferencesLink,
    session: SessionDep,
    settings: SettingsDep,
    client_ip: ClientIp,
    background: BackgroundTasks,
    action: Annotated[str, Form()] = "",
    regions: Annotated[list[str], Form()] = [],  # noqa: B006 - FastAPI copies the default
    weeks: Annotated[str, Form()] = "",
    timezone: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
) -> Response:
    subscriber = link.subscriber

    def again(**kwargs: Any) -> HTMLResponse:
        return _preferences_page(request, session, settings, subscriber, **kwargs)

    if action == "name":
        try:
            wanted = validate_name(name)
        except ValueError as exc:
            return again(errors={"name": _name_problem(exc)}, values={"name": name}, status=400)
        if wanted == subscriber.name:
            return again(notice="Your name is unchanged.")
        if wanted and not name_change.allow(session, subscriber):
            session.rollback()
            text = (
                "This name has been changed too often today. Please try again tomorrow, or leave the "
                'field empty to be greeted as "friend".'
            )
            return again(errors={"name": text}, values={"name": name}, status=429)
        preferences.change_name(session, subscriber, wanted)
        notify = bool(wanted) and owner_mail.reachable(session, subscriber)
        session.commit()
        if notify:  # every change is announced to the owner: the link may be in a stranger's hands
            after_response(request, background, name_change.send_notice, settings, subscriber)
        return again(notice="Your name is saved.")
    if action == "regions":
        index = RegionIndex.from_db(session, settings)
        codes = list(index.order(c for c in regions if c in index.codes))
        if not codes:
            return again(errors={"regions": "Please choose at least one region."}, chosen=[], status=400)
        changed = preferences.change_regions(session, subscriber, codes)
        session.commit()
        return again(notice="Your regions are saved." if changed else "Your regions are unchanged.")
    if action == "timezone":
        return _timezone_action(session, subscriber, timezone, again)
    if action == "pause":
        try:
            until = preferences.pause(session, subscriber, int(weeks))
        except ValueError:
            text = f"Please choose a number of weeks between 1 and {preferences.MAX_PAUSE_WEEKS}."
            return again(errors={"weeks": text}, values={"weeks": weeks}, status=400)
        session.commit()
        return again(notice=f"Paused: we will not email you until {_date(until)}.")
    if action == "resume":
        preferences.resume(session, subscriber)
        session.commit()
        return again(notice="Welcome back: you will receive the next bulletin.")
    if action == "unsubscribe":
        suppressions.unsubscribe(session, subscriber, how="preferences")
        session.commit()
        return again(notice="You are unsubscribed. We will not email you again.")
    if action == "resubscribe":
        return _resubscribe(request, session, settings, subscriber, client_ip, background)
    if action == "my-data-link":
        send = my_data.request_link(session, subscriber, client_ip=client_ip)
        session.commit()
        if send:
            after_response(request, background, my_data.send_link, settings, subscriber)
        # The same answer whether it was sent or not: a forwarded link learns nothing of the address.
        return again(notice="We have emailed you a link to download or erase your data.")
    return again(errors={"action": "Unknown action."}, status=400)


def _resubscribe(
    request: Request,
    session: Session,
    settings: Settings,
    subscriber: Subscriber,
    client_ip: str,
    background: BackgroundTasks,
) -> Response:
    if subscriber.status != SubscriberStatus.UNSUBSCRIBED:
        return _preferences_page(request, session, settings, subscriber)
    codes = preferences.regions_of(session, subscriber) or list(RegionIndex.from_db(session, settings).codes)
    result = optin.request_subscription(
        session, settings, subscriber.email, subscriber.name, codes, client_ip=client_ip
    )
    session.commit()
    if result.outcome is optin.Outcome.TOO_MANY:
        return page(request, "too_many.html", status=429, token_page=True)
    if result.outcome is optin.Outcome.SEND and result.recipient is not None:
        after_response(
            request, background, optin.send_confirmation, settings, get_renderer(request), result.recipient
        )
    return page(request, "check_inbox.html", token_page=True)


# --- my data (export and erase) ------------------------------------------------------------------
@router.get("/my-data/{token}", response_class=HTMLResponse)
def my_data_page(request: Request, link: MyDataLink) -> Response:
    context = {"subscriber": link.subscriber, "form_errors": FormErrors()}
    return page(request, "my_data.html", context, token_page=True)


@router.post("/my-data/{token}", response_class=HTMLResponse)
def my_data_action(
    request: Request,
    link: MyDataLink,
    session: SessionDep,
    action: Annotated[str, Form()] = "",
    confirm_erase: Annotated[str, Form()] = "",
) -> Response:
    subscriber = link.subscriber
    if action == "download":
        data = preferences.personal_data(session, subscriber)
        return Response(
            json.dumps(data, ensure_ascii=False, indent=2),
            media_type="application/json",
            headers={"Content-Disposition": 'attachment; filename="my-data.json"', **TOKEN_PAGE_HEADERS},
        )
    if action == "erase" and confirm_erase == "yes":
        preferences.erase(session, subscriber)
        session.commit()
        return page(request, "erased.html", token_page=True)
    errors = {
        "confirm_erase": "To erase your data, tick the box that says you understand, then press the button again."
    }
    context = {"subscriber": subscriber, "form_errors": FormErrors(errors)}
    return page(request, "my_data.html", context, status=400, token_page=True)


# --- unsubscribe ---------------------------------------------------------------------------------
@router.get("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_page(request: Request, link: UnsubscribeLink) -> Response:
    """One button, nothing else: mail scanners and link previews fetch GET links, so GET never unsubscribes."""
    subscriber = link.subscriber
    context = {"subscriber": subscriber, "done": subscriber.status != SubscriberStatus.ACTIVE}
    return page(request, "unsubscribe.html", context, token_page=True)


@router.post("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe_one_click(request: Request, link: UnsubscribeLink, session: SessionDep) -> Response:
    """RFC 8058: the mailbox provider POSTs `List-Unsubscribe=One-Click` (urlencoded or multipart).

    The body is not required: the signed token alone decides, and a person pressing the button of the
    GET page sends the same field. Takes effect before the answer; answers 200, never a redirect. The
    page links to no other credential: a forwarded email's unsubscribe link must not open the
    preference centre.
    """
    suppressions.unsubscribe(session, link.subscriber, how="one-click")
    session.commit()
    return page(request, "unsubscribed.html", token_page=True)


# --- view online ---------------------------------------------------------------------------------
SHARED_PAGE_LINK = "#use-the-link-in-your-email"
"""Stands for the preferences and unsubscribe links on a page that is shared: they are credentials."""
SHARED_PAGE_ADDRESS = "your address"
"""Stands for the subscriber's address on a page that is shared ("because your address subscribed")."""


@router.get("/view/{bulletin_id}/{token}", response_class=HTMLResponse)
def view_online(
    request: Request, bulletin_id: DbId, link: ViewLink, session: SessionDep, settings: SettingsDep
) -> Response:
    """The bulletin as this subscriber received it. People share this page, so it carries neither the
    preferences nor the unsubscribe credential, nor their address or name: the greeting says what it
    says to a subscriber who gave no name (docs/security.md)."""
    view = online_view(session, bulletin_id, link.subscriber)
    if view is None:
        raise BadLink(404, "unknown bulletin", Purpose.VIEW)
    renderer = get_renderer(request)
    try:
        variant = renderer.variant(view.content, view.regions)
    except ValueError:  # none of their regions has a section this week: show the whole bulletin
        variant = renderer.variant(view.content, view.content.region_codes)
    shared = view.recipient._replace(email=SHARED_PAGE_ADDRESS, name="")
    values = Links(settings).values(shared)
    values.update(preferences_url=SHARED_PAGE_LINK, unsubscribe_url=SHARED_PAGE_LINK)
    html, _ = personalize(variant, values)
    return HTMLResponse(as_web_page(html), headers=TOKEN_PAGE_HEADERS)
