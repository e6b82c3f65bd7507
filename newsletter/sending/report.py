"""The engagement report of one bulletin: what staff see in the admin and `newsletter report ID` prints.

    report = build_report(session, settings, bulletin_id)
    report.as_json()      # the stable shape of `newsletter report ID --json`

Figures count recipients, not events: delivered, opened, clicked, bounced, complained and unsubscribed,
each with its rate of delivered; by region (a subscriber of several regions counts in each of them), by
variant (the exact region set a recipient received), clicks per link traced back to the item that holds
the link, and the same figures for the last 12 published bulletins. All of it is read from the rollups
that `newsletter.sending.engagement` keeps (a few hundred rows however large the send), so a report
costs milliseconds. Only totals, never who opened or clicked what.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from newsletter.content import markdown
from newsletter.content.archive import published_at_column
from newsletter.content.bulletins import get_bulletin, load_content
from newsletter.content.regions import RegionIndex
from newsletter.content.types import BulletinContent
from newsletter.core.config import Settings
from newsletter.core.models import BULLETIN, ENGAGEMENT_COUNT, LINK_CLICK
from newsletter.core.status import PUBLISHED_BULLETIN
from newsletter.sending.engagement import METRICS

TREND_LENGTH = 12
ESTIMATE_NOTE = (
    "Open rates are estimates: mail clients that block images hide opens, and Apple Mail Privacy "
    "Protection opens every message it receives, read or not."
)
RATED = tuple(m for m in METRICS if m != "delivered")


@dataclass
class Figures:
    """Recipients per metric, with each one's share of the delivered."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METRICS, 0))

    def add(self, metric: str, n: int) -> None:
        self.counts[metric] = self.counts.get(metric, 0) + n

    def rate(self, metric: str) -> float | None:
        """`metric` as a share of delivered (0..1, 4 decimals), None when nothing was delivered."""
        delivered = self.counts["delivered"]
        return round(self.counts[metric] / delivered, 4) if delivered else None

    def as_json(self) -> dict[str, Any]:
        return {**self.counts, "rates": {m: self.rate(m) for m in RATED}}


@dataclass(frozen=True)
class LinkFigures:
    url: str
    clicks: int
    clickers: int
    region: str | None
    """The region code of the item the link is in; None for a link outside the items."""
    item: int | None
    """The item's number within its region's section, from 1."""
    excerpt: str


@dataclass(frozen=True)
class TrendPoint:
    bulletin_id: int
    title: str
    published_at: datetime | None
    figures: Figures


@dataclass
class Report:
    bulletin_id: int
    title: str
    status: str
    published_at: datetime | None
    totals: Figures
    regions: list[tuple[str, str, Figures]]
    variants: list[tuple[str, Figures]]
    links: list[LinkFigures]
    trend: list[TrendPoint]
    track_opens: bool
    track_clicks: bool
    note: str = ESTIMATE_NOTE

    def as_json(self) -> dict[str, Any]:
        """The contract of `newsletter report ID --json` (scripts rely on it)."""
        return {
            "bulletin": {
                "id": self.bulletin_id,
                "title": self.title,
                "status": self.status,
                "published_at": _iso(self.published_at),
            },
            "totals": self.totals.as_json(),
            "regions": [{"region": c, "name": n, **f.as_json()} for c, n, f in self.regions],
            "variants": [{"variant": v, **f.as_json()} for v, f in self.variants],
            "links": [
                {"url": x.url, "clicks": x.clicks, "clickers": x.clickers, "region": x.region, "item": x.item}
                for x in self.links
            ],
            "trend": [
                {
                    "id": p.bulletin_id,
                    "title": p.title,
                    "published_at": _iso(p.published_at),
                    **p.figures.as_json(),
                }
                for p in self.trend
            ],
            "tracking": {"opens": self.track_opens, "clicks": self.track_clicks},
            "note": self.note,
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _variant_counts(session: Session, bulletin_id: int) -> dict[str, Figures]:
    """Figures per variant (the empty variant: subscribers with no section, who got nothing)."""
    table = ENGAGEMENT_COUNT
    variants: dict[str, Figures] = {}
    for variant, metric, n in session.execute(
        sa.select(table.c.variant, table.c.metric, table.c.n).where(table.c.bulletin_id == bulletin_id)
    ):
        variants.setdefault(str(variant), Figures()).add(str(metric), int(n))
    return variants


def _by_region(variants: dict[str, Figures], index: RegionIndex) -> list[tuple[str, str, Figures]]:
    """Each region's figures: the sum over every variant that includes it, in display order."""
    regions: dict[str, Figures] = {}
    for variant, figures in variants.items():
        for code in filter(None, variant.split(",")):  # the empty variant (no section) has no region
            target = regions.setdefault(code, Figures())
            for metric, n in figures.counts.items():
                target.add(metric, n)
    ordered = [*index.order(regions), *sorted(set(regions) - set(index.codes))]
    return [(code, _region_name(index, code), regions[code]) for code in ordered]


def _region_name(index: RegionIndex, code: str) -> str:
    return dict(index.regions).get(code, code)


def _item_of_link(content: BulletinContent) -> dict[str, tuple[str, int, str]]:
    """Every link of the bulletin's items → (region code, item number in its section, excerpt)."""
    found: dict[str, tuple[str, int, str]] = {}
    for section in content.sections:
        for number, item in enumerate(section.items, start=1):
            for url in markdown.links(item.body):
                found.setdefault(
                    html.unescape(url), (section.region_code, number, markdown.excerpt(item.body, 90))
                )
    return found


def _links(session: Session, content: BulletinContent, bulletin_id: int) -> list[LinkFigures]:
    table = LINK_CLICK
    items = _item_of_link(content)
    rows = session.execute(
        sa.select(table.c.url, table.c.clicks, table.c.clickers)
        .where(table.c.bulletin_id == bulletin_id)
        .order_by(table.c.clickers.desc(), table.c.clicks.desc(), table.c.url)
    ).all()
    out = []
    for url, clicks, clickers in rows:
        region, number, excerpt = items.get(str(url), (None, None, ""))
        out.append(LinkFigures(str(url), int(clicks), int(clickers), region, number, excerpt))
    return out


def _trend(session: Session, bulletin_id: int) -> list[TrendPoint]:
    """The last TREND_LENGTH published bulletins up to this one, oldest first."""
    b = BULLETIN
    published = published_at_column()
    anchor = sa.select(published).where(b.c.id == bulletin_id).scalar_subquery()
    rows = session.execute(
        sa.select(b.c.id, b.c.title, published)
        .where(
            b.c.status.in_([str(s) for s in PUBLISHED_BULLETIN]),
            sa.tuple_(published, b.c.id) <= sa.tuple_(anchor, bulletin_id),
        )
        .order_by(published.desc(), b.c.id.desc())
        .limit(TREND_LENGTH)
    ).all()
    ids = [int(r[0]) for r in rows]
    figures: dict[int, Figures] = {i: Figures() for i in ids}
    if ids:
        t = ENGAGEMENT_COUNT
        for bid, metric, n in session.execute(
            sa.select(t.c.bulletin_id, t.c.metric, sa.func.sum(t.c.n))
            .where(t.c.bulletin_id.in_(ids))
            .group_by(t.c.bulletin_id, t.c.metric)
        ):
            figures[int(bid)].add(str(metric), int(n))
    return [TrendPoint(int(i), str(title), when, figures[int(i)]) for i, title, when in reversed(rows)]


def build_report(session: Session, settings: Settings, bulletin_id: int) -> Report:
    """The whole report of one bulletin (NotFound when there is no such bulletin)."""
    bulletin = get_bulletin(session, bulletin_id)
    content = load_content(session, bulletin_id)
    variants = _variant_counts(session, bulletin_id)
    totals = Figures()
    for figures in variants.values():
        for metric, n in figures.counts.items():
            totals.add(metric, n)
    index = RegionIndex.from_db(session, settings)
    published = bulletin.started_at or bulletin.send_at if bulletin.status in PUBLISHED_BULLETIN else None
    return Report(
        bulletin_id=bulletin_id,
        title=bulletin.title,
        status=bulletin.status,
        published_at=published,
        totals=totals,
        regions=_by_region(variants, index),
        variants=sorted(variants.items(), key=lambda kv: (-kv[1].counts["delivered"], kv[0])),
        links=_links(session, content, bulletin_id),
        trend=_trend(session, bulletin_id),
        track_opens=settings.TRACK_OPENS,
        track_clicks=settings.TRACK_CLICKS,
    )
