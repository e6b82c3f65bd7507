"""Event-loop latency: `/healthz` while the app does CPU work, beside the same work done on the loop.

    .venv/bin/python bench/event_loop_bench.py [--db sqlite|postgresql] [--logins 40] [--csv-mb 11]

Starts the real app on uvicorn in its own process (so the load generator does not share its GIL),
probes `GET /healthz` every 10 ms and reports p50/p95/max of the probes taken while a load runs:

    logins       `--logins` concurrent `POST /admin/login` (argon2: the route runs in the threadpool)
    csv import   one `--csv-mb` MB upload to `/admin/subscribers/import` (dry run; threadpool)

The baseline, in the same run and process, sends the same loads to two bench-only routes that do the
same work inside `async def` on the event loop, as the app did before. Target: p95 ≤ 50 ms under both.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from fastapi import Request  # module level: FastAPI resolves the route's annotations here

sys.path.insert(0, str(Path(__file__).resolve().parent))
from import_bench import make_csv
from scratch import scratch_database

PASSWORD = "bench password 123"
STAFF = "staff@example.org"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def serve(port: int) -> None:
    """The server process: the real app plus the two on-the-loop baseline routes."""
    import uvicorn
    from sqlmodel import Session

    from newsletter.accounts import create_user, password_matches
    from newsletter.audience.subscribers import import_subscribers
    from newsletter.content.regions import RegionIndex, seed_regions
    from newsletter.core.config import get_settings
    from newsletter.core.db import make_engine, migrate
    from newsletter.core.status import Role
    from newsletter.web.app import create_app

    settings = get_settings()
    engine = make_engine(settings.DATABASE_URL)
    migrate(engine)
    with Session(engine) as session:
        seed_regions(session, settings)
        user = create_user(session, STAFF, PASSWORD, Role.STAFF)
        stored_hash = user.password_hash
        session.commit()
    app = create_app(settings, engine)

    @app.post("/bench/argon2-on-loop")
    async def argon2_on_loop() -> dict[str, bool]:
        return {"ok": password_matches(stored_hash, "wrong password")}

    @app.post("/bench/import-on-loop")
    async def import_on_loop(request: Request) -> dict[str, int]:
        text = (await request.body()).decode()
        with Session(engine) as session:
            report = import_subscribers(session, text, RegionIndex.from_db(session, settings), dry_run=True)
            session.rollback()
        return {"created": report.created}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


class Probe:
    """GET /healthz every 10 ms in a thread; latencies in ms with their start times."""

    def __init__(self, url: str) -> None:
        self.client = httpx.Client(base_url=url, timeout=60)
        self.samples: list[tuple[float, float, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            started = time.perf_counter()
            self.client.get("/healthz")
            ended = time.perf_counter()
            self.samples.append((started, ended, (ended - started) * 1000))
            time.sleep(0.01)

    def during(self, load: Callable[[], None]) -> list[float]:
        first = time.perf_counter()
        load()
        last = time.perf_counter()
        time.sleep(0.05)  # let a probe that was waiting on the load finish
        # Every probe that overlapped the load: one blocked through all of it counts too.
        return [ms for start, end, ms in self.samples if start <= last and end >= first]


def logins(url: str, n: int) -> Callable[[], None]:
    clients = [httpx.Client(base_url=url, timeout=120) for _ in range(n)]
    tokens = [_CSRF.search(c.get("/admin/login").text) for c in clients]

    def one(i: int) -> None:
        token = tokens[i]
        assert token is not None
        clients[i].post(
            "/admin/login", data={"email": STAFF, "password": "wrong password", "csrf_token": token[1]}
        )

    return lambda: list(ThreadPoolExecutor(n).map(one, range(n)))


def logins_on_loop(url: str, n: int) -> Callable[[], None]:
    client = httpx.Client(base_url=url, timeout=120, limits=httpx.Limits(max_connections=n))
    return lambda: list(ThreadPoolExecutor(n).map(lambda _: client.post("/bench/argon2-on-loop"), range(n)))


def upload(url: str, text: str) -> Callable[[], None]:
    client = httpx.Client(base_url=url, timeout=600)
    token = _CSRF.search(client.get("/admin/login").text)
    assert token is not None
    assert (
        client.post(
            "/admin/login", data={"email": STAFF, "password": PASSWORD, "csrf_token": token[1]}
        ).status_code
        == 303
    )
    page = client.get("/admin/subscribers/import").text
    csrf = _CSRF.search(page)
    assert csrf is not None

    def run() -> None:
        files = {"file": ("people.csv", text.encode(), "text/csv")}
        answer = client.post(
            "/admin/subscribers/import", files=files, data={"dry_run": "true", "csrf_token": csrf[1]}
        )
        assert answer.status_code == 200, answer.status_code

    return run


def upload_on_loop(url: str, text: str) -> Callable[[], None]:
    client = httpx.Client(base_url=url, timeout=600)
    return lambda: client.post("/bench/import-on-loop", content=text.encode()).raise_for_status() and None


def figures(samples: list[float]) -> str:
    if len(samples) < 2:
        return f"{len(samples)} probes (load too short to measure)"
    p95 = statistics.quantiles(samples, n=20)[-1]
    return f"p50 {statistics.median(samples):7.1f} ms  p95 {p95:7.1f} ms  max {max(samples):7.1f} ms  ({len(samples)} probes)"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--logins", type=int, default=40)
    parser.add_argument("--csv-mb", type=float, default=11.0)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    size = int(args.csv_mb * 1024 * 1024)
    text = make_csv(size // 60)
    text = text[: text.rindex("\n", 0, size) + 1] if len(text) > size else text
    with scratch_database(args.db, "loop_bench") as url:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "bench-secret-key-0123456789abcdef",
               "MAX_UPLOAD_BYTES": str(64 * 1024 * 1024), "MAX_FORM_BYTES": str(64 * 1024 * 1024),
               "LOGIN_MAX_FAILURES": "100000"}  # fmt: skip
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"{base}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the server did not start") from None
                    time.sleep(0.2)
            probe = Probe(base)
            probe.thread.start()
            time.sleep(0.5)
            idle = [ms for _, _, ms in probe.samples]
            load = os.getloadavg()[0]
            print(
                f"{args.db}: /healthz latency ({len(text) / 2**20:.1f} MB CSV, {args.logins} logins, load {load:.1f})"
            )
            print(f"  idle                           {figures(idle)}")
            rows = [
                (f"{args.logins} logins, threadpool", logins(base, args.logins)),
                (f"{args.logins} logins, on the loop", logins_on_loop(base, args.logins)),
                ("CSV import, threadpool", upload(base, text)),
                ("CSV import, on the loop", upload_on_loop(base, text)),
            ]
            for label, load in rows:
                print(f"  {label:<30} {figures(probe.during(load))}", flush=True)
            probe.stop.set()
        finally:
            server.terminate()
            server.wait(10)


if __name__ == "__main__":
    main()
