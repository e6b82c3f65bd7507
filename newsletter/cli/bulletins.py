"""`newsletter bulletins import|list|show` (the send-path commands add schedule, pause, resume, cancel)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from newsletter.cli import context
from newsletter.content import bulletins
from newsletter.core.status import BulletinStatus

bulletins_app = typer.Typer(help="Import, inspect and schedule bulletins.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(bulletins_app, name="bulletins")


def local_time(value: object) -> str:
    """A stored UTC time shown in `TIMEZONE`, or an empty string."""
    from datetime import datetime

    if not isinstance(value, datetime):
        return ""
    return value.astimezone(context.settings().tz).strftime("%Y-%m-%d %H:%M %Z")


@bulletins_app.command("import")
def import_command(
    file: Annotated[Path, typer.Argument(help="Bulletin in the text format or Markdown.")],
    send_at: Annotated[
        str | None, typer.Option("--send-at", help="ISO-8601 time to send it (TIMEZONE if no offset).")
    ] = None,
    ready: Annotated[
        bool, typer.Option("--ready", help="Mark it ready for the next scheduled slot.")
    ] = False,
    subject: Annotated[str | None, typer.Option(help="Email subject (default: the title).")] = None,
) -> None:
    """Import a bulletin from a file. Nothing is stored if any line cannot be read."""
    settings = context.settings()
    content = bulletins.read_bulletin_file(file, settings)
    if subject:
        from dataclasses import replace

        content = replace(content, subject=subject.strip())
    when = bulletins.parse_send_at(send_at, settings) if send_at else None
    status = BulletinStatus.READY if ready else BulletinStatus.DRAFT
    with context.session() as session:
        bulletin = bulletins.store_bulletin(session, content, status=status, send_at=when)
    items = sum(len(s.items) for s in content.sections)
    regions = ", ".join(f"{s.region_code} {len(s.items)}" for s in content.sections)
    when_text = f", sends {local_time(when)}" if when else ""
    context.console.print(
        f"bulletin {bulletin.id} imported ({status}{when_text}): {content.title!r}, {items} items ({regions})"
    )
    if status == BulletinStatus.READY and when is None:
        _warn_about_slot(bulletin.id)


def _warn_about_slot(bulletin_id: int | None) -> None:
    """One bulletin per schedule slot: say so when another one already holds the next."""
    from newsletter.sending.slots import slot_plan

    assert bulletin_id is not None
    with context.session() as session:
        warning = slot_plan(session, context.settings(), bulletin_id).warning(bulletin_id, context.settings())
    if warning:
        context.err_console.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True)


@bulletins_app.command("list")
def list_command(
    limit: Annotated[int, typer.Option(help="Show at most this many, newest first.")] = 50,
) -> None:
    """List bulletins, newest first."""
    with context.session() as session:
        rows = bulletins.list_bulletins(session, limit)
    table = Table("id", "status", "send at", "items", "title")
    for bulletin, items in rows:
        table.add_row(
            str(bulletin.id), bulletin.status, local_time(bulletin.send_at), str(items), bulletin.title
        )
    context.console.print(table)


@bulletins_app.command("show")
def show_command(
    bulletin_id: Annotated[int, typer.Argument(metavar="ID")],
    as_json: context.JsonFlag = False,
) -> None:
    """Show a bulletin: verse, and items by region in region order."""
    with context.session() as session:
        data = bulletins.describe(session, bulletin_id)
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False, indent=2))
        return
    out = context.console
    out.print(f"[bold]{data['title']}[/bold]  (#{data['id']}, {data['status']})")
    out.print(f"subject: {data['subject']}")
    if data["send_at"]:
        out.print(f"sends: {data['send_at']}")
    if data["scripture"]["text"]:
        out.print(f"\n“{data['scripture']['text']}”\n  — {data['scripture']['reference']}")
    for section in data["sections"]:
        out.print(f"\n[bold]{section['name']}[/bold] ({section['region']})")
        for item in section["items"]:
            out.print(f"  [{item['kind']}] {item['body']}", soft_wrap=True, markup=False)
