"""SMTP speed: this project's `smtp` backend beside django-post-office, on the same aiosmtpd sink.

    .venv/bin/python bench/smtp_peer_bench.py [--n 10000 100000] [--concurrency 4] [--no-peer]

Both systems send the same list (N active subscribers, `supporter.<i>@example<i % 97>.org`, the
sample bulletin with each recipient's name and links) to an aiosmtpd sink running in a process of its
own (a new one per run; it offers PIPELINING, as Postfix does, and counts what it accepted).

- this project: the list seeded in bulk, the bulletin planned (`send_now`), then one
  `newsletter worker --until-idle` process with `ESP_BACKEND=smtp`. Time: plan start to worker exit.
- django-post-office 3.12 (installed on first use in `bench/.peer-venv`, git-ignored): an EmailTemplate
  holding the same rendered bulletin (its placeholders as Django variables), the list queued with
  `send_many(render_on_delivery=True)`, then `send_queued_mail_until_done()`. Time: queue start to end.

Printed per N: seconds and messages/s of each, the ratio, and CPU per message of the sending process
(user + system, from `wait4`; start-up included, and also shown without it: the CPU of the same worker
started with nothing to send). Targets: ratio ≥ 2 at 10k and 100k, ≤ 0.5 ms CPU per
message in our worker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scratch import scratch_database
from send_bench import SECRET, seed
from sqlmodel import Session

from newsletter.content.bulletins import read_bulletin_file, store_bulletin
from newsletter.content.regions import seed_regions
from newsletter.content.render import Renderer
from newsletter.core.config import default_subscribers_dir, get_settings
from newsletter.core.db import make_engine, migrate
from newsletter.core.status import BulletinStatus
from newsletter.sending import lifecycle
from newsletter.sending.summary import send_summary

HERE = Path(__file__).resolve().parent
PEER_VENV = HERE / ".peer-venv"
PEER_PACKAGE = "django-post-office==3.12.0"
FROM = "bulletin@example.org"

PEER_SCRIPT = r"""
import json, sys, time, os
from pathlib import Path
job = json.loads(Path(sys.argv[1]).read_text())
import django
from django.conf import settings
settings.configure(
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": job["db"]}},
    INSTALLED_APPS=["django.contrib.contenttypes", "post_office"],
    EMAIL_BACKEND="post_office.EmailBackend",
    POST_OFFICE={"BACKENDS": {"default": "django.core.mail.backends.smtp.EmailBackend"},
                 "LOG_LEVEL": 0},
    LOGGING={"version": 1, "disable_existing_loggers": True},
    EMAIL_HOST="127.0.0.1", EMAIL_PORT=job["port"], EMAIL_USE_TLS=False,
    DEFAULT_FROM_EMAIL=job["from"], USE_TZ=True, TIME_ZONE="UTC",
    TEMPLATES=[{"BACKEND": "django.template.backends.django.DjangoTemplates", "APP_DIRS": True}],
)
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from post_office import mail
from post_office.models import Email, EmailTemplate, STATUS
template = EmailTemplate.objects.create(
    name="bulletin", subject=job["subject"], content=job["text"], html_content=job["html"]
)
start = time.perf_counter()
cpu = time.process_time()
n = job["n"]
for first in range(1, n + 1, 1000):
    mail.send_many([
        {"recipients": [f"supporter.{i}@example{i % 97}.org"], "template": template,
         "render_on_delivery": True,
         "context": {"name": f"Supporter {i}", "email": f"supporter.{i}@example{i % 97}.org",
                     "unsubscribe_url": f"{job['base']}/unsubscribe/{i}",
                     "preferences_url": f"{job['base']}/preferences/{i}",
                     "view_url": f"{job['base']}/view/1/{i}"}}
        for i in range(first, min(first + 1000, n + 1))
    ])
mail.send_queued_mail_until_done(lockfile=job["lock"])
print(json.dumps({"seconds": time.perf_counter() - start,
                  "sent": Email.objects.filter(status=STATUS.sent).count()}))
"""


# --- the sink ----------------------------------------------------------------------------------------
class _Counter:
    def __init__(self) -> None:
        self.accepted = 0

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # type: ignore[no-untyped-def]
        session.host_name = hostname
        return [*responses[:-1], "250-PIPELINING", responses[-1]]

    async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
        self.accepted += 1
        return "250 OK"


def run_sink(port: int) -> None:
    """The sink's own process: accept everything, print the count when told to stop (SIGTERM)."""
    from aiosmtpd.controller import Controller

    counter = _Counter()
    controller = Controller(counter, hostname="127.0.0.1", port=port, data_size_limit=0)
    controller.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.new_event_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()
    print(counter.accepted, flush=True)


class Sink:
    def __init__(self) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--sink", str(self.port)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def stop(self) -> int:
        """Messages accepted; the sink's own CPU seconds go to `self.cpu`."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.stdout is not None
        out = self.proc.stdout.read()
        _, _, usage = os.wait4(self.proc.pid, 0)
        self.proc.returncode = 0
        self.cpu = _cpu(usage)
        return int(out.strip().splitlines()[-1])


def _cpu(usage: object) -> float:
    return float(usage.ru_utime + usage.ru_stime)  # type: ignore[attr-defined]


# --- this project ------------------------------------------------------------------------------------
def run_ours(n: int, concurrency: int) -> tuple[float, float, int]:
    """(seconds, worker CPU seconds, messages the sink accepted)."""
    sink = Sink()
    with scratch_database("sqlite", "smtp_peer") as url, tempfile.TemporaryDirectory() as cwd:
        settings = get_settings(DATABASE_URL=url, SECRET_KEY=SECRET, ESP_BACKEND="outbox")
        engine = make_engine(url)
        migrate(engine)
        with Session(engine) as session:
            seed_regions(session, settings)
            session.commit()
        seed(engine, n)
        content = read_bulletin_file(default_subscribers_dir() / "sample-bulletin.txt", settings)
        with Session(engine) as session:
            bulletin = store_bulletin(session, content, status=BulletinStatus.READY)
            session.commit()
            bulletin_id = bulletin.id
        assert bulletin_id is not None
        env = dict(os.environ)
        env.update(
            DATABASE_URL=url,
            SECRET_KEY=SECRET,
            ESP_BACKEND="smtp",
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(sink.port),
            SMTP_STARTTLS="false",
            FROM_EMAIL=FROM,
            SEND_CONCURRENCY=str(concurrency),
            LOG_LEVEL="WARNING",
            SCHEDULER_TICK_SECONDS="0.2",
        )
        worker = [sys.executable, "-m", "newsletter", "worker", "--until-idle"]
        # The same worker with nothing to send: its start-up (imports, settings, connecting) and shutdown.
        _, status, idle_usage = os.wait4(subprocess.Popen(worker, env=env, cwd=cwd).pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("the idle worker failed")
        start = time.perf_counter()
        with Session(engine) as session:
            planned = lifecycle.send_now(session, bulletin_id)
            session.commit()
        _, status, usage = os.wait4(subprocess.Popen(worker, env=env, cwd=cwd).pid, 0)
        seconds = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit("the worker failed")
        with Session(engine) as session:
            summary = send_summary(session, bulletin_id)
        engine.dispose()
    accepted = sink.stop()
    startup = _cpu(idle_usage)
    print(
        f"  (sink CPU for our run: {sink.cpu / n * 1e3:.2f} ms/msg; worker start-up {startup:.2f} s CPU,"
        f" without it {(_cpu(usage) - startup) / n * 1e3:.2f} ms/msg)",
        flush=True,
    )
    assert planned == n and summary.sent == n and accepted == n, (planned, summary.line(), accepted)
    return seconds, _cpu(usage), accepted


# --- django-post-office ------------------------------------------------------------------------------
def peer_python() -> Path:
    python = PEER_VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", PEER_PACKAGE], check=True)
    return python


def peer_job(n: int, port: int, folder: str) -> dict[str, object]:
    """The same bulletin for django-post-office: our rendered variant, placeholders as Django variables."""
    settings = get_settings(SECRET_KEY=SECRET)
    content = read_bulletin_file(default_subscribers_dir() / "sample-bulletin.txt", settings)
    variant = Renderer(settings).variant(content, content.region_codes)
    html, text = variant.html, variant.text
    for field, ph in variant.html_placeholders.items():
        html = html.replace(ph, "{{ " + field + " }}")
    for field, ph in variant.text_placeholders.items():
        text = text.replace(ph, "{{ " + field + "|safe }}")
    return {
        "n": n,
        "port": port,
        "db": f"{folder}/peer.sqlite3",
        "lock": f"{folder}/send",
        "from": FROM,
        "subject": variant.subject,
        "html": html,
        "text": "{% autoescape off %}" + text + "{% endautoescape %}",
        "base": settings.BASE_URL.rstrip("/"),
    }


def run_peer(n: int) -> tuple[float, float, int]:
    """(seconds, CPU seconds of the peer's process, messages the sink accepted)."""
    sink = Sink()
    python = peer_python()
    with tempfile.TemporaryDirectory(prefix="smtp_peer-") as folder:
        job = Path(folder) / "job.json"
        job.write_text(json.dumps(peer_job(n, sink.port, folder)))
        script = Path(folder) / "peer.py"
        script.write_text(PEER_SCRIPT)
        proc = subprocess.Popen([str(python), str(script), str(job)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        out = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit("django-post-office failed")
        result = json.loads(out.strip().splitlines()[-1])
    accepted = sink.stop()
    print(f"  (sink CPU for the peer's run: {sink.cpu / n * 1e3:.2f} ms/msg)", flush=True)
    assert result["sent"] == n and accepted == n, (result, accepted)
    return float(result["seconds"]), _cpu(usage), accepted


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--concurrency", type=int, default=4, help="SEND_CONCURRENCY of our worker")
    parser.add_argument("--no-peer", action="store_true", help="only this project")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.sink:
        run_sink(options.sink)
        return
    print(f"SMTP peer bench: aiosmtpd sink in its own process, {os.cpu_count()} cores", flush=True)
    header = (
        f"{'N':>8} {'ours s':>8} {'ours msg/s':>10} {'CPU/msg':>8} "
        f"{'peer s':>8} {'peer msg/s':>10} {'CPU/msg':>8} {'ratio':>6}"
    )
    print(header, flush=True)
    for n in options.n:
        ours_s, ours_cpu, ours_sink = run_ours(n, options.concurrency)
        line = f"{n:>8,} {ours_s:>8.1f} {n / ours_s:>10,.0f} {ours_cpu / n * 1e3:>6.2f}ms"
        print(f"  (ours: {line.strip()}; load average {os.getloadavg()[0]:.1f})", flush=True)
        if options.no_peer:
            continue
        peer_s, peer_cpu, peer_sink = run_peer(n)
        print(
            f"{line} {peer_s:>8.1f} {n / peer_s:>10,.0f} {peer_cpu / n * 1e3:>6.2f}ms {peer_s / ours_s:>5.1f}×"
            f"   (sink accepted {ours_sink:,} / {peer_sink:,})",
            flush=True,
        )


if __name__ == "__main__":
    main()
