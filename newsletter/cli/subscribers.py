"""`newsletter subscribers import|list|export|update`."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from newsletter.audience import staff
from newsletter.audience.search import export_rows, listing
from newsletter.audience.subscribers import export_csv, import_subscribers
from newsletter.cli import context
from newsletter.cli.output import is_stdout
from newsletter.content.regions import RegionIndex
from newsletter.core import audit
from newsletter.core.errors import NewsletterError, NotFound
from newsletter.core.status import SubscriberStatus

subscribers_app = typer.Typer(help="Import, list and export subscribers.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(subscribers_app, name="subscribers")


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise NewsletterError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise NewsletterError(f"{path}: line {line}: not valid UTF-8; save the file as UTF-8 CSV") from exc


@subscribers_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="CSV with columns email,name,regions[,status][,timezone]")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Check every row, store nothing.")] = False,
) -> None:
    """Import or update subscribers from CSV. Bad rows are reported by line; the good ones are stored."""
    text = _read_text(file)
    total = max(text.count("\n"), 1)
    with context.progress(transient=True) as bar, context.session() as session:
        task = bar.add_task(f"importing {file.name}", total=total)
        report = import_subscribers(
            session,
            text,
            RegionIndex.from_db(session, context.settings()),
            dry_run=dry_run,
            source=f"import:{file.name}"[:40],
            progress=lambda n: bar.advance(task, n),
        )
        if dry_run:
            session.rollback()
    for problem in report.problems:
        context.err_console.print(
            f"[yellow]{file}:{problem.line}:[/yellow] {problem.message}", soft_wrap=True
        )
    context.console.print(("dry run: " if dry_run else "") + report.summary())
    if report.problems:
        raise typer.Exit(code=1)


def _check_filters(region: str | None, status: str | None) -> str | None:
    if status and status not in {s.value for s in SubscriberStatus}:
        raise NewsletterError(
            f"unknown status {status!r} (one of {', '.join(s.value for s in SubscriberStatus)})"
        )
    if not region:
        return None
    with context.session() as session:
        code = RegionIndex.from_db(session, context.settings()).resolve(region)
    if code is None:
        raise NotFound(f"unknown region {region!r}")
    return code


@subscribers_app.command("list")
def list_command(
    region: Annotated[
        str | None, typer.Option(help="Only subscribers of this region (code or name).")
    ] = None,
    status: Annotated[
        str | None, typer.Option(help="Only this status (pending, active, unsubscribed…).")
    ] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many (0 = all).")] = 50,
) -> None:
    """List subscribers, oldest first, with their regions."""
    code = _check_filters(region, status)
    with context.engine().connect() as conn:
        found = listing(conn, code, status, limit)
    table = Table("id", "email", "name", "status", "regions")
    for row in found.rows:
        table.add_row(str(row.id), row.email, row.name, row.status, ";".join(found.regions.get(row.id, [])))
    context.console.print(table)
    context.console.print(f"{len(found.rows)} of {found.total} subscribers shown")


@subscribers_app.command("export")
def export_command(
    file: Annotated[
        Path | None, typer.Argument(help="Write here instead of standard output ('-' or nothing: stdout).")
    ] = None,
    region: Annotated[str | None, typer.Option(help="Only subscribers of this region.")] = None,
    status: Annotated[str | None, typer.Option(help="Only this status.")] = None,
) -> None:
    """Export subscribers as CSV in the import format (an export imports back unchanged). Writing a
    FILE shows progress on stderr; on standard output it stops quietly when the reader does (`| head`)."""
    code = _check_filters(region, status)
    if file is not None and is_stdout(file):
        file = None  # '-' is standard output, never a file called "-"
    out = file.open("w", newline="", encoding="utf-8") if file else sys.stdout
    counter = [0]
    # A bar only for a file: on standard output the CSV is the output (and often piped on).
    bar = context.progress(transient=True) if file else None

    def counted(rows: Iterator[list[str]]) -> Iterator[list[str]]:
        for row in rows:
            counter[0] += 1
            if bar is not None and counter[0] % 1000 == 0:
                bar.update(task, completed=counter[0] - 1)
            yield row

    try:
        with context.engine().connect() as conn, bar or contextlib.nullcontext():
            if bar is not None:
                task = bar.add_task(f"exporting to {file}", total=listing(conn, code, status, 1).total)
            for chunk in export_csv(counted(export_rows(conn, code, status)), bom=file is not None):
                out.write(chunk)
            if bar is not None:
                bar.update(task, completed=counter[0] - 1)
        count = max(0, counter[0] - 1)  # the header is not a subscriber
    finally:
        if file:
            out.close()
    if file:
        context.console.print(f"{count} subscribers written to {file}")


@subscribers_app.command("update")
def update_command(
    subscriber: Annotated[str, typer.Argument(metavar="ID|EMAIL", help="The subscriber's id or address.")],
    name: Annotated[str | None, typer.Option(help="New display name.")] = None,
    status: Annotated[
        str | None,
        typer.Option(
            help="New status; the lifecycle decides which are allowed (bounced and complained suppress)."
        ),
    ] = None,
    regions: Annotated[
        str | None,
        typer.Option(help="The regions, codes separated by ';' (replaces the current ones; at least one)."),
    ] = None,
    timezone: Annotated[
        str | None,
        typer.Option(help="IANA time zone, e.g. Africa/Nairobi (local-time bulletins arrive then)."),
    ] = None,
) -> None:
    """Change a subscriber's name, status, regions or time zone, as staff do in the admin (same rules,
    audited)."""
    codes = [c.strip() for c in regions.split(";") if c.strip()] if regions is not None else None
    edit = staff.SubscriberEdit(name=name, status=status, regions=codes, timezone=timezone)
    with context.session() as session:
        found = staff.get_subscriber(session, subscriber)
        assert found.id is not None
        changed = staff.update_subscriber(session, found.id, edit, actor=audit.CLI_ACTOR)
        email, now_status = found.email, found.status
    context.console.print(f"{email}: {'updated' if changed else 'nothing to change'} ({now_status})")
