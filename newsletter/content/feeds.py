"""Atom feeds (RFC 4287) of the public archive, and the bulletin as one HTML fragment. Pure: values in,
bytes out; the web layer reads the entries (`newsletter.content.archive`) and serves the result.

    atom_feed(feed, entries)    one feed: the whole bulletin, or one region's items with the verse

Every feed has the elements RFC 4287 requires (id, title, updated, an author, a self link), every entry
an id, a title, an updated time, an alternate link and its content as escaped HTML (`type="html"`).
Ids are the permanent archive URLs under `BASE_URL` (for a region feed, with `?regions=`), so they stay
the same from one fetch to the next and differ between the entries of one feed. Characters XML 1.0
cannot carry (control characters a pasted prayer request may hold) are dropped, never sent.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

from newsletter.content import markdown
from newsletter.content.archive import ArchiveEntry, path
from newsletter.content.types import BulletinContent, Section
from newsletter.core.status import ItemKind

ATOM_NS = "http://www.w3.org/2005/Atom"
CONTENT_TYPE = "application/atom+xml; charset=utf-8"
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_LABELS = {ItemKind.PRAY: "Pray", ItemKind.PRAISE: "Praise"}

ET.register_namespace("", ATOM_NS)


@dataclass(frozen=True)
class FeedInfo:
    """What a feed is: its absolute self URL, the page it stands for, and its titles."""

    base_url: str
    self_path: str
    title: str
    subtitle: str
    author: str
    region: str | None = None
    """A region feed holds only this region's items; None for the whole bulletin."""


def xml_text(text: str) -> str:
    """`text` without the characters XML 1.0 forbids."""
    return _NOT_XML.sub("", text)


def rfc3339(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def sections_html(content: BulletinContent, sections: Sequence[Section], *, headings: bool = True) -> str:
    """The verse, the introduction and `sections` as one safe HTML fragment (items through Markdown)."""
    parts: list[str] = []
    if content.scripture_text:
        ref = f"<p>— {html.escape(content.scripture_reference)}</p>" if content.scripture_reference else ""
        parts.append(f"<blockquote><p>{html.escape(content.scripture_text)}</p>{ref}</blockquote>")
    if content.intro:
        parts.append(markdown.to_html(content.intro))
    for section in sections:
        if headings:
            parts.append(f"<h2>{html.escape(section.region_name)}</h2>")
        for item in section.items:
            parts.append(f"<p><strong>{_LABELS.get(item.kind, str(item.kind))}</strong></p>")
            parts.append(markdown.to_html(item.body))
    return "".join(parts)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, f"{{{ATOM_NS}}}{tag}", attrs)
    if text is not None:
        element.text = xml_text(text)
    return element


def _entry(feed: ET.Element, info: FeedInfo, entry: ArchiveEntry, content: BulletinContent) -> None:
    base = info.base_url
    regions = (info.region,) if info.region else ()
    sections = content.only(frozenset(regions)) if info.region else content.sections
    node = _sub(feed, "entry")
    _sub(
        node,
        "id",
        base + (f"/archive/{entry.id}?regions={info.region}" if info.region else f"/archive/{entry.id}"),
    )
    _sub(node, "title", entry.title)
    _sub(node, "updated", rfc3339(entry.updated_at))
    _sub(node, "published", rfc3339(entry.published_at))
    _sub(node, "link", rel="alternate", type="text/html", href=base + path(entry.id, entry.title, regions))
    if content.scripture_text:
        summary = content.scripture_text
        if content.scripture_reference:
            summary += f" — {content.scripture_reference}"
        _sub(node, "summary", summary)
    _sub(node, "content", sections_html(content, sections, headings=not info.region), type="html")


def atom_feed(
    info: FeedInfo, entries: Sequence[tuple[ArchiveEntry, BulletinContent]], now: datetime
) -> bytes:
    """The feed as UTF-8 XML. A region feed leaves out the bulletins without an item for its region.

    `updated` is the newest entry's time (`now` for a feed without entries), so a feed that did not
    change serialises to the same bytes.
    """
    if info.region:
        entries = [(e, c) for e, c in entries if info.region in c.region_codes]
    base = info.base_url
    feed = ET.Element(f"{{{ATOM_NS}}}feed")
    _sub(feed, "id", base + info.self_path)
    _sub(feed, "title", info.title)
    _sub(feed, "subtitle", info.subtitle)
    _sub(feed, "updated", rfc3339(max((e.updated_at for e, _ in entries), default=now)))
    _sub(feed, "link", rel="self", type="application/atom+xml", href=base + info.self_path)
    _sub(feed, "link", rel="alternate", type="text/html", href=base + "/archive")
    author = _sub(feed, "author")
    _sub(author, "name", info.author)
    for entry, content in entries:
        _entry(feed, info, entry, content)
    body: bytes = ET.tostring(feed, encoding="utf-8", xml_declaration=True)
    return body
