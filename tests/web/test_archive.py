"""The public archive and its feeds over HTTP: only published bulletins, region filtering, nothing
personal, proper sharing metadata, conditional GET, and the setting that turns it all off."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from xml.etree import ElementTree as ET

import feedparser
import pytest
from lxml import html as lxml_html
from sqlmodel import Session

from newsletter.content.types import Recipient
from newsletter.core.config import Settings
from newsletter.core.models import Bulletin
from newsletter.core.status import BulletinStatus
from newsletter.mail.links import Links
from tests.factories import MakeBulletin, MakeSubscriber
from tests.fixtures_web import LiveServer, start_live_server

ATOM = "{http://www.w3.org/2005/Atom}"
REGION_NAMES = {
    "africa": "Africa",
    "latin-america": "Latin America",
    "south-asia": "South Asia",
    "southeast-asia": "Southeast Asia",
    "global": "HQ & Global Partners",
}
Publish = Callable[..., Bulletin]


def bulletin_text(title: str, regions: tuple[str, ...] = tuple(REGION_NAMES)) -> str:
    """A bulletin whose every item names its title and region, so a page shows which ones it holds."""
    parts = [title, "", '"Seek justice, defend the oppressed."', "", "- Isaiah 1:17", ""]
    for code in regions:
        parts += [
            REGION_NAMES[code],
            "",
            f"Pray for {code} in {title}: see [the story](https://example.org/{code}).",
            "",
        ]
    return "\n".join(parts)


@pytest.fixture
def publish(make_bulletin: MakeBulletin, session: Session) -> Publish:
    """A bulletin with a status and, when it went out, a start time (`days_ago`), committed."""
    now = datetime.now(UTC)

    def make(
        title: str,
        status: str = BulletinStatus.SENT,
        days_ago: int = 0,
        regions: tuple[str, ...] = tuple(REGION_NAMES),
    ) -> Bulletin:
        bulletin = make_bulletin(bulletin_text(title, regions), status=status)
        if status in (BulletinStatus.SENT, BulletinStatus.SENDING, BulletinStatus.PAUSED):
            bulletin.started_at = now - timedelta(days=days_ago)
        if status == BulletinStatus.READY:
            bulletin.send_at = now + timedelta(days=1)
        session.add(bulletin)
        session.commit()
        return bulletin

    return make


@pytest.fixture
def archive_server(settings: Settings) -> Iterator[Callable[..., LiveServer]]:
    """Start a live server with settings overrides (`ARCHIVE_PAGE_SIZE=2`…); stopped after the test."""
    stack: list[object] = []

    def start(**overrides: object) -> LiveServer:
        manager = start_live_server(settings.model_copy(update=overrides))
        stack.append(manager)
        return manager.__enter__()

    yield start
    for manager in reversed(stack):
        manager.__exit__(None, None, None)  # type: ignore[attr-defined]


def feed_urls(live: LiveServer) -> list[str]:
    return ["/feed.xml", *[f"/feeds/{code}.xml" for code in REGION_NAMES]]


def test_drafts_scheduled_paused_and_cancelled_bulletins_never_leak(
    publish: Publish, live_server: LiveServer
):
    hidden = [
        publish("Draft week", BulletinStatus.DRAFT),
        publish("Scheduled week", BulletinStatus.READY),
        publish("Paused week", BulletinStatus.PAUSED),
        publish("Cancelled week", BulletinStatus.CANCELLED),
    ]
    shown = [publish("Sent week", days_ago=7), publish("Sending week", BulletinStatus.SENDING)]
    pages = [live_server.client.get(url) for url in ["/", "/archive", *feed_urls(live_server)]]
    for bulletin in shown:
        assert live_server.client.get(f"/archive/{bulletin.id}").status_code == 200
    for response in pages:
        assert response.status_code == 200, response.url
        for bulletin in hidden:
            assert bulletin.title not in response.text
    assert all(b.title in pages[1].text for b in shown)
    for bulletin in hidden:
        for url in (f"/archive/{bulletin.id}", f"/archive/{bulletin.id}-draft-week"):
            response = live_server.client.get(url)
            assert response.status_code == 404
            assert bulletin.title not in response.text


def test_the_archive_pages_by_keyset_newest_first(
    publish: Publish, archive_server: Callable[..., LiveServer], session: Session
):
    made = [publish(f"Week {n}", days_ago=10 - n) for n in range(5)]
    late = publish("Week late", days_ago=0)
    # Created first, sent last: the archive orders by when a bulletin went out, not by id.
    made[0].started_at = datetime.now(UTC) + timedelta(minutes=1)
    session.add(made[0])
    session.commit()
    live = archive_server(ARCHIVE_PAGE_SIZE=2)
    expected = ["Week 0", "Week late", "Week 4", "Week 3", "Week 2", "Week 1"]
    seen: list[str] = []
    url: str | None = "/archive"
    while url:
        response = live.client.get(url)
        assert response.status_code == 200
        doc = lxml_html.fromstring(response.text)
        titles = [a.text_content() for a in doc.cssselect("ol.bulletin-list li > a")]
        assert len(titles) <= 2
        seen += titles
        older = doc.xpath('//a[@rel="next"]/@href')
        url = older[0] if older else None
    assert seen == expected
    assert late.id is not None


def test_region_filter_works_without_javascript(publish: Publish, live_server: LiveServer):
    bulletin = publish("Filter week", regions=("africa", "south-asia", "global"))
    base = f"/archive/{bulletin.id}"
    whole = live_server.client.get(base).text
    assert all(f"Pray for {code} in Filter week" in whole for code in ("africa", "south-asia", "global"))

    one = live_server.client.get(base + "-filter-week?regions=south-asia").text
    assert "Pray for south-asia in Filter week" in one
    assert "Pray for africa" not in one and "Pray for global" not in one
    assert '<link rel="alternate" type="application/atom+xml"' in one and "/feeds/south-asia.xml" in one

    # The form's checkboxes send the parameter once per region; codes or names, any order.
    form = live_server.client.get(base, params=[("regions", "global"), ("regions", "Africa")]).text
    assert "Pray for africa" in form and "Pray for global" in form and "Pray for south-asia" not in form
    doc = lxml_html.fromstring(form)
    checked = doc.xpath('//form[@method="get"]//input[@name="regions" and @checked]/@value')
    assert sorted(checked) == ["africa", "global"]
    assert doc.xpath("//script") == []

    unknown = live_server.client.get(base, params={"regions": "atlantis"})
    assert unknown.status_code == 400 and "atlantis" in unknown.text
    missing = live_server.client.get(base, params={"regions": "latin-america"})
    assert missing.status_code == 200 and "no items for the regions you chose" in missing.text


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [v for k, v in attrs if k in {"href", "action", "src", "content"} and v]


def test_no_archive_page_carries_a_token_or_anything_personal(
    publish: Publish, live_server: LiveServer, make_subscriber: MakeSubscriber, settings: Settings
):
    person = make_subscriber("reader@example.org", name="Ruth Reader")
    bulletin = publish("Plain week")
    links = Links(settings)
    recipient = Recipient(
        person.email, person.name, person.id, bulletin_id=bulletin.id, link_secret=person.link_secret
    )
    values = links.values(recipient, fields={"unsubscribe_url", "preferences_url", "view_url"})
    tokens = [values[k].rsplit("/", 1)[1] for k in ("unsubscribe_url", "preferences_url")]
    assert "/view/" not in values["view_url"]  # with the archive on, "view online" has no token at all
    urls = [
        "/",
        "/archive",
        f"/archive/{bulletin.id}",
        f"/archive/{bulletin.id}?regions=africa",
        *feed_urls(live_server),
    ]
    for url in urls:
        response = live_server.client.get(url)
        assert response.status_code == 200
        assert "set-cookie" not in response.headers
        body = response.text
        assert "reader@example.org" not in body and "Ruth Reader" not in body
        assert not [t for t in tokens if t in body], (url, tokens)
        parser = _Links()
        parser.feed(body)
        personal = [u for u in parser.urls if re.search(r"/(unsubscribe|preferences|view|confirm)/", u)]
        assert personal == [], url


def test_pages_have_titles_descriptions_and_open_graph_tags(
    publish: Publish, live_server: LiveServer, settings: Settings
):
    bulletin = publish("Sharing week")
    doc = lxml_html.fromstring(live_server.client.get(f"/archive/{bulletin.id}").text)
    meta = {m.get("property") or m.get("name"): m.get("content") for m in doc.xpath("//head/meta")}
    assert doc.findtext(".//title").startswith("Sharing week")
    assert meta["og:title"] == "Sharing week"
    assert meta["og:type"] == "article"
    assert "Seek justice" in meta["description"] and meta["og:description"] == meta["description"]
    canonical = doc.xpath('//link[@rel="canonical"]/@href')[0]
    assert canonical == meta["og:url"] == f"{settings.BASE_URL}/archive/{bulletin.id}-sharing-week"
    for url in ("/", "/archive"):
        head = lxml_html.fromstring(live_server.client.get(url).text)
        assert head.xpath('//meta[@property="og:title"]/@content')
        assert head.xpath('//link[@rel="alternate" and @type="application/atom+xml"]/@href') == [
            f"{settings.BASE_URL}/feed.xml"
        ]


@pytest.mark.parametrize(
    "url", ["/archive", "/archive/{id}", "/archive/{id}?regions=africa", "/feed.xml", "/feeds/africa.xml"]
)
def test_caching_headers_and_304_on_revalidation(publish: Publish, live_server: LiveServer, url: str):
    bulletin = publish("Cached week")
    url = url.format(id=bulletin.id)
    first = live_server.client.get(url)
    assert first.status_code == 200
    etag, modified = first.headers["etag"], first.headers["last-modified"]
    assert re.fullmatch(r'"[0-9a-f]{32}"', etag)
    assert first.headers["cache-control"].startswith("public, max-age=")

    again = live_server.client.get(url)
    assert again.headers["etag"] == etag and again.content == first.content
    for headers in (
        {"If-None-Match": etag},
        {"If-None-Match": f'"other", W/{etag}'},
        {"If-Modified-Since": modified},
    ):
        revalidated = live_server.client.get(url, headers=headers)
        assert revalidated.status_code == 304, headers
        assert revalidated.content == b""
        assert revalidated.headers["etag"] == etag
    assert live_server.client.get(url, headers={"If-None-Match": '"stale"'}).status_code == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
    both = {"If-None-Match": '"stale"', "If-Modified-Since": modified}
    assert live_server.client.get(url, headers=both).status_code == 200
    earlier = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert live_server.client.get(url, headers={"If-Modified-Since": earlier}).status_code == 200


def test_a_new_bulletin_changes_the_feed_and_list_validators(publish: Publish, live_server: LiveServer):
    publish("Old week", days_ago=7)
    before = {url: live_server.client.get(url).headers["etag"] for url in ("/archive", "/feed.xml")}
    publish("New week")
    for url, etag in before.items():
        response = live_server.client.get(url, headers={"If-None-Match": etag})
        assert response.status_code == 200 and "New week" in response.text


def test_archive_off_hides_every_archive_page(publish: Publish, archive_server: Callable[..., LiveServer]):
    bulletin = publish("Private week")
    live = archive_server(ARCHIVE_ENABLED=False)
    for url in ("/archive", f"/archive/{bulletin.id}", "/feed.xml", "/feeds/africa.xml"):
        response = live.client.get(url)
        assert response.status_code == 404, url
        assert "Private week" not in response.text
    home = live.client.get("/")
    assert home.status_code == 200
    assert "Private week" not in home.text
    assert 'href="/archive' not in home.text and "feed.xml" not in home.text
    assert 'action="http://127.0.0.1:8000/subscribe"' in home.text


def test_unknown_feeds_and_malformed_ids_are_404(publish: Publish, live_server: LiveServer):
    publish("Some week")
    for url in (
        "/feeds/atlantis.xml",
        "/feeds/africa,global.xml",
        "/archive/abc",
        "/archive/99999",
        "/archive/1x",
    ):
        assert live_server.client.get(url).status_code == 404, url


# --- feeds: a real parser and the rules of RFC 4287 ----------------------------------------------------
def _check_atom(body: bytes, base_url: str) -> ET.Element:
    """The RFC 4287 rules a feed reader relies on; returns the parsed feed."""
    root = ET.fromstring(body)  # well-formed XML, or this raises
    assert root.tag == f"{ATOM}feed"
    for required in ("id", "title", "updated"):
        assert len(root.findall(f"{ATOM}{required}")) == 1, required
    assert root.find(f"{ATOM}author/{ATOM}name") is not None  # no entry has its own author
    assert [link.get("href") for link in root.findall(f"{ATOM}link[@rel='self']")] == [
        root.findtext(f"{ATOM}id")
    ]
    ids = []
    for entry in root.findall(f"{ATOM}entry"):
        for required in ("id", "title", "updated"):
            assert len(entry.findall(f"{ATOM}{required}")) == 1, required
        datetime.fromisoformat(entry.findtext(f"{ATOM}updated", "").replace("Z", "+00:00"))
        alternate = entry.find(f"{ATOM}link[@rel='alternate']")
        assert alternate is not None and alternate.get("href", "").startswith(base_url + "/archive/")
        content = entry.find(f"{ATOM}content")
        assert content is not None and content.get("type") == "html"
        fragment = lxml_html.fragment_fromstring(content.text or "", create_parent="div")
        assert fragment.xpath("//script") == []
        ids.append(entry.findtext(f"{ATOM}id"))
    assert len(ids) == len(set(ids))
    return root


def test_feeds_parse_and_follow_the_atom_rules(publish: Publish, live_server: LiveServer, settings: Settings):
    first = publish("Week <one> & \x0bco", days_ago=7, regions=("africa", "global"))
    second = publish("Week two", regions=("south-asia", "global"))
    base = settings.BASE_URL
    for url in feed_urls(live_server):
        response = live_server.client.get(url)
        assert response.headers["content-type"] == "application/atom+xml; charset=utf-8"
        _check_atom(response.content, base)
        parsed = feedparser.parse(response.content)
        assert parsed.bozo == 0, (url, parsed.get("bozo_exception"))
        assert parsed.version == "atom10"
        assert parsed.feed.id == base + url
    whole = feedparser.parse(live_server.client.get("/feed.xml").content)
    assert [e.title for e in whole.entries] == ["Week two", "Week <one> & co"]
    assert [e.id for e in whole.entries] == [f"{base}/archive/{second.id}", f"{base}/archive/{first.id}"]
    assert whole.entries[0].link == f"{base}/archive/{second.id}-week-two"

    # A region's feed: only bulletins with items for it, only its items, with the verse.
    south = feedparser.parse(live_server.client.get("/feeds/south-asia.xml").content)
    assert [e.title for e in south.entries] == ["Week two"]
    text = south.entries[0].content[0].value
    assert "Pray for south-asia in Week two" in text and "Pray for global" not in text
    assert "Seek justice" in text
    assert south.entries[0].link == f"{base}/archive/{second.id}-week-two?regions=south-asia"
    # Ids are stable from one fetch to the next, and differ from the whole feed's.
    again = feedparser.parse(live_server.client.get("/feeds/south-asia.xml").content)
    assert again.entries[0].id == south.entries[0].id != whole.entries[0].id
    assert feedparser.parse(live_server.client.get("/feeds/latin-america.xml").content).entries == []


# --- the emails' "view online" link ---------------------------------------------------------------------
def test_view_online_in_the_email_is_the_archive_page_of_the_subscribers_regions(
    settings: Settings, engine, make_subscriber: MakeSubscriber, publish: Publish, live_server: LiveServer
):
    from email import policy
    from email.parser import BytesParser
    from pathlib import Path

    from newsletter.core.db import session_scope
    from newsletter.sending.dispatcher import Dispatcher
    from newsletter.sending.lifecycle import send_now

    make_subscriber("ada@example.org", regions=["africa", "global"])
    bulletin = publish("Emailed week", BulletinStatus.READY, regions=("africa", "latin-america", "global"))
    with session_scope(engine) as s:
        send_now(s, bulletin.id)
    Dispatcher(settings, engine).run_until_done(bulletin.id, max_wait=0.2)
    [eml] = (Path(settings.OUTBOX_DIR) / f"bulletin-{bulletin.id}").glob("*.eml")
    message = BytesParser(policy=policy.default).parsebytes(eml.read_bytes())
    html = message.get_body(("html",)).get_content()
    text = message.get_body(("plain",)).get_content()
    view = f"{settings.BASE_URL}/archive/{bulletin.id}-emailed-week?regions=africa,global"
    anchors = {a.text_content(): a.get("href") for a in lxml_html.fromstring(html).xpath("//a")}
    assert anchors["View online"] == view and view in text.splitlines()
    assert "/view/" not in html and "/view/" not in text
    # The personal preferences link stays in the email; the page it opens holds none.
    assert "/preferences/" in anchors["Manage your regions"]
    page = live_server.client.get(live_server.local(view))
    assert page.status_code == 200
    assert "Pray for africa in Emailed week" in page.text and "Pray for global in Emailed week" in page.text
    assert "Pray for latin-america" not in page.text
    assert "/preferences/" not in page.text and "ada@example.org" not in page.text
