"""Admin subscriber list at scale: first page, a deep page and searches over HTTP, beside naive SQL.

    .venv/bin/python bench/admin_bench.py [--rows 1000000] [--db sqlite|postgresql] [--repeat 20]

Seeds `--rows` subscribers (random region mixes) in bulk with set-based SQL, starts the real app on
uvicorn (127.0.0.1, a free port), logs in as staff and times each page over HTTP (median and worst of
`--repeat` requests). The baseline runs, on the same database, the queries the list would run without
its design: OFFSET pagination to the same depth and a case-insensitive substring search (`LIKE '%…%'`),
which no b-tree can serve. Target: first page and a search each ≤ 200 ms at 1M subscribers.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import sys
import threading
import time

import httpx
import sqlalchemy as sa
import uvicorn
from scratch import scratch_database
from sqlmodel import Session

from newsletter.accounts import create_user
from newsletter.content.regions import seed_regions
from newsletter.core.config import get_settings
from newsletter.core.db import make_engine, migrate
from newsletter.core.status import Role
from newsletter.web.app import create_app

PASSWORD = "bench password 123"


def seed(engine: sa.Engine, rows: int) -> float:
    """`rows` subscribers named "Supporter <n> <surname>" with 1-5 regions each, by INSERT … SELECT."""
    started = time.perf_counter()
    sqlite = engine.dialect.name == "sqlite"
    numbers = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows) SELECT i FROM n"
        if sqlite
        else "SELECT generate_series(1, :rows) AS i"
    )
    now = "'2025-01-01 00:00:00.000000'" if sqlite else "TIMESTAMPTZ '2025-01-01 00:00:00+00'"
    surname = (
        "(CASE i % 7 WHEN 0 THEN 'Lovelace' WHEN 1 THEN 'Okafor' WHEN 2 THEN 'García' WHEN 3 THEN 'Nguyen' "
        "WHEN 4 THEN 'Sharma' WHEN 5 THEN 'Smith' ELSE 'Mensah' END)"
    )
    concat = "||"
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                f"INSERT INTO subscriber (email, email_hash, name, status, source, created_at, updated_at, confirmed_at) "
                f"SELECT 'supporter' {concat} i {concat} '@example' {concat} (i % 97) {concat} '.org', "
                f"'h' {concat} i, 'Supporter ' {concat} i {concat} ' ' {concat} {surname}, "
                f"CASE WHEN i % 10 = 0 THEN 'unsubscribed' ELSE 'active' END, 'bench', {now}, {now}, {now} "
                f"FROM ({numbers}) AS seq"
            ),
            {"rows": rows},
        )
        # Region r (1..5) for subscriber s when a hash of (s, r) says so, plus always region s % 5 + 1.
        conn.execute(
            sa.text(
                "INSERT INTO subscription (subscriber_id, region_id) "
                "SELECT s.id, r.id FROM subscriber s JOIN region r "
                "ON ((CAST(s.id AS BIGINT) * 7919 + r.id * 104729) % 10 < 4) OR (r.position = s.id % 5)"
            )
        )
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    return time.perf_counter() - started


class Server:
    def __init__(self, settings: object) -> None:
        self.app = create_app(settings)  # type: ignore[arg-type]
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(
            uvicorn.Config(self.app, log_level="warning", lifespan="off", access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.app.state.engine.dispose()


def timed(fn: object, repeat: int) -> tuple[float, float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), max(samples)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()

    with scratch_database(args.db, "admin_bench") as url:
        os.environ.setdefault("SECRET_KEY", "bench-secret-key-0123456789")
        settings = get_settings(DATABASE_URL=url)
        engine = make_engine(settings.DATABASE_URL)
        migrate(engine)
        with Session(engine) as session:
            seed_regions(session, settings)
            create_user(session, "bench@example.org", PASSWORD, Role.STAFF)
            session.commit()
        seconds = seed(engine, args.rows)
        print(f"{args.db}: seeded {args.rows:,} subscribers in {seconds:.1f}s")

        with Server(settings) as server, httpx.Client(base_url=server.url, timeout=60) as client:
            token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/admin/login").text)
            assert token
            client.post(
                "/admin/login",
                data={"email": "bench@example.org", "password": PASSWORD, "csrf_token": token.group(1)},
            )
            first = client.get("/admin/subscribers")
            assert first.status_code == 200 and "supporter" in first.text, first.status_code
            deep_id = args.rows // 10  # ~90% of the way down the newest-first list

            def page(**params: str) -> None:
                answer = client.get("/admin/subscribers", params=params)
                assert answer.status_code == 200 and "/admin/subscribers/" in answer.text, params

            cases = [
                ("first page", {}),
                ("deep page (keyset)", {"after": str(deep_id)}),
                ("first page, region + status", {"region": "south-asia", "status": "active"}),
                ("search email prefix", {"q": f"supporter{args.rows // 2}@"}),
                ("search name prefix", {"q": f"supporter {args.rows // 3} "}),
                ("search name, broad", {"q": "supporter 9"}),
                (
                    "search name, next page",
                    {"q": "supporter 9", "mode": "name", "after": "supporter 99\x1f99"},
                ),
            ]
            print(f"\n{'HTTP (this design)':34} {'median':>9} {'worst':>9}")
            for label, params in cases:
                median, worst = timed(lambda params=params: page(**params), args.repeat)
                flag = "" if median <= 200 else "  (over 200 ms)"
                print(f"  {label:32} {median:7.1f}ms {worst:7.1f}ms{flag}")

        naive = [
            (
                "OFFSET to the same depth",
                "SELECT id, email, name, status FROM subscriber ORDER BY id DESC "
                f"LIMIT 51 OFFSET {args.rows - deep_id}",
            ),
            (
                "substring search LIKE '%…%'",
                "SELECT id, email, name, status FROM subscriber "
                f"WHERE lower(name) LIKE '%supporter {args.rows // 3} %' OR email LIKE '%supporter{args.rows // 3}@%' "
                "ORDER BY id DESC LIMIT 51",
            ),
            ("count(*) for 'page N of M'", "SELECT count(*) FROM subscriber"),
        ]
        print(f"\n{'baseline SQL (no HTTP)':34} {'median':>9} {'worst':>9}")
        with engine.connect() as conn:
            for label, sql in naive:
                median, worst = timed(
                    lambda sql=sql: conn.execute(sa.text(sql)).all(), max(3, args.repeat // 4)
                )
                print(f"  {label:32} {median:7.1f}ms {worst:7.1f}ms")
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
