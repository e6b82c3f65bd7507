"""Planning speed of a local-time send beside an ordinary send of the same bulletin, in the same run.

    python bench/localtime_bench.py [--n 1000000] [--zones 300] [--db sqlite|postgresql] [--repeat 2]

A fresh database is seeded in bulk with N active subscribers over random region mixes (the send
bench's seeding), spread over `--zones` IANA zones (round robin). Then, `--repeat` times each and
alternating, the sample bulletin is planned as an ordinary send (the baseline: every `not_before` NULL)
and as a local-time send for 07:00 (the same INSERT … SELECT joined to the (zone, due_at) table); the
deliveries are deleted between runs, outside the timing. Printed: the best time of each and the ratio.

Target: the local-time plan within 1.5× of the ordinary one, on both databases, at 1M over 300 zones.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

import sqlalchemy as sa
from scratch import scratch_database
from send_bench import SECRET, seed
from sqlmodel import Session

from newsletter.content.bulletins import read_bulletin_file, store_bulletin
from newsletter.content.regions import seed_regions
from newsletter.core import zones
from newsletter.core.config import default_subscribers_dir, get_settings
from newsletter.core.db import make_engine, migrate
from newsletter.core.models import BULLETIN, DELIVERY, SUBSCRIBER
from newsletter.core.status import BulletinStatus
from newsletter.sending import queries

SLOT = datetime(2026, 11, 30, 7, 0)


def spread_zones(engine: sa.Engine, count: int) -> list[str]:
    """Give subscriber i the zone number i mod `count`, in one UPDATE joined to a small zone table."""
    names = sorted(zones.all_zones())
    step = max(1, len(names) // count)
    chosen = names[::step][:count]
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TEMPORARY TABLE bench_zone (k INTEGER PRIMARY KEY, name VARCHAR(64))")
        conn.execute(
            sa.text("INSERT INTO bench_zone (k, name) VALUES (:k, :name)"),
            [{"k": k, "name": name} for k, name in enumerate(chosen)],
        )
        conn.execute(
            sa.text(
                "UPDATE subscriber SET timezone = (SELECT name FROM bench_zone WHERE k = subscriber.id % :n)"
            ),
            {"n": len(chosen)},
        )
        conn.exec_driver_sql("DROP TABLE bench_zone")
        conn.exec_driver_sql("ANALYZE")
    return chosen


def plan_once(engine: sa.Engine, bulletin_id: int, local: bool, default_zone: str) -> tuple[float, int]:
    with engine.begin() as conn:
        conn.execute(sa.delete(DELIVERY).where(DELIVERY.c.bulletin_id == bulletin_id))
        conn.execute(
            sa.update(BULLETIN)
            .where(BULLETIN.c.id == bulletin_id)
            .values(local_send_at=zones.format_wall(SLOT) if local else None)
        )
    t0 = time.perf_counter()
    with engine.begin() as conn:
        planned = queries.plan(conn, bulletin_id, datetime.now(UTC), default_zone=default_zone)
    return time.perf_counter() - t0, planned


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--zones", type=int, default=300)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--repeat", type=int, default=2)
    options = parser.parse_args()
    with scratch_database(options.db, "localtime_bench") as url:
        settings = get_settings(DATABASE_URL=url, SECRET_KEY=SECRET)
        engine = make_engine(settings.DATABASE_URL)
        migrate(engine)
        with Session(engine) as session:
            seed_regions(session, settings)
            session.commit()
        seed(engine, options.n)
        chosen = spread_zones(engine, options.zones)
        with engine.connect() as conn:
            distinct = conn.execute(sa.select(sa.func.count(sa.distinct(SUBSCRIBER.c.timezone)))).scalar()
        content = read_bulletin_file(default_subscribers_dir() / "sample-bulletin.txt", settings)
        with Session(engine) as session:
            bulletin = store_bulletin(session, content, status=BulletinStatus.READY)
            session.commit()
            assert bulletin.id is not None
            bulletin_id = bulletin.id
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(options.repeat):
            for local in (False, True):
                seconds, planned = plan_once(engine, bulletin_id, local, settings.TIMEZONE)
                assert planned == options.n, planned
                times[local].append(seconds)
        engine.dispose()
    plain, local = min(times[False]), min(times[True])
    print(
        f"planning bench: {options.db}, {options.n:,} subscribers over {distinct} zones ({len(chosen)} asked)"
    )
    print(f"  ordinary send (baseline): {plain:8.2f} s  {options.n / plain:>12,.0f} deliveries/s")
    print(f"  local-time send (07:00):  {local:8.2f} s  {options.n / local:>12,.0f} deliveries/s")
    print(f"  ratio local/ordinary:     {local / plain:8.2f}   (target ≤ 1.50)")
    print(
        f"  all runs: ordinary {[round(t, 2) for t in times[False]]}, local {[round(t, 2) for t in times[True]]}"
    )


if __name__ == "__main__":
    main()
