"""Send speed: a whole bulletin through the `sendgrid` backend to the fake ESP, beside a naive baseline.

    python bench/send_bench.py [--n 10000 100000 1000000] [--db sqlite|postgresql] [--workers N]
                               [--concurrency 4] [--naive 300]

For each N: a fresh database is seeded in bulk with N active subscribers over random region mixes
(executemany on SQLite, COPY on PostgreSQL: not the CSV importer), the sample bulletin is planned in
this process (`send_now`: the one INSERT … SELECT), then `--workers` processes of
`newsletter worker --until-idle` send it to the fake ESP, which runs as a process of its own and keeps
only delivery ids. Printed per N: recipients/s for planning, for claim+render+send+record (worker start
to exit), and end to end; requests made; duplicates; peak RSS of each worker (`wait4` rusage,
taken by the small launcher `rusage.py`); and the floor on the same machine (`floor`: one read of the
recipient rows plus the same number of recipients as pre-built request bodies streamed to the fake ESP
over as many connections as the workers use) with end to end as a share of it (goal: ≥ 50%).

The baseline (same run, `--naive` recipients): per recipient, render the template, inline the CSS with
premailer and make one API call with one personalization.

Targets (2 cores): ≥ 20,000 recipients/s end to end at 1M on SQLite, and on PostgreSQL with
2 workers; peak RSS ≤ 150 MB and flat from 100k to 1M.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from scratch import scratch_database
from sqlmodel import Session

from newsletter.content.bulletins import load_content, read_bulletin_file, store_bulletin
from newsletter.content.regions import region_ids, seed_regions
from newsletter.content.render import Renderer
from newsletter.content.types import Recipient
from newsletter.core.config import Settings, default_subscribers_dir, get_settings
from newsletter.core.db import make_engine, migrate
from newsletter.core.status import BulletinStatus
from newsletter.esp.sendgrid import SendGridBackend
from newsletter.sending import lifecycle
from newsletter.sending.summary import send_summary
from newsletter.testing.fake_esp import RemoteFakeEsp, spawn_fake_esp

API_KEY = "SG.bench-key"
SECRET = "bench-secret-key-0123456789abcdef"
CHUNK = 50_000


def _rows(n: int, regions: list[int], seed: int = 7) -> Iterator[tuple[tuple[object, ...], list[int]]]:
    rng = random.Random(seed)
    for i in range(1, n + 1):
        email = f"supporter.{i}@example{i % 97}.org"
        yield (
            (i, email, hashlib.sha256(email.encode()).hexdigest(), f"Supporter {i}"),
            rng.sample(regions, rng.randint(1, len(regions))),
        )


def seed(engine: sa.Engine, n: int) -> None:
    """N active subscribers with random region mixes, in bulk."""
    with Session(engine) as session:
        ids = list(region_ids(session).values())
    now = datetime.now(UTC)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if engine.dialect.name == "sqlite":
            stamp = now.strftime("%Y-%m-%d %H:%M:%S.%f")
            subs: list[tuple[object, ...]] = []
            links: list[tuple[int, int]] = []

            def flush() -> None:
                cur.executemany(
                    "INSERT INTO subscriber (id, email, email_hash, name, status, source, created_at, updated_at,"
                    " confirmed_at) VALUES (?, ?, ?, ?, 'active', 'bench', ?, ?, ?)",
                    subs,
                )
                cur.executemany("INSERT INTO subscription (subscriber_id, region_id) VALUES (?, ?)", links)
                subs.clear()
                links.clear()

            cur.execute("BEGIN")
            for row, regions in _rows(n, ids):
                subs.append((*row, stamp, stamp, stamp))
                links.extend((row[0], r) for r in regions)  # type: ignore[misc]
                if len(subs) >= CHUNK:
                    flush()
            flush()
            cur.execute("COMMIT")
        else:
            stamp_pg = now.isoformat()
            with cur.copy(  # type: ignore[attr-defined]
                "COPY subscriber (id, email, email_hash, name, status, source, created_at, updated_at, confirmed_at)"
                " FROM STDIN"
            ) as copy:
                for row, _ in _rows(n, ids):
                    copy.write_row((*row, "active", "bench", stamp_pg, stamp_pg, stamp_pg))
            with cur.copy("COPY subscription (subscriber_id, region_id) FROM STDIN") as copy:  # type: ignore[attr-defined]
                for row, regions in _rows(n, ids):
                    for r in regions:
                        copy.write_row((row[0], r))
            cur.execute("SELECT setval('subscriber_id_seq', %s)", (n,))
            cur.execute("ANALYZE")
            raw.commit()
    finally:
        raw.close()


def worker_env(url: str, fake: RemoteFakeEsp, concurrency: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=url,
        ESP_BACKEND="sendgrid",
        SENDGRID_API_KEY=API_KEY,
        SENDGRID_HOST=fake.url,
        SECRET_KEY=SECRET,
        BATCH_SIZE="1000",
        SEND_CONCURRENCY=str(concurrency),
        LOG_LEVEL="WARNING",
        SCHEDULER_TICK_SECONDS="0.2",
    )
    return env


def run_workers(env: dict[str, str], workers: int, cwd: str) -> list[tuple[int, float]]:
    """Start the workers, wait for all; the peak RSS (KiB) and CPU seconds of each, from `wait4` in
    `rusage.py` (a small launcher: a worker forked from this process would report our RSS as its own)."""
    command = [sys.executable, "-m", "newsletter", "worker", "--until-idle"]
    profile = os.environ.get(
        "SEND_BENCH_PROFILE"
    )  # a folder: each worker runs under py-spy (collapsed stacks)
    procs = []
    for n in range(workers):
        prefix = (
            [
                "py-spy",
                "record",
                "--format",
                "raw",
                "--threads",
                *os.environ.get("SEND_BENCH_PROFILE_ARGS", "").split(),
                "-r",
                "200",
                "-o",
                f"{profile}/worker-{n}.txt",
                "--",
            ]
            if profile
            else []
        )
        out = os.path.join(cwd, f"rusage-{n}.txt")
        launcher = [sys.executable, "-S", str(Path(__file__).with_name("rusage.py")), out]
        procs.append((subprocess.Popen([*launcher, *prefix, *command], env=env, cwd=cwd), out))
    peaks = []
    for p, out in procs:
        if p.wait() != 0:
            raise SystemExit(f"a worker failed with {p.returncode}")
        rss, cpu = Path(out).read_text().split()
        peaks.append((int(rss), float(cpu)))
    return peaks


def one_run(kind: str, n: int, workers: int, concurrency: int, fake: RemoteFakeEsp) -> dict[str, float]:
    fake.reset()
    with scratch_database(kind, "send_bench") as url, tempfile.TemporaryDirectory() as cwd:
        settings = get_settings(
            DATABASE_URL=url, SECRET_KEY=SECRET, ESP_BACKEND="sendgrid", SENDGRID_API_KEY=API_KEY
        )
        engine = make_engine(settings.DATABASE_URL)
        migrate(engine)
        with Session(engine) as session:
            seed_regions(session, settings)
            session.commit()
        t0 = time.perf_counter()
        seed(engine, n)
        seeded = time.perf_counter() - t0
        content = read_bulletin_file(default_subscribers_dir() / "sample-bulletin.txt", settings)
        with Session(engine) as session:
            bulletin = store_bulletin(session, content, status=BulletinStatus.READY)
            session.commit()
            bulletin_id = bulletin.id
        assert bulletin_id is not None

        t1 = time.perf_counter()
        with Session(engine) as session:
            planned = lifecycle.send_now(session, bulletin_id)
            session.commit()
        plan_s = time.perf_counter() - t1

        t2 = time.perf_counter()
        peaks = run_workers(worker_env(url, fake, concurrency), workers, cwd)
        send_s = time.perf_counter() - t2

        with Session(engine) as session:
            summary = send_summary(session, bulletin_id)
        stats = fake.stats()
        floor_s = floor(engine, settings, fake, bulletin_id, planned, workers * concurrency)
        engine.dispose()
    assert summary.status == "sent" and summary.sent == planned, summary.line()
    return {
        "floor_s": floor_s,
        "n": n,
        "planned": planned,
        "seed_s": seeded,
        "plan_s": plan_s,
        "send_s": send_s,
        "requests": stats["requests"],
        "accepted": stats["accepted"],
        "duplicates": stats["duplicate_delivery_ids"],
        "peak_rss_mb": max(rss for rss, _ in peaks) / 1024,
        "worker_cpu_s": sum(cpu for _, cpu in peaks),
        "variants": len(summary.variants),
    }


def floor(
    engine: sa.Engine, settings: Settings, fake: RemoteFakeEsp, bulletin_id: int, n: int, streams: int
) -> float:
    """Seconds for the least any send of `n` recipients must do on this machine: one read of the
    recipient rows, and `n` recipients' worth of request bodies, built beforehand (one real 1000-recipient
    body, posted n/1000 times), streamed to the fake ESP over `streams` connections at once."""
    s = settings.model_copy(update={"SENDGRID_HOST": fake.url})
    with Session(engine) as session:
        content = load_content(session, bulletin_id)
    variant = Renderer(s).variant(content, content.region_codes)
    backend = SendGridBackend(s)
    sample = [Recipient(f"floor.{i}@example.org", f"Floor {i}", i, i, bulletin_id) for i in range(1, 1001)]
    body, _ = backend.body(variant, sample)
    requests = -(-n // len(sample))
    start = time.perf_counter()
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT d.id, d.variant, s.email, s.name, s.id FROM delivery d JOIN subscriber s"
            " ON s.id = d.subscriber_id WHERE d.bulletin_id = ?"
            if engine.dialect.name == "sqlite"
            else "SELECT d.id, d.variant, s.email, s.name, s.id FROM delivery d JOIN subscriber s"
            " ON s.id = d.subscriber_id WHERE d.bulletin_id = %s",
            (bulletin_id,),
        )
        read = sum(1 for _ in rows)
    assert read == n, (read, n)
    with ThreadPoolExecutor(streams) as pool:
        list(pool.map(lambda _: backend.post(body), range(requests)))
    elapsed = time.perf_counter() - start
    fake.reset()
    return elapsed


def naive(settings: Settings, fake: RemoteFakeEsp, n: int) -> float:
    """Recipients/s when each recipient is rendered, inlined and sent on its own."""
    fake.reset()
    with scratch_database("sqlite", "send_bench") as url:
        s = settings.model_copy(update={"DATABASE_URL": url})
        engine = make_engine(url)
        migrate(engine)
        with Session(engine) as session:
            seed_regions(session, s)
            session.commit()
            content_file = read_bulletin_file(default_subscribers_dir() / "sample-bulletin.txt", s)
            bulletin = store_bulletin(session, content_file, status=BulletinStatus.READY)
            session.commit()
            assert bulletin.id is not None
            content = load_content(session, bulletin.id)
        engine.dispose()
    renderer = Renderer(s)
    backend = SendGridBackend(s)
    rng = random.Random(3)
    codes = list(content.region_codes)
    start = time.perf_counter()
    for i in range(n):
        regions = rng.sample(codes, rng.randint(1, len(codes)))
        # A footer note of its own defeats the per-variant cache: a full render and inline per recipient.
        variant = renderer.variant(dataclasses.replace(content, footer_note=f"#{i}"), regions)
        backend.send(variant, [Recipient(f"naive.{i}@example.org", f"Naive {i}", i, i, content.id)])
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: 1 SQLite, 2 PostgreSQL)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="SEND_CONCURRENCY per worker")
    parser.add_argument("--naive", type=int, default=300, help="recipients for the naive baseline (0: skip)")
    options = parser.parse_args()
    workers = options.workers or (1 if options.db == "sqlite" else 2)

    print(
        f"send bench: {options.db}, {workers} worker process(es) × {options.concurrency} threads, "
        f"batches of 1000, fake ESP in its own process",
        flush=True,
    )
    with spawn_fake_esp("--no-record-bodies", "--api-key", API_KEY) as fake:
        settings = get_settings(
            SECRET_KEY=SECRET, ESP_BACKEND="sendgrid", SENDGRID_API_KEY=API_KEY, SENDGRID_HOST=fake.url
        )
        baseline = naive(settings, fake, options.naive) if options.naive else 0.0
        if baseline:
            print(
                f"naive baseline ({options.naive} recipients: render + premailer + 1 request each): "
                f"{baseline:,.0f} recipients/s",
                flush=True,
            )
        header = (
            f"{'N':>9} {'plan/s':>10} {'send/s':>10} {'end-to-end/s':>13} {'e2e time':>9} {'requests':>9} "
            f"{'dups':>5} {'peak RSS':>9} {'vs naive':>9} {'floor/s':>10} {'of floor':>8}"
        )
        print(header, flush=True)
        for n in options.n:
            r = one_run(options.db, n, workers, options.concurrency, fake)
            total = r["plan_s"] + r["send_s"]
            e2e = r["planned"] / total
            ratio = f"{e2e / baseline:,.0f}×" if baseline else "-"
            floor_rate = r["planned"] / r["floor_s"]
            print(
                f"{n:>9,} {r['planned'] / r['plan_s']:>10,.0f} {r['planned'] / r['send_s']:>10,.0f} {e2e:>13,.0f} "
                f"{total:>8.1f}s {r['requests']:>9,} {r['duplicates']:>5} {r['peak_rss_mb']:>7.0f}MB {ratio:>9}"
                f" {floor_rate:>10,.0f} {e2e / floor_rate:>7.0%}"
                f"   (seeded in {r['seed_s']:.1f}s; {r['planned']:,} planned over {r['variants']} variants;"
                f" worker CPU {r['worker_cpu_s'] / r['planned'] * 1e6:.0f} µs/recipient)",
                flush=True,
            )
    print(f"bench process peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f}MB")


if __name__ == "__main__":
    main()
