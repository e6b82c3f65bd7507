"""The archive's pure parts: slugs and paths, conditional GET, token redaction, Atom output and SVG
charts, checked over arbitrary input (hypothesis) as well as by example."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from xml.etree import ElementTree as ET

import feedparser
from hypothesis import given, settings
from hypothesis import strategies as st

from newsletter.content.archive import ArchiveEntry, path, slug
from newsletter.content.feeds import FeedInfo, atom_feed
from newsletter.content.types import BulletinContent, ItemContent, Section
from newsletter.core.status import ItemKind
from newsletter.mail.links import without_token
from newsletter.web.admin.charts import bar_chart, line_chart
from newsletter.web.archive import _ID_SLUG
from newsletter.web.conditional import _matches

WHEN = datetime(2026, 11, 23, 7, 0, tzinfo=UTC)


@given(st.text(max_size=300), st.integers(min_value=1, max_value=10**12))
def test_every_path_is_routed_back_to_its_bulletin(title: str, bulletin_id: int):
    s = slug(title)
    assert re.fullmatch(r"([a-z0-9]+(-[a-z0-9]+)*)?", s) and len(s) <= 60
    match = _ID_SLUG.match(path(bulletin_id, title).removeprefix("/archive/"))
    assert match is not None and int(match.group(1)) == bulletin_id


def test_slugs_read_well():
    assert slug("Prayer Bulletin — 24 November 2026!") == "prayer-bulletin-24-november-2026"
    assert slug("Café & Crème") == "cafe-creme"
    assert path(7, "") == "/archive/7"
    assert path(7, "Week 1", ("africa", "global")) == "/archive/7-week-1?regions=africa,global"


@given(
    st.text(alphabet=st.characters(whitelist_categories=("L", "N"), whitelist_characters="-_."), min_size=1)
)
def test_personal_links_lose_their_token(token: str):
    for kind in ("unsubscribe", "preferences", "confirm", "view/12"):
        redacted = without_token(f"https://example.org/{kind}/{token}")
        assert redacted == f"https://example.org/{kind}/…"
    assert without_token("https://example.org/news/story?id=3") == "https://example.org/news/story?id=3"


def test_if_none_match_uses_the_weak_comparison():
    assert _matches('"abc"', '"abc"') and _matches('W/"abc"', '"abc"') and _matches("*", '"abc"')
    assert _matches('"x", "abc"', '"abc"') and not _matches('"abcd"', '"abc"')


def content_of(text: str) -> BulletinContent:
    return BulletinContent(
        id=3,
        title=text or "t",
        subject="s",
        scripture_text=text,
        scripture_reference=text,
        sections=(
            Section("africa", "Africa", (ItemContent(ItemKind.PRAY, text or "x"),)),
            Section("global", "Global", (ItemContent(ItemKind.PRAISE, "Praise"),)),
        ),
    )


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_any_text_makes_a_well_formed_feed(text: str):
    content = content_of(text)
    entry = ArchiveEntry(3, content.title, text, text, "", WHEN, WHEN)
    for region in (None, "africa"):
        info = FeedInfo("https://example.org", "/feed.xml", text or "feed", "sub", "Org", region)
        body = atom_feed(info, [(entry, content)], WHEN)
        ET.fromstring(body)  # well-formed, or this raises
        parsed = feedparser.parse(body)
        assert parsed.bozo == 0 and len(parsed.entries) == 1


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=80), st.lists(st.one_of(st.none(), st.floats(0, 1)), min_size=2, max_size=2))
def test_charts_escape_their_labels_and_stay_valid_svg(label: str, values: list[float | None]):
    for svg in (
        bar_chart(label, label, ("a", "b"), [(label, values)]),
        line_chart(label, label, ("a", "b"), [label, label], [values, values]),
    ):
        root = ET.fromstring(str(svg))
        assert root.get("role") == "img"
        assert root.find("{http://www.w3.org/2000/svg}title") is not None
        assert "<script" not in str(svg)
