"""SendGrid Event Webhook ingestion speed: signed batches of 1000 events, beside a per-event baseline.

    .venv/bin/python bench/webhook_bench.py [--events 20000] [--batch 1000] [--db sqlite|postgresql]

Three runs, each on a fresh database holding one sent bulletin with a delivery per event pair:
- http:      the real app on uvicorn (loopback), POSTing signed batches: signature check, parse,
             store and apply, commit, answer;
- in-process the same steps without HTTP (`signature_valid` → `parse_events` → `apply_events`);
- baseline:  one event at a time (signature, parse, apply, commit per event), run on a tenth of the
             events: what a webhook that handles events one by one would cost.
Target: >= 5,000 events/s with signature checks, batches of 1000.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import socket
import sys
import threading
import time
import uuid
from typing import Any

import httpx
import sqlalchemy as sa
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from scratch import scratch_database
from sqlmodel import Session

from newsletter.content.regions import seed_regions
from newsletter.core.config import get_settings
from newsletter.core.db import make_engine, migrate
from newsletter.core.models import DELIVERY, SUBSCRIBER, Bulletin, utcnow
from newsletter.esp.sendgrid.events import parse_events
from newsletter.esp.sendgrid.signature import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    load_public_key,
    signature_valid,
)
from newsletter.sending.events import apply_events
from newsletter.web.app import create_app

SECRET = "bench-secret-key-0123456789abcdef"
# A realistic mix: every message is processed and delivered; some are opened and clicked; a few bounce.
MIX = [
    ("processed", 40),
    ("delivered", 38),
    ("open", 15),
    ("click", 4),
    ("deferred", 1.5),
    ("bounce", 1),
    ("spamreport", 0.3),
    ("unsubscribe", 0.2),
]


def fresh(url: str, deliveries: int) -> sa.Engine:
    """A migrated database with `deliveries` subscribers, each with an `accepted` delivery of bulletin 1."""
    engine = make_engine(url)
    migrate(engine)
    settings = get_settings(DATABASE_URL=url)
    now = utcnow()
    with Session(engine) as s:
        seed_regions(s, settings)
        s.add(Bulletin(title="Bench", subject="Bench", status="sent"))
        s.flush()
        s.execute(
            sa.insert(SUBSCRIBER),
            [
                {
                    "email": f"p{i}@example.org",
                    "email_hash": f"{i:064d}",
                    "name": "",
                    "status": "active",
                    "source": "bench",
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(1, deliveries + 1)
            ],
        )
        s.execute(
            sa.insert(DELIVERY),
            [
                {
                    "bulletin_id": 1,
                    "subscriber_id": i,
                    "variant": "africa",
                    "status": "accepted",
                    "attempts": 1,
                }
                for i in range(1, deliveries + 1)
            ],
        )
        s.commit()
    return engine


def make_events(n: int, deliveries: int, seed: int = 3) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    kinds, weights = zip(*MIX, strict=True)
    stamp = int(time.time()) - 3600
    events = []
    for i in range(n):
        d = rng.randint(1, deliveries)
        kind = rng.choices(kinds, weights)[0]
        event: dict[str, Any] = {
            "email": f"p{d}@example.org",
            "timestamp": stamp + i // 100,
            "event": kind,
            "sg_event_id": f"ev-{uuid.uuid4().hex}",
            "sg_message_id": f"m{d}.filter0001",
            "smtp-id": f"<m{d}@example.org>",
            "category": ["bulletin"],
            "delivery_id": str(d),
            "bulletin_id": "1",
        }
        if kind == "bounce":
            event.update(
                type=rng.choice(["bounce", "blocked"]), reason="550 5.1.1 unknown user", status="5.1.1"
            )
        if kind == "click":
            event["url"] = "https://example.org/donate"
        if kind in ("open", "click"):
            event["useragent"] = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X)"
            event["ip"] = "203.0.113.7"
        events.append(event)
    return events


class Signer:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        der = self.key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public = base64.b64encode(der).decode()

    def sign(self, body: bytes) -> tuple[str, str]:
        stamp = str(int(time.time()))
        signature = self.key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode(), stamp


def batches(events: list[dict[str, Any]], size: int) -> list[bytes]:
    return [json.dumps(events[i : i + size]).encode() for i in range(0, len(events), size)]


def run_http(url: str, signer: Signer, bodies: list[bytes]) -> float:
    settings = get_settings(DATABASE_URL=url, SECRET_KEY=SECRET, SENDGRID_WEBHOOK_PUBLIC_KEY=signer.public)
    app = create_app(settings)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", ws="none", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    host, port = sock.getsockname()
    signed = [(body, *signer.sign(body)) for body in bodies]
    with httpx.Client(base_url=f"http://{host}:{port}", timeout=60) as client:
        start = time.perf_counter()
        for body, signature, stamp in signed:
            answer = client.post(
                "/webhooks/sendgrid",
                content=body,
                headers={SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: stamp},
            )
            assert answer.status_code == 200, answer.text
        elapsed = time.perf_counter() - start
    server.should_exit = True
    thread.join()
    app.state.engine.dispose()
    return elapsed


def run_in_process(engine: sa.Engine, signer: Signer, bodies: list[bytes]) -> float:
    key = load_public_key(signer.public)
    signed = [(body, *signer.sign(body)) for body in bodies]
    start = time.perf_counter()
    for body, signature, stamp in signed:
        assert signature_valid(key, signature, stamp, body)
        with Session(engine) as s:
            apply_events(s, parse_events(body))
            s.commit()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--db", choices=["sqlite", "postgresql"], default="sqlite")
    args = parser.parse_args()
    deliveries = max(args.events // 2, 1)
    events = make_events(args.events, deliveries)
    signer = Signer()
    load = os.getloadavg()[0]

    results: dict[str, tuple[int, float]] = {}
    with scratch_database(args.db, "webhook_bench") as url:
        fresh(url, deliveries).dispose()
        results["http, batches"] = (args.events, run_http(url, signer, batches(events, args.batch)))

    with scratch_database(args.db, "webhook_bench") as url:
        engine = fresh(url, deliveries)
        results["in-process, batches"] = (
            args.events,
            run_in_process(engine, signer, batches(events, args.batch)),
        )
        engine.dispose()

    few = events[: max(args.events // 10, 1)]
    with scratch_database(args.db, "webhook_bench") as url:
        engine = fresh(url, deliveries)
        results["baseline: one event at a time"] = (len(few), run_in_process(engine, signer, batches(few, 1)))
        engine.dispose()

    print(f"SendGrid webhook ingestion, {args.events:,} events in batches of {args.batch}, {args.db}")
    print(f"load average before the run: {load:.2f} (wall time suffers when the machine is busy)")
    print(f"{'':34}{'events':>9}{'seconds':>10}{'events/s':>12}")
    for label, (n, seconds) in results.items():
        print(f"{label:34}{n:>9,}{seconds:>10.2f}{n / seconds:>12,.0f}")
    http_rate = args.events / results["http, batches"][1]
    base_n, base_s = results["baseline: one event at a time"]
    print(f"speed-up of batches over the baseline: {http_rate / (base_n / base_s):.1f}x (over HTTP)")
    print(f"target >= 5,000 events/s over HTTP: {'met' if http_rate >= 5000 else 'MISSED'}")


if __name__ == "__main__":
    sys.exit(main())
