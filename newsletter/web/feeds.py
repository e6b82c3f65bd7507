"""Atom feeds of the public archive (RFC 4287).

    GET /feed.xml               the latest bulletins, whole
    GET /feeds/{region}.xml     one feed per region: each entry holds that region's items and the verse

Only single regions have feeds (a feed per combination would be dozens of near-copies). A feed is
rebuilt only when the archive changes (`archive.version`), and answers 304 to a reader that has it.
404 with `ARCHIVE_ENABLED=false`, and for a region that is not configured.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from newsletter.content import archive
from newsletter.content.feeds import CONTENT_TYPE, FeedInfo, atom_feed
from newsletter.content.regions import RegionIndex
from newsletter.core.config import Settings
from newsletter.core.models import utcnow
from newsletter.web.archive import not_found
from newsletter.web.conditional import cached, page_cache
from newsletter.web.deps import SessionDep, SettingsDep

router = APIRouter()

FEED_ENTRIES = 20


def _serve(request: Request, session: SessionDep, settings: Settings, info: FeedInfo) -> Response:
    version = archive.version(session)
    key = ("feed", info, version)
    hit = page_cache(request).get(key)
    if hit is None:
        entries = archive.latest(session, FEED_ENTRIES)
        contents = archive.contents(session, entries)
        body = atom_feed(info, [(e, contents[e.id]) for e in entries], utcnow())
        hit = page_cache(request).put(key, body)
    body, etag = hit
    return cached(request, body, CONTENT_TYPE, version[2], settings.ARCHIVE_CACHE_SECONDS, etag)


def _info(settings: Settings, self_path: str, title: str, region: str | None = None) -> FeedInfo:
    return FeedInfo(
        base_url=settings.BASE_URL.rstrip("/"),
        self_path=self_path,
        title=title,
        subtitle=f"The weekly prayer bulletin of {settings.ORG_NAME}.",
        author=settings.ORG_NAME,
        region=region,
    )


@router.get("/feed.xml")
def whole_feed(request: Request, session: SessionDep, settings: SettingsDep) -> Response:
    if not settings.ARCHIVE_ENABLED:
        return not_found(request, "This charity keeps its bulletins private.")
    return _serve(
        request, session, settings, _info(settings, "/feed.xml", f"{settings.ORG_NAME} prayer bulletin")
    )


@router.get("/feeds/{region}.xml")
def region_feed(request: Request, region: str, session: SessionDep, settings: SettingsDep) -> Response:
    if not settings.ARCHIVE_ENABLED:
        return not_found(request, "This charity keeps its bulletins private.")
    index = RegionIndex.from_db(session, settings)
    if region not in index.codes:
        return not_found(request, f"There is no feed for {region!r}.")
    title = f"{settings.ORG_NAME} prayer bulletin: {index.name(region)}"
    return _serve(request, session, settings, _info(settings, f"/feeds/{region}.xml", title, region))
