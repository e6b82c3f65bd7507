"""The public face of the bulletin: the home page and the archive of published bulletins.

    GET /                         the charity, what the bulletin is, a subscribe form, the latest bulletins
    GET /archive?before=ID        published bulletins, newest first, in keyset pages
    GET /archive/{id}[-slug]      one bulletin, every region; `?regions=a,b` shows only those (a plain
                                  GET form of checkboxes: no JavaScript)

Nothing here is personal: no token, no name, no cookie-dependent content, so every page is cacheable
(ETag, Last-Modified, 304) and safe to forward. With `ARCHIVE_ENABLED=false` the archive answers 404
and the home page lists no bulletins.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from newsletter.content import archive
from newsletter.content.feeds import sections_html
from newsletter.content.markdown import excerpt
from newsletter.content.regions import RegionIndex
from newsletter.core.config import Settings
from newsletter.core.errors import NotFound
from newsletter.web.conditional import cached, page_cache
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter()

HOME_LATEST = 5
HONEYPOT_FIELD = "website"
_ID_SLUG = re.compile(r"^(\d{1,18})(?:-[A-Za-z0-9-]*)?$")
_MEDIA = "text/html; charset=utf-8"


def render_page(request: Request, template: str, context: dict[str, Any]) -> bytes:
    settings: Settings = request.app.state.settings
    env = request.app.state.templates.env
    full = {"org_name": settings.ORG_NAME, "base_url": settings.BASE_URL.rstrip("/"), **context}
    return str(env.get_template(template).render(full)).encode("utf-8")


def not_found(request: Request, text: str) -> HTMLResponse:
    body = render_page(request, "archive/not_found.html", {"text": text})
    return HTMLResponse(body, status_code=404, headers={"Cache-Control": "no-store"})


@router.get("/", response_class=HTMLResponse)
def home(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    latest = archive.latest(session, HOME_LATEST) if settings.ARCHIVE_ENABLED else []
    index = RegionIndex.from_db(session, settings)
    form = {
        "regions": index.regions,
        "values": {"regions": list(index.codes)},
        "action": settings.BASE_URL.rstrip("/") + "/subscribe",
        "honeypot": HONEYPOT_FIELD,
        "errors": {},
    }
    body = render_page(
        request, "archive/home.html", {**form, "latest": latest, "archive_on": settings.ARCHIVE_ENABLED}
    )
    changed = max((e.updated_at for e in latest), default=None)
    return cached(request, body, _MEDIA, changed, settings.ARCHIVE_CACHE_SECONDS)


@router.get("/archive", response_class=HTMLResponse)
def archive_list(
    request: Request, session: SessionDep, settings: SettingsDep, before: int | None = None
) -> Response:
    if not settings.ARCHIVE_ENABLED:
        return not_found(request, "This charity keeps its bulletins private.")
    page = archive.archive_page(session, before, settings.ARCHIVE_PAGE_SIZE)
    index = RegionIndex.from_db(session, settings)
    body = render_page(
        request,
        "archive/list.html",
        {"page": page, "first": before is None, "feeds": index.regions},
    )
    changed = max((e.updated_at for e in page.entries), default=None)
    return cached(request, body, _MEDIA, changed, settings.ARCHIVE_CACHE_SECONDS)


def _wanted_regions(request: Request, index: RegionIndex) -> tuple[str, ...]:
    """`?regions=a,b` and/or `?regions=a&regions=b` (the form's checkboxes), in display order."""
    raw = ",".join(request.query_params.getlist("regions"))
    return index.parse_list(raw)


def _bulletin_context(
    entry: archive.ArchiveEntry, content: Any, index: RegionIndex, wanted: tuple[str, ...], base: str
) -> dict[str, Any]:
    sections = content.only(frozenset(wanted)) if wanted else content.sections
    names = dict(index.regions)
    first = sections[0].items[0].body if sections and sections[0].items else content.intro
    description = content.scripture_text or excerpt(first, 200)
    if content.scripture_text and content.scripture_reference:
        description += f" — {content.scripture_reference}"
    return {
        "entry": entry,
        "content": content,
        "body_html": sections_html(content, sections),
        "description": excerpt(description, 300),
        "canonical": base + archive.path(entry.id, entry.title, wanted),
        "bulletin_regions": [(c, names.get(c, c)) for c in content.region_codes],
        "feed_region": (wanted[0], names.get(wanted[0], wanted[0])) if len(wanted) == 1 else None,
        "wanted": wanted,
        "empty": bool(wanted) and not sections,
    }


@router.get("/archive/{id_slug}", response_class=HTMLResponse)
def archive_bulletin(request: Request, id_slug: str, session: SessionDep, settings: SettingsDep) -> Response:
    if not settings.ARCHIVE_ENABLED:
        return not_found(request, "This charity keeps its bulletins private.")
    match = _ID_SLUG.match(id_slug)
    if match is None:
        return not_found(request, "There is no bulletin at this address.")
    index = RegionIndex.from_db(session, settings)
    try:
        wanted = _wanted_regions(request, index)
    except NotFound as exc:
        body = render_page(request, "archive/not_found.html", {"text": f"{exc}."})
        return HTMLResponse(body, status_code=400, headers={"Cache-Control": "no-store"})
    try:
        entry = archive.published_entry(session, int(match.group(1)))
    except NotFound:
        return not_found(request, "There is no published bulletin at this address.")
    key = ("bulletin", entry.id, entry.updated_at, wanted, index.regions)
    hit = page_cache(request).get(key)
    if hit is None:
        content = archive.contents(session, [entry])[entry.id]
        context = _bulletin_context(entry, content, index, wanted, settings.BASE_URL.rstrip("/"))
        hit = page_cache(request).put(key, render_page(request, "archive/bulletin.html", context))
    body, etag = hit
    return cached(request, body, _MEDIA, entry.updated_at, settings.ARCHIVE_CACHE_SECONDS, etag)
