"""`newsletter demo`: try it offline. A fresh SQLite database and outbox, the sample subscribers and
bulletin, scheduled now and sent by the scheduler; then a summary and the command that serves the web
app on the same database and outbox, so every link in the demo's mail can be followed."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.logging import RichHandler
from rich.table import Table
from sqlalchemy.engine import Engine
from sqlmodel import Session

from newsletter.cli import context
from newsletter.core.config import Settings, default_subscribers_dir, get_settings
from newsletter.core.errors import NewsletterError
from newsletter.core.status import BulletinStatus
from newsletter.esp.outbox import DIRECT_DIR
from newsletter.sending.summary import send_summary

DEMO_BULLETIN = "sample-bulletin.txt"
DEMO_SUBSCRIBERS = "sample.csv"
DEMO_DATABASE = "newsletter.db"


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_command)


def _fresh(directory: Path) -> tuple[Path, Path]:
    """The demo's database and outbox under `directory`, emptied (only those two are touched)."""
    directory.mkdir(parents=True, exist_ok=True)
    database = directory / DEMO_DATABASE
    for path in (
        database,
        database.with_name(DEMO_DATABASE + "-wal"),
        database.with_name(DEMO_DATABASE + "-shm"),
    ):
        path.unlink(missing_ok=True)
    outbox = directory / "outbox"
    if outbox.exists():
        shutil.rmtree(outbox)
    return database, outbox


def demo_settings(directory: Path) -> Settings:
    database, outbox = _fresh(directory)
    return get_settings(
        DATABASE_URL=f"sqlite:///{database}",
        OUTBOX_DIR=outbox,
        ESP_BACKEND="outbox",
        SECRET_KEY=os.environ.get("SECRET_KEY") or secrets.token_urlsafe(32),
        SCHEDULER_TICK_SECONDS=0.5,
        # The demo's mail stays in its outbox; bulk-mail law's address is a stand-in unless one is set.
        ORG_POSTAL_ADDRESS=os.environ.get("ORG_POSTAL_ADDRESS") or "1 Example Street, Exampletown",
    )


def _demo_data(engine: Engine, settings: Settings) -> tuple[int, int, str]:
    """The sample subscribers and bulletin in a fresh database, the bulletin due now:
    (bulletin id, subscribers imported, bulletin title)."""
    from newsletter.audience.subscribers import import_subscribers
    from newsletter.content.bulletins import read_bulletin_file, store_bulletin
    from newsletter.content.regions import RegionIndex, seed_regions
    from newsletter.core.db import migrate, session_scope
    from newsletter.core.models import utcnow

    migrate(engine)
    samples = default_subscribers_dir()
    with session_scope(engine) as session:
        seed_regions(session, settings)
        session.flush()
        report = import_subscribers(
            session,
            (samples / DEMO_SUBSCRIBERS).read_text("utf-8-sig"),
            RegionIndex.from_db(session, settings),
            source="demo",
        )
        content = read_bulletin_file(samples / DEMO_BULLETIN, settings)
        bulletin = store_bulletin(session, content, status=BulletinStatus.READY, send_at=utcnow())
        bulletin_id = bulletin.id
    assert bulletin_id is not None
    return bulletin_id, report.created, content.title


def demo_command(
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo database and outbox go.")] = Path(
        "demo"
    ),
    timeout: Annotated[float, typer.Option(help="Give up after this many seconds.")] = 300.0,
) -> None:
    """Try it offline: a fresh SQLite database and outbox, the sample subscribers and bulletin,
    scheduled now and sent by the scheduler; then a summary and where the .eml files are."""
    # What only the demo needs (the scheduler) loads only when it runs.
    from newsletter.core.db import make_engine
    from newsletter.sending.scheduler import SendScheduler

    logging.basicConfig(
        level=logging.WARNING,
        handlers=[RichHandler(console=context.err_console, show_path=False)],
        force=True,
    )
    settings = demo_settings(directory)
    out = context.console
    engine = make_engine(settings.DATABASE_URL)
    bulletin_id, created, title = _demo_data(engine, settings)
    out.print(
        f"demo database {directory / DEMO_DATABASE}: {created} subscribers imported, "
        f"bulletin {bulletin_id} {title!r} scheduled now"
    )

    scheduler = SendScheduler(settings, engine)
    began = time.monotonic()
    scheduler.start()
    try:
        with context.progress(transient=True) as progress:
            task = progress.add_task("sending", total=None)
            while time.monotonic() - began < timeout:
                with Session(engine) as session:
                    summary = send_summary(session, bulletin_id)
                progress.update(task, total=summary.total or None, completed=summary.done)
                if summary.status == BulletinStatus.SENT:
                    break
                time.sleep(0.2)
    finally:
        scheduler.shutdown()
    elapsed = time.monotonic() - began
    engine.dispose()

    variants = Table("regions (variant)", "recipients")
    for variant, n in sorted(summary.variants.items(), key=lambda kv: -kv[1]):
        variants.add_row(variant.replace(",", ", "), str(n))
    out.print(variants)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(summary.counts.items()))
    rate = f", {summary.rate:,.0f} recipients/s" if summary.rate else ""
    out.print(f"bulletin {bulletin_id} {summary.status}: {counts} in {elapsed:.1f}s{rate}")
    folder = Path(settings.OUTBOX_DIR) / f"bulletin-{bulletin_id}"
    files = sorted(folder.glob("*.eml"))
    out.print(f"{len(files)} messages in {folder}/" + (f" (open one: {files[0]})" if files else ""))
    if summary.status != BulletinStatus.SENT:
        raise NewsletterError(f"the demo bulletin is {summary.status}, not sent, after {timeout:.0f}s")
    _print_next_steps(directory, settings)


def _print_next_steps(directory: Path, settings: Settings) -> None:
    """How to follow the links in the demo's messages: the web app and scheduler on the demo's database
    and outbox, so that confirmation emails land beside the bulletin (in `outbox/direct/`)."""
    out = context.console
    env = f"DATABASE_URL={settings.DATABASE_URL} OUTBOX_DIR={settings.OUTBOX_DIR}"
    out.print("\nto follow the links in those messages, serve the demo (mail from the web app lands in")
    out.print(f"{Path(settings.OUTBOX_DIR) / DIRECT_DIR}/):")
    if not os.environ.get("SECRET_KEY"):
        out.print("  (first `export SECRET_KEY=…` and run the demo again: links are signed with it)")
    command = sys.argv[0] if Path(sys.argv[0]).name == "newsletter" else "newsletter"
    out.print(f"  export {env}")
    out.print(f"  {command} users add you@example.org --role staff")
    out.print(
        f"  {command} run     # scheduler and web app: {settings.BASE_URL}/admin for staff, / for the public"
    )


# --- bulletins schedule | pause | resume | cancel -------------------------------------------------------
