"""Engagement report and public archive speed, each beside a baseline measured in the same run.

    .venv/bin/python bench/report_bench.py [--deliveries 1000000] [--events 3000000] [--db sqlite|postgresql]

On a fresh database: 12 sent bulletins; the last one with `--deliveries` deliveries over every region
mix and `--events` SendGrid events (delivered, opens with repeats, clicks on the items' links, a few
bounces, complaints and unsubscribes), stored as the webhook stores them; rollups built by
`engagement.rebuild` (what the webhook keeps up to date event by event).

- report:    `build_report` (totals, regions, variants, links, 12-bulletin trend), median of 7 warm runs;
  baseline:  the same totals aggregated from `delivery_event` on every call (what a report without
             rollups costs): one `COUNT(DISTINCT delivery_id)` per event type over the bulletin's events.
- archive:   GET /archive/{id} and each feed over HTTP on uvicorn, warm, median of 50 requests;
  baseline:  GET /healthz on the same server (the floor of one request through the stack).

Targets: report ≤ 300 ms; each archive page and feed ≤ 20 ms warm.
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn
from scratch import scratch_database
from sqlmodel import Session

from newsletter.content.bulletins import parse_bulletin, store_bulletin
from newsletter.content.regions import seed_regions
from newsletter.core.config import get_settings
from newsletter.core.db import make_engine, migrate
from newsletter.core.dialect import insert_many
from newsletter.core.models import BULLETIN, DELIVERY, DELIVERY_EVENT
from newsletter.core.status import BulletinStatus
from newsletter.sending import engagement
from newsletter.sending.report import build_report
from newsletter.web.app import create_app

CODES = ["africa", "latin-america", "south-asia", "southeast-asia", "global"]
LINKS = {code: f"https://example.org/{code}/story" for code in CODES}
CHUNK = 100_000


def bulletin_text(title: str) -> str:
    parts = [title, "", '"Let justice roll on like a river."', "", "- Amos 5:24", ""]
    names = ["Africa", "Latin America", "South Asia", "Southeast Asia", "HQ & Global Partners"]
    for code, name in zip(CODES, names, strict=True):
        parts += [name, "", f"Pray for the [work in {name}]({LINKS[code]}).", "", "Pray for the teams.", ""]
    return "\n".join(parts)


def mixes() -> list[str]:
    out = []
    for mask in range(1, 32):
        out.append(",".join(c for i, c in enumerate(CODES) if mask & (1 << i)))
    return out


def make_bulletins(engine: sa.Engine, settings: Any) -> int:
    """12 sent bulletins a week apart; returns the newest one's id."""
    now = datetime.now(UTC)
    with Session(engine) as session:
        seed_regions(session, settings)
        last = 0
        for week in range(12):
            content = parse_bulletin(bulletin_text(f"Week {week + 1}"), settings)
            bulletin = store_bulletin(session, content, status=BulletinStatus.SENT)
            bulletin.started_at = now - timedelta(days=7 * (11 - week))
            session.add(bulletin)
            session.flush()
            last = int(bulletin.id or 0)
        session.commit()
    return last


def fill(engine: sa.Engine, bulletin_id: int, deliveries: int, events: int) -> None:
    """Deliveries (COPY on PostgreSQL) and events in the shape the webhook stores them."""
    rng = random.Random(5)
    variants = mixes()
    with engine.begin() as conn:
        first = int(conn.execute(sa.select(sa.func.coalesce(sa.func.max(DELIVERY.c.id), 0))).scalar_one()) + 1
        for start in range(0, deliveries, CHUNK):
            rows = [
                {
                    "bulletin_id": bulletin_id,
                    "variant": rng.choice(variants),
                    "status": "delivered",
                    "attempts": 1,
                    "last_error": "",
                }
                for _ in range(start, min(deliveries, start + CHUNK))
            ]
            insert_many(conn, DELIVERY, rows)
    kinds = ["delivered"] * 30 + ["open"] * 55 + ["click"] * 12 + ["bounce", "spamreport", "unsubscribe"]
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for start in range(0, events, CHUNK):
            rows = []
            for n in range(start, min(events, start + CHUNK)):
                did = first + rng.randrange(deliveries)
                kind = rng.choice(kinds)
                payload: dict[str, Any] = {
                    "event": kind,
                    "sg_event_id": f"e{n}",
                    "timestamp": 1_800_000_000 + n,
                    "delivery_id": str(did),
                }
                if kind == "click":
                    payload["url"] = LINKS[rng.choice(CODES)]
                rows.append(
                    {
                        "esp_event_id": f"e{n}",
                        "delivery_id": did,
                        "event": kind,
                        "occurred_at": now,
                        "received_at": now,
                        "payload": json.dumps(payload),
                    }
                )
            insert_many(conn, DELIVERY_EVENT, rows)
            print(f"  {min(events, start + CHUNK):,} events stored", file=sys.stderr, end="\r")
    print(file=sys.stderr)


def timed(fn: Callable[[], object], runs: int) -> float:
    """Median wall time of `runs` calls, in milliseconds (after one warm-up call)."""
    fn()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def baseline_totals(engine: sa.Engine, bulletin_id: int) -> dict[str, int]:
    e, d = DELIVERY_EVENT, DELIVERY
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(e.c.event, sa.func.count(sa.distinct(e.c.delivery_id)))
            .join(d, d.c.id == e.c.delivery_id)
            .where(d.c.bulletin_id == bulletin_id)
            .group_by(e.c.event)
        ).all()
    return {str(k): int(n) for k, n in rows}


def serve(settings: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    return server, thread, f"http://127.0.0.1:{sock.getsockname()[1]}"


def run(kind: str, deliveries: int, events: int) -> None:
    with scratch_database(kind, "report_bench") as url:
        settings = get_settings(DATABASE_URL=url, SECRET_KEY="bench-secret-key-0123456789abcdef")
        engine = make_engine(settings.DATABASE_URL)
        migrate(engine)
        bulletin_id = make_bulletins(engine, settings)
        started = time.perf_counter()
        fill(engine, bulletin_id, deliveries, events)
        print(
            f"[{kind}] stored {deliveries:,} deliveries and {events:,} events in {time.perf_counter() - started:.0f} s"
        )
        started = time.perf_counter()
        with Session(engine) as session:
            engagement.rebuild(session)
            session.commit()
        print(f"[{kind}] rollups rebuilt from the stored events in {time.perf_counter() - started:.1f} s")
        if kind == "sqlite":  # fold the bulk load's write-ahead log into the file, as a running site has
            with engine.connect() as conn:
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")

        def report() -> object:
            with Session(engine) as session:
                return build_report(session, settings, bulletin_id)

        report_ms = timed(report, 7)
        totals = report().totals.counts  # type: ignore[attr-defined]
        print(f"[{kind}] report:   {report_ms:8.1f} ms  (target <= 300)   totals {totals}", flush=True)
        baseline_ms = timed(lambda: baseline_totals(engine, bulletin_id), 3)
        print(
            f"[{kind}] baseline: {baseline_ms:8.1f} ms  (the totals alone, aggregated from delivery_event per call)"
        )

        server, thread, base = serve(settings)
        with httpx.Client(base_url=base) as client:
            with engine.connect() as conn:
                title = conn.execute(
                    sa.select(BULLETIN.c.title).where(BULLETIN.c.id == bulletin_id)
                ).scalar_one()
            pages = [
                f"/archive/{bulletin_id}",
                f"/archive/{bulletin_id}?regions=africa,global",
                "/archive",
                "/feed.xml",
            ]
            pages += [f"/feeds/{code}.xml" for code in CODES]
            floor = timed(lambda: client.get("/healthz"), 50)
            print(f"[{kind}] baseline: {floor:8.2f} ms  GET /healthz")
            for page in pages:
                ms = timed(lambda page=page: client.get(page).raise_for_status(), 50)
                print(f"[{kind}] {ms:8.2f} ms  GET {page}  (target <= 20)")
            assert title
        server.should_exit = True
        thread.join(timeout=10)
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--events", type=int, default=3_000_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    args = parser.parse_args()
    for kind in ["sqlite", "postgresql"] if args.db == "both" else [args.db]:
        run(kind, args.deliveries, args.events)


if __name__ == "__main__":
    main()
