"""Engagement rollups, kept up to date as ESP events arrive: what the engagement report reads.

    record(session, events)   # called by `apply_events` with the events it stored for the first time
    rebuild(session)          # recompute every rollup from the stored events (after migrating)

Why rollups rather than aggregating `delivery_event` on every report: a bulletin of a million
deliveries collects several million events, and counting distinct recipients per event over them takes
seconds on either database, where the report must answer in well under a second. The rollups are
three small tables (see `newsletter.core.models`):

    engagement        (delivery, metric): a recipient reached a metric; the key makes it count once
    engagement_count  recipients per (bulletin, variant, metric)
    link_click        clicks and clicking recipients per (bulletin, link)

Counting "first time" through the `engagement` key (`INSERT … ON CONFLICT DO NOTHING RETURNING`)
makes the figures independent of duplicates, replays, arrival order and concurrent webhook batches;
counters only ever grow by what those inserts returned, inside the transaction that stores the events.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session

from newsletter.core.dialect import insert, insert_ignoring_duplicates, one_of
from newsletter.core.models import (
    DELIVERY,
    DELIVERY_EVENT,
    ENGAGEMENT,
    ENGAGEMENT_COUNT,
    LINK_CLICK,
)
from newsletter.esp.sendgrid.events import ENGAGEMENT_OF, Event, clicked_url, parse_events
from newsletter.mail.links import without_token

METRICS = ("delivered", "opened", "clicked", "bounced", "complained", "unsubscribed")
"""The report's figures, in the order it shows them; each counts recipients, never events."""

_LINK_PREFIX = "link:"
_REBUILD_CHUNK = 5000


def link_key(url: str) -> str:
    """A short fixed-length key for a clicked URL (URLs are too long for a primary key)."""
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


def _first_times(session: Session, pairs: set[tuple[int, str]]) -> set[tuple[int, str]]:
    """Insert (delivery, metric) pairs; returns the pairs that were new."""
    if not pairs:
        return set()
    table = ENGAGEMENT
    stmt = insert_ignoring_duplicates(session, table).returning(table.c.delivery_id, table.c.metric)
    rows = [{"delivery_id": d, "metric": m} for d, m in sorted(pairs)]
    return {(int(d), str(m)) for d, m in session.execute(stmt, rows)}


def _add_counts(session: Session, counts: Counter[tuple[int, str, str]]) -> None:
    if not counts:
        return
    table = ENGAGEMENT_COUNT
    stmt = insert(session, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["bulletin_id", "variant", "metric"], set_={"n": table.c.n + stmt.excluded.n}
    )
    # Sorted: concurrent batches lock the counter rows in one order, so they cannot deadlock.
    rows = [{"bulletin_id": b, "variant": v, "metric": m, "n": n} for (b, v, m), n in sorted(counts.items())]
    session.execute(stmt, rows)


def _add_links(
    session: Session,
    clicks: Counter[tuple[int, str]],
    clickers: Counter[tuple[int, str]],
    urls: dict[str, str],
) -> None:
    if not clicks:
        return
    table = LINK_CLICK
    stmt = insert(session, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["bulletin_id", "link_key"],
        set_={
            "clicks": table.c.clicks + stmt.excluded.clicks,
            "clickers": table.c.clickers + stmt.excluded.clickers,
        },
    )
    rows = [
        {"bulletin_id": b, "link_key": k, "url": urls[k], "clicks": n, "clickers": clickers[(b, k)]}
        for (b, k), n in sorted(clicks.items())
    ]
    session.execute(stmt, rows)


def record(session: Session, events: Iterable[Event]) -> int:
    """Count `events` (each stored for the first time just now) into the rollups; returns how many
    recipient-metric pairs were new. Events of deliveries we do not know are ignored."""
    wanted = [e for e in events if e.delivery_id is not None and e.event in ENGAGEMENT_OF]
    if not wanted:
        return 0
    delivery = DELIVERY
    owner: dict[int, tuple[int, str]] = {
        int(did): (int(bid), str(variant))
        for did, bid, variant in session.execute(
            sa.select(delivery.c.id, delivery.c.bulletin_id, delivery.c.variant).where(
                one_of(session, delivery.c.id, {e.delivery_id for e in wanted})
            )
        )
    }
    pairs: set[tuple[int, str]] = set()
    clicks: Counter[tuple[int, str]] = Counter()
    urls: dict[str, str] = {}
    for e in wanted:
        assert e.delivery_id is not None
        if e.delivery_id not in owner:
            continue
        pairs.add((e.delivery_id, ENGAGEMENT_OF[e.event]))
        url = without_token(clicked_url(e))  # a personal link's token never reaches the report
        if url:
            key = link_key(url)
            urls[key] = url
            clicks[(owner[e.delivery_id][0], key)] += 1
            pairs.add((e.delivery_id, _LINK_PREFIX + key))
    new = _first_times(session, pairs)
    counts: Counter[tuple[int, str, str]] = Counter()
    clickers: Counter[tuple[int, str]] = Counter()
    for did, metric in new:
        bulletin_id, variant = owner[did]
        if metric.startswith(_LINK_PREFIX):
            clickers[(bulletin_id, metric.removeprefix(_LINK_PREFIX))] += 1
        else:
            counts[(bulletin_id, variant, metric)] += 1
    _add_counts(session, counts)
    _add_links(session, clicks, clickers, urls)
    return len(new)


def _stored_clicks(session: Session, after: int) -> Sequence[Any]:
    table = DELIVERY_EVENT
    return session.execute(
        sa.select(table.c.id, table.c.payload)
        .where(table.c.id > after, table.c.delivery_id.is_not(None), table.c.event == "click")
        .order_by(table.c.id)
        .limit(_REBUILD_CHUNK)
    ).all()


def rebuild(session: Session) -> int:
    """Empty the rollups and count every stored event again; returns the recipient-metric pairs found.

    For an installation that stored events before the rollups existed, and as the rollups' own check:
    the result must equal what `record` built as the events arrived. The figures are set-based
    statements over `delivery_event`; only clicks go through `record` (in chunks), for their links.
    """
    for table in (LINK_CLICK, ENGAGEMENT_COUNT, ENGAGEMENT):
        session.execute(sa.delete(table))
    e, d, g = DELIVERY_EVENT, DELIVERY, ENGAGEMENT
    metric = sa.case(*[(e.c.event == name, value) for name, value in ENGAGEMENT_OF.items()])
    pairs = (
        sa.select(e.c.delivery_id, metric)
        .join(d, d.c.id == e.c.delivery_id)
        .where(e.c.event.in_(list(ENGAGEMENT_OF)))
        .distinct()
    )
    session.execute(sa.insert(g).from_select(["delivery_id", "metric"], pairs))
    counts = (
        sa.select(d.c.bulletin_id, d.c.variant, g.c.metric, sa.func.count())
        .join(d, d.c.id == g.c.delivery_id)
        .group_by(d.c.bulletin_id, d.c.variant, g.c.metric)
    )
    session.execute(
        sa.insert(ENGAGEMENT_COUNT).from_select(["bulletin_id", "variant", "metric", "n"], counts)
    )
    after = 0
    while rows := _stored_clicks(session, after):
        after = int(rows[-1][0])
        record(session, parse_events("[" + ",".join(str(payload) for _, payload in rows) + "]"))
    found: int = session.execute(sa.select(sa.func.count()).select_from(g)).scalar_one()
    return found
