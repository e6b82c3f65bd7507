"""Cacheable public responses: ETag and Last-Modified, 304 on revalidation (RFC 9110 §13, RFC 9111).

    cached(request, body, media_type, last_modified, max_age)   a 200 with validators, or a 304

The ETag is a strong validator over the exact bytes, so any change (a template, a region's name) gives
a new one. `If-None-Match` wins over `If-Modified-Since` when both are sent, as RFC 9110 §13.2.2 says.
`PageCache` keeps rendered bodies in the process, keyed by what they depend on, so a warm page costs a
dictionary lookup and its one small query.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any

from fastapi import Request
from fastapi.responses import Response

PUBLIC_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "strict-origin-when-cross-origin",
    "X-Frame-Options": "DENY",
}


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _matches(header: str, etag: str) -> bool:
    """If-None-Match uses the weak comparison: W/"x" matches "x"; `*` matches anything."""
    candidates = [part.strip() for part in header.split(",")]
    return "*" in candidates or any(c.removeprefix("W/") == etag for c in candidates)


def _not_modified_since(header: str, last_modified: datetime) -> bool:
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError):
        return False  # an unreadable date is ignored, as RFC 9110 asks
    if since.tzinfo is None:
        since = since.replace(tzinfo=UTC)
    return last_modified.replace(microsecond=0) <= since


def cached(
    request: Request,
    body: bytes,
    media_type: str,
    last_modified: datetime | None,
    max_age: int,
    etag: str | None = None,
) -> Response:
    """`body` with validators, or 304 Not Modified (no body, same validators) when the client has it."""
    etag = etag or etag_of(body)
    headers = {
        **PUBLIC_HEADERS,
        "ETag": etag,
        "Cache-Control": f"public, max-age={max_age}",
    }
    if last_modified is not None:
        headers["Last-Modified"] = format_datetime(last_modified.astimezone(UTC), usegmt=True)
    if_none_match = request.headers.get("if-none-match")
    if_modified_since = request.headers.get("if-modified-since")
    if if_none_match is not None:
        fresh = _matches(if_none_match, etag)
    else:
        fresh = bool(
            if_modified_since and last_modified and _not_modified_since(if_modified_since, last_modified)
        )
    if fresh and request.method in {"GET", "HEAD"}:
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=media_type, headers=headers)


class PageCache:
    """A small LRU of rendered bodies and their ETags, shared by the app's threads."""

    def __init__(self, size: int = 256) -> None:
        self._items: OrderedDict[Any, tuple[bytes, str]] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def get(self, key: Any) -> tuple[bytes, str] | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: Any, body: bytes) -> tuple[bytes, str]:
        value = (body, etag_of(body))
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)
        return value


def page_cache(request: Request) -> PageCache:
    """The app's one PageCache, made on first use."""
    state = request.app.state
    cache = getattr(state, "page_cache", None)
    if not isinstance(cache, PageCache):
        cache = PageCache()
        state.page_cache = cache
    return cache
