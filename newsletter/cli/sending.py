"""`newsletter send|check|status|worker|run` and `newsletter bulletins schedule|pause|resume|cancel`.

Exit statuses of `send` (and `worker --until-idle`), so that cron and CI can tell what happened:
0 everyone has a final outcome and none failed; 1 an error (preflight, a bad argument, the send stopped);
2 not finished: paused (the ESP is down, credentials refused…) or stopped by Ctrl-C; 3 finished, but
some recipients failed (`newsletter status ID` lists why; `send ID --retry-failed` queues again those
whose address the ESP did not refuse).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer
from rich.logging import RichHandler
from rich.markup import escape
from rich.table import Table
from sqlmodel import Session

from newsletter.cli import context
from newsletter.cli.bulletins import bulletins_app, local_time
from newsletter.content.bulletins import parse_send_at
from newsletter.core import zones
from newsletter.core.errors import NewsletterError
from newsletter.core.status import BulletinStatus, DeliveryStatus
from newsletter.sending import lifecycle, preflight, queries
from newsletter.sending.dispatcher import Dispatcher
from newsletter.sending.summary import SendSummary, send_summary

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_NOT_FINISHED = 2
EXIT_FAILURES = 3


def register(app: typer.Typer) -> None:
    app.command("send")(send_command)
    app.command("check")(check_command)
    app.command("status")(status_command)
    app.command("worker")(worker_command)
    app.command("run")(run_command)


def _logging_with_progress() -> None:
    """Log lines above the progress bar instead of through it."""
    logging.basicConfig(
        level=context.settings().LOG_LEVEL.upper(),
        format="%(message)s",
        handlers=[RichHandler(console=context.err_console, show_path=False, markup=False)],
        force=True,
    )


@contextmanager
def _stop_on_signals() -> Iterator[threading.Event]:
    """An event set by Ctrl-C or SIGTERM: sending stops after the batches in flight are recorded.
    A second Ctrl-C aborts. The previous handlers come back afterwards."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        context.err_console.print("stopping after the batches in flight (again to abort)…")
        stop.set()

    if threading.current_thread() is not threading.main_thread():
        yield stop  # signals can only be handled in the main thread
        return
    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _print_summary(summary: SendSummary) -> None:
    out = context.console
    out.print(f"[bold]{summary.title}[/bold]  (#{summary.bulletin_id}, {summary.status})")
    table = Table("delivery status", "count")
    for status, n in sorted(summary.counts.items(), key=lambda kv: -kv[1]):
        table.add_row(status, str(n))
    table.add_row("[bold]total[/bold]", f"[bold]{summary.total}[/bold]")
    out.print(table)
    if summary.started_at:
        out.print(f"started {local_time(summary.started_at)}", end="")
        out.print(f", finished {local_time(summary.finished_at)}" if summary.finished_at else "", end="")
        if summary.duration is not None:
            out.print(f", {summary.duration:.1f}s", end="")
        if summary.rate:
            out.print(f", {summary.rate:,.0f} recipients/s", end="")
        out.print()
    if summary.zones:
        zones = Table(f"zone (local time {summary.local_send_at})", "due", "sent", "pending", "total")
        for z in summary.zones:
            zones.add_row(
                z.timezone or "(default)",
                local_time(z.due_at),
                str(z.sent),
                str(z.counts.get("pending", 0)),
                str(z.total),
            )
        out.print(zones)
    if summary.last_error:
        out.print(f"[red]{summary.last_error}[/red]", soft_wrap=True)
    if summary.errors:
        errors = Table("status", "count", "error")
        for e in summary.errors:
            errors.add_row(e.status, str(e.count), e.error)
        out.print(errors)


# --- send, status ---------------------------------------------------------------------------------------


def send_command(
    bulletin_id: Annotated[int, typer.Argument(metavar="ID")],
    yes: Annotated[bool, typer.Option("--yes", help="Send a draft without asking.")] = False,
    retry_failed: Annotated[
        bool,
        typer.Option("--retry-failed", help="Queue a sent bulletin's failed deliveries again and send them."),
    ] = False,
) -> None:
    """Send a bulletin now, with a live progress bar, after checking the whole configuration (nothing
    changes if that fails). Ctrl-C stops after the batches in flight; running the command again (or the
    scheduler) carries on where it stopped.

    Exit status: 0 sent to everyone; 1 error; 2 paused or stopped (not finished); 3 sent, with failures.
    """
    _logging_with_progress()
    settings = context.settings()
    engine = context.engine()
    preflight.require(settings, engine, bulletin_id=bulletin_id)
    context.warn_about_sender()  # after the preflight: a refusal stays one line
    planned = _start(bulletin_id, yes=yes, retry_failed=retry_failed)
    with Session(engine) as session:
        start = send_summary(session, bulletin_id)
    if planned:
        context.err_console.print(f"bulletin {bulletin_id}: {planned} recipients queued")
    with _stop_on_signals() as stop, context.progress() as progress:
        task = progress.add_task(f"bulletin {bulletin_id}", total=start.total, completed=start.done)
        worker = Dispatcher(settings, engine, stop=stop, on_progress=lambda n: progress.advance(task, n))
        result = worker.run_until_done(bulletin_id)
        progress.update(task, completed=result.done)
    _print_summary(result)
    raise typer.Exit(_outcome(result))


def _start(bulletin_id: int, *, yes: bool, retry_failed: bool) -> int:
    """Queue the bulletin's deliveries (retry, or send now; a draft only when confirmed)."""
    if retry_failed:
        with context.session() as session:
            return lifecycle.retry_failed(session, bulletin_id)
    try:
        with context.session() as session:
            return lifecycle.send_now(
                session, bulletin_id, allow_draft=yes, no_section=context.settings().NO_SECTION
            )
    except lifecycle.DraftNeedsConfirmation as exc:
        if not sys.stdin.isatty():
            raise lifecycle.DraftNeedsConfirmation(f"{exc} (no terminal to ask on)") from None
        typer.confirm(f"Bulletin {bulletin_id} is a draft. Send it to every subscriber now?", abort=True)
    with context.session() as session:
        return lifecycle.send_now(
            session, bulletin_id, allow_draft=True, no_section=context.settings().NO_SECTION
        )


def _outcome(result: SendSummary) -> int:
    """The exit status for where the send ended, with one line saying what to do next."""
    out, bid = context.console, result.bulletin_id
    if result.status == BulletinStatus.PAUSED:
        out.print(f"bulletin {bid} is paused with recipients pending; `newsletter send {bid}` resumes it")
        return EXIT_NOT_FINISHED
    if result.status == BulletinStatus.SENDING:
        out.print(f"stopped; run `newsletter send {bid}` to carry on")
        return EXIT_NOT_FINISHED
    if result.status == BulletinStatus.SENT and result.counts.get(DeliveryStatus.FAILED):
        n = result.counts[DeliveryStatus.FAILED]
        with context.engine().connect() as conn:
            retriable = queries.count_retriable(conn, bid)
        if retriable:
            out.print(
                f"{n} recipients failed; `newsletter send {bid} --retry-failed` queues again the "
                f"{retriable} whose address the ESP did not refuse"
            )
        else:
            out.print(
                f"{n} recipients failed: the ESP refused their addresses, so sending again would not "
                f"help; `newsletter status {bid}` lists them"
            )
        return EXIT_FAILURES
    if result.status == BulletinStatus.CANCELLED:
        out.print(f"bulletin {bid} was cancelled; recipients not yet mailed are skipped")
    return EXIT_OK if result.status == BulletinStatus.SENT else EXIT_ERROR


def check_command(
    bulletin_id: Annotated[
        int | None, typer.Option("--bulletin", help="Render this bulletin instead of the sample.")
    ] = None,
    esp: Annotated[bool, typer.Option("--esp/--no-esp", help="Also ask the ESP (sandbox mode).")] = True,
) -> None:
    """Check the whole configuration as `send` does before it starts (keys, BASE_URL, sender, templates,
    database, the ESP with these credentials) and list every problem. Exit 1 if there is any."""
    problems = preflight.run(context.settings(), context.engine(), bulletin_id=bulletin_id, esp=esp)
    for problem in problems:
        context.err_console.print(f"[red]✗[/red] {escape(str(problem))}", soft_wrap=True)
    if problems:
        raise typer.Exit(EXIT_ERROR)
    context.console.print(f"configuration ok ({context.settings().esp_backend} backend)")


def status_command(
    bulletin_id: Annotated[int, typer.Argument(metavar="ID")],
    as_json: context.JsonFlag = False,
) -> None:
    """Where a bulletin's send stands: deliveries per status, duration, rate, errors."""
    with context.session() as session:
        summary = send_summary(session, bulletin_id, default_zone=context.settings().TIMEZONE)
    if as_json:
        typer.echo(json.dumps(summary.as_dict(), ensure_ascii=False, indent=2))
        return
    _print_summary(summary)


# --- long-running ---------------------------------------------------------------------------------------


def worker_command(
    until_idle: Annotated[
        bool,
        typer.Option(
            "--until-idle",
            help="Exit once nothing is due now (no schedule slots), printing when the next delivery falls due.",
        ),
    ] = False,
) -> None:
    """Send: the schedule slots and the tick (lease recovery, due bulletins, the send loop). Run as many
    as you like on PostgreSQL; they share the work."""
    # APScheduler loads only in the commands that schedule: every other command starts faster.
    from newsletter.sending.scheduler import run_scheduler, run_until_idle

    context.configure_logging()
    context.warn_about_sender()
    with _stop_on_signals() as stop:
        if not until_idle:
            run_scheduler(context.settings(), stop, engine=context.engine())
            return
        result = run_until_idle(context.settings(), stop, engine=context.engine())
    if result.next_due is not None:
        context.console.print(
            f"nothing is due now; the next delivery falls due {local_time(result.next_due)}"
        )
    for bulletin_id, why in result.paused:
        context.err_console.print(
            f"bulletin {bulletin_id} is paused, not finished: {why or 'no reason given'}"
        )
    if result.paused:
        raise typer.Exit(EXIT_NOT_FINISHED)


def run_command(
    host: Annotated[str | None, typer.Option(help="Web app address (default WEB_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Web app port (default WEB_PORT).")] = None,
    web: Annotated[
        bool, typer.Option("--web/--no-web", help="Serve the web app beside the scheduler.")
    ] = True,
) -> None:
    """Run the whole service in one process until Ctrl-C: the scheduler (weekly slot, send loop) and
    the web app (supporters' pages, admin, webhooks). `newsletter web` and `newsletter worker` run
    them apart."""
    # The web stack and APScheduler load only in the commands that serve and schedule.
    from newsletter.cli.web import serve, settings_for
    from newsletter.sending.scheduler import run_scheduler

    context.configure_logging()
    context.warn_about_sender()
    settings = context.settings()
    host = host or settings.WEB_HOST
    port = port or settings.WEB_PORT
    if web:  # the scheduler's emails link to the web app this process serves
        settings = settings_for(host, port)
    if not web:
        with _stop_on_signals() as stop:
            run_scheduler(settings, stop, engine=context.engine())
        return
    stop = threading.Event()
    scheduler = threading.Thread(
        target=run_scheduler,
        args=(settings, stop),
        kwargs={"engine": context.engine()},
        name="scheduler",
        daemon=True,
    )
    scheduler.start()

    def exit_cleanly(signum: int, frame: object) -> None:
        raise SystemExit(0)

    # uvicorn handles SIGINT/SIGTERM while it serves, shuts down gracefully, then raises the signal
    # again for the handler it found: this one, so that the scheduler below still stops cleanly.
    previous = signal.signal(signal.SIGTERM, exit_cleanly)
    try:
        serve(settings, host, port)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop.set()
        scheduler.join(timeout=settings.LEASE_SECONDS)


Id = Annotated[int, typer.Argument(metavar="ID")]


@bulletins_app.command("schedule")
def schedule_command(
    bulletin_id: Id,
    at: Annotated[
        str, typer.Option("--at", help="ISO-8601 time (TIMEZONE if no offset), e.g. 2026-11-30T07:00")
    ],
    local: Annotated[
        bool,
        typer.Option(
            "--local",
            help="--at is a wall-clock time (no offset) each subscriber receives in their own time zone.",
        ),
    ] = False,
) -> None:
    """Send a bulletin at a time of its own instead of the next schedule slot (marks it ready). A time
    that has passed is refused: the bulletin would go out at once.

    With --local, `--at 2026-11-30T07:00` reaches everyone at 07:00 their time: it starts when 07:00
    first comes anywhere (UTC+14) and ends when it comes in the last zone (UTC−12).
    """
    if local:
        try:
            wall = zones.parse_wall(at)
        except ValueError as exc:
            raise NewsletterError(str(exc)) from exc
        with context.session() as session:
            lifecycle.schedule_local(session, bulletin_id, wall)
        first, last = zones.first_and_last(wall)
        context.console.print(
            f"bulletin {bulletin_id} will reach each subscriber at {zones.format_wall(wall).replace('T', ' ')} "
            f"their time: the first zone {local_time(first)}, the last {local_time(last)}"
        )
        return
    when = parse_send_at(at, context.settings())
    lifecycle.ensure_future(when)
    with context.session() as session:
        lifecycle.schedule(session, bulletin_id, when)
    context.console.print(f"bulletin {bulletin_id} will be sent {local_time(when)}")


@bulletins_app.command("pause")
def pause_command(bulletin_id: Id) -> None:
    """Stop a ready or sending bulletin; batches already at the ESP are recorded, nothing else is sent."""
    with context.session() as session:
        lifecycle.pause(session, bulletin_id)
    context.console.print(
        f"bulletin {bulletin_id} paused; `newsletter bulletins resume {bulletin_id}` goes on"
    )


@bulletins_app.command("resume")
def resume_command(bulletin_id: Id) -> None:
    """Carry on with a paused bulletin (sending again if it had started, else back to ready)."""
    with context.session() as session:
        settings = context.settings()
        bulletin = lifecycle.resume(
            session, bulletin_id, default_zone=settings.TIMEZONE, no_section=settings.NO_SECTION
        )
        status = bulletin.status
    context.console.print(f"bulletin {bulletin_id} is {status} again")


@bulletins_app.command("cancel")
def cancel_command(bulletin_id: Id) -> None:
    """Cancel a bulletin for good; deliveries not yet sent are skipped."""
    with context.session() as session:
        skipped = lifecycle.cancel(session, bulletin_id)
    context.console.print(f"bulletin {bulletin_id} cancelled; {skipped} deliveries not sent")
