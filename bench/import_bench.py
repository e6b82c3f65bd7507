"""Subscriber CSV import speed: rows/s for a fresh import and a re-import, beside a naive baseline.

    python bench/import_bench.py [--rows 100000] [--db sqlite|postgresql]

The baseline is what the importer would be without its design: full email-validator on every address
and one INSERT per row through the ORM (run on a tenth of the rows and scaled, as it is slow).
Target: 100k rows in ≤ 5 s.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time

import sqlalchemy as sa
from email_validator import validate_email
from scratch import scratch_database
from sqlmodel import Session

from newsletter.audience.subscribers import import_subscribers
from newsletter.content.regions import RegionIndex, region_ids, seed_regions
from newsletter.core.config import get_settings
from newsletter.core.db import make_engine, migrate
from newsletter.core.models import Subscriber, Subscription, email_hash

CODES = ["africa", "latin-america", "south-asia", "southeast-asia", "global"]
NAMES = ["Africa", "Latin America", "South Asia", "Southeast Asia", "HQ & Global Partners"]


def make_csv(rows: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    lines = ["email,name,regions,status"]
    for i in range(rows):
        k = rng.randint(1, 5)
        regions = ";".join(rng.choice([CODES, NAMES])[j] for j in sorted(rng.sample(range(5), k)))
        lines.append(f"Supporter.{i}@Example{i % 97}.org,Supporter Number {i},{regions},active")
    return "\n".join(lines) + "\n"


def fresh(url: str) -> tuple[sa.Engine, RegionIndex]:
    engine = make_engine(url)
    migrate(engine)
    settings = get_settings(DATABASE_URL=url)
    with Session(engine) as s:
        seed_regions(s, settings)
        s.commit()
        index = RegionIndex.from_db(s, settings)
    return engine, index


def timed_import(engine: sa.Engine, index: RegionIndex, text: str) -> tuple[float, float, str]:
    """Wall seconds, CPU seconds of this process (SQLite runs in it), and the import's summary."""
    start, cpu = time.perf_counter(), time.process_time()
    with Session(engine) as s:
        report = import_subscribers(s, text, index)
        s.commit()
    return time.perf_counter() - start, time.process_time() - cpu, report.summary()


def naive(engine: sa.Engine, index: RegionIndex, text: str) -> float:
    """Per row: full validation, one ORM insert and a flush, one insert per subscription."""
    start = time.perf_counter()
    with Session(engine) as s:
        ids = region_ids(s)
        for line in text.splitlines()[1:]:
            email, name, regions, status = line.split(",")
            address = validate_email(email, check_deliverability=False).normalized.lower()
            sub = Subscriber(email=address, email_hash=email_hash(address), name=name, status=status)
            s.add(sub)
            s.flush()
            for part in regions.split(";"):
                s.add(Subscription(subscriber_id=sub.id, region_id=ids[index.resolve(part) or "africa"]))
            s.flush()
        s.commit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    text = make_csv(args.rows)
    load = os.getloadavg()[0]
    with scratch_database(args.db, "import_bench") as url:
        engine, index = fresh(url)
        first, first_cpu, summary = timed_import(engine, index, text)
        again, again_cpu, _ = timed_import(engine, index, text)
        engine.dispose()
    base_rows = max(args.rows // 10, 1)
    with scratch_database(args.db, "import_bench") as url:
        engine, index = fresh(url)
        base = naive(engine, index, make_csv(base_rows, seed=8)) * (args.rows / base_rows)
        engine.dispose()
    print(f"subscriber CSV import, {args.rows:,} rows, {args.db}")
    print(f"load average before the run: {load:.2f} (wall time suffers when the machine is busy)")
    print(f"{'':28}{'wall s':>10}{'rows/s':>12}{'CPU s':>10}")
    print(f"{'import (new rows)':28}{first:>10.2f}{args.rows / first:>12,.0f}{first_cpu:>10.2f}")
    print(f"{'re-import (all unchanged)':28}{again:>10.2f}{args.rows / again:>12,.0f}{again_cpu:>10.2f}")
    print(f"{'naive baseline (scaled)':28}{base:>10.2f}{args.rows / base:>12,.0f}")
    met = "met" if first * 100_000 / args.rows <= 5 else "MISSED"
    print(f"speed-up over baseline: {base / first:.1f}x; target 100k rows <= 5 s: {met}")
    print(f"report: {summary}")


if __name__ == "__main__":
    sys.exit(main())
