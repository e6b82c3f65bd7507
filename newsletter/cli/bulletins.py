"""`newsletter bulletins import|list|show|ready|draft|test-send` and `newsletter bulletins items
add|edit|move|delete` (the send-path commands add schedule, pause, resume, cancel).

Item edits and readiness go through `newsletter.content.items`, as in the admin: the same rules (only an
editable bulletin changes; a bulletin without items is never ready) and the same audit entries.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from newsletter.cli import context
from newsletter.content import bulletins, items
from newsletter.content.render import Renderer
from newsletter.core import audit
from newsletter.core.status import BulletinStatus, ItemKind
from newsletter.sending.test_sends import ALL_VARIANTS, send_test

bulletins_app = typer.Typer(help="Import, inspect and schedule bulletins.", no_args_is_help=True)


items_app = typer.Typer(
    help="Edit the items of a bulletin that has not started sending.", no_args_is_help=True
)
bulletins_app.add_typer(items_app, name="items")

Id = Annotated[int, typer.Argument(metavar="ID", help="The bulletin.")]
ItemId = Annotated[
    int, typer.Argument(metavar="ITEM", help="The item (its id, from `bulletins show --json`).")
]


def register(app: typer.Typer) -> None:
    app.add_typer(bulletins_app, name="bulletins")


def local_time(value: object) -> str:
    """A stored UTC time shown in `TIMEZONE`, or an empty string."""
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


@bulletins_app.command("duplicate")
def duplicate_command(bulletin_id: Annotated[int, typer.Argument(metavar="ID")]) -> None:
    """Copy a bulletin (any status) into a new draft with the same verse and items, for recurring requests."""
    with context.session() as session:
        copy = bulletins.duplicate_bulletin(session, bulletin_id)
        new_id = copy.id
    context.console.print(f"bulletin {new_id} is a new draft copied from bulletin {bulletin_id}")


@bulletins_app.command("list")
def list_command(
    limit: Annotated[int, typer.Option(help="Show at most this many, newest first.")] = 50,
) -> None:
    """List bulletins, newest first."""
    with context.session() as session:
        rows = bulletins.list_bulletins(session, limit)
    table = Table("id", "status", "send at", "items", "title")
    for bulletin, count in rows:
        table.add_row(
            str(bulletin.id), bulletin.status, local_time(bulletin.send_at), str(count), bulletin.title
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


@bulletins_app.command("ready")
def ready_command(bulletin_id: Id) -> None:
    """Mark a draft ready: it goes out at the next slot of the weekly schedule (it needs items)."""
    with context.session() as session:
        items.mark_ready(session, bulletin_id, actor=audit.CLI_ACTOR)
    context.console.print(f"bulletin {bulletin_id} is ready for the next scheduled slot")


@bulletins_app.command("draft")
def draft_command(bulletin_id: Id) -> None:
    """Take a ready bulletin back to draft (it is no longer sent at the next slot)."""
    with context.session() as session:
        items.back_to_draft(session, bulletin_id, actor=audit.CLI_ACTOR)
    context.console.print(f"bulletin {bulletin_id} is a draft again")


@bulletins_app.command("test-send")
def test_send_command(
    bulletin_id: Id,
    to: Annotated[
        str, typer.Option("--to", help="Addresses (commas or spaces); default STAFF_TEST_RECIPIENTS.")
    ] = "",
    variant: Annotated[
        str,
        typer.Option(
            help=f"Region codes separated by commas, or {ALL_VARIANTS!r} for every variant subscribers get."
        ),
    ] = "",
) -> None:
    """Send a test ("[TEST]" in the subject) of a bulletin to staff; recorded as a test, never a delivery."""
    settings = context.settings()
    with context.session() as session:
        report = send_test(
            session,
            settings,
            Renderer(settings),
            bulletin_id,
            to=to,
            variant=variant,
            fallback_to=settings.staff_test_recipients,
        )
    for problem in report.problems:
        context.err_console.print(f"[red]not sent:[/red] {problem}", soft_wrap=True)
    context.console.print(
        f"{report.sent} test message(s) of {len(report.variants)} variant(s) sent to {', '.join(report.addresses)}"
    )
    if report.problems:
        raise typer.Exit(code=1)


@items_app.command("add")
def item_add_command(
    bulletin_id: Id,
    region: Annotated[str, typer.Option(help="The region code the item belongs to.")],
    body: Annotated[str, typer.Option(help="The item's text (Markdown).")],
    kind: Annotated[ItemKind, typer.Option(help="pray or praise.")] = ItemKind.PRAY,
) -> None:
    """Add an item at the end of its region."""
    with context.session() as session:
        item = items.add_item(session, bulletin_id, region, body, kind, actor=audit.CLI_ACTOR)
        item_id = item.id
    context.console.print(f"bulletin {bulletin_id}: item {item_id} added")


@items_app.command("edit")
def item_edit_command(
    bulletin_id: Id,
    item_id: ItemId,
    body: Annotated[str, typer.Option(help="The item's new text (Markdown).")],
    kind: Annotated[ItemKind, typer.Option(help="pray or praise.")] = ItemKind.PRAY,
    region: Annotated[str, typer.Option(help="Move it to this region (code); default: where it is.")] = "",
) -> None:
    """Change an item's text, kind or region."""
    with context.session() as session:
        changed = items.edit_item(
            session, bulletin_id, item_id, body=body, kind=kind, region=region, actor=audit.CLI_ACTOR
        )
    context.console.print(f"bulletin {bulletin_id}: item {item_id} {'saved' if changed else 'unchanged'}")


@items_app.command("move")
def item_move_command(
    bulletin_id: Id,
    item_id: ItemId,
    direction: Annotated[str, typer.Argument(metavar="up|down")],
) -> None:
    """Swap an item with its neighbour in the same region."""
    if direction not in ("up", "down"):
        raise typer.BadParameter("up or down", param_hint="DIRECTION")
    way: items.Direction = "up" if direction == "up" else "down"
    with context.session() as session:
        moved = items.move_item(session, bulletin_id, item_id, way, actor=audit.CLI_ACTOR)
    said = f"moved {way}" if moved else "is already at the end"
    context.console.print(f"bulletin {bulletin_id}: item {item_id} {said}")


@items_app.command("delete")
def item_delete_command(bulletin_id: Id, item_id: ItemId) -> None:
    """Delete an item (the audit log keeps the start of its text)."""
    with context.session() as session:
        items.delete_item(session, bulletin_id, item_id, actor=audit.CLI_ACTOR)
    context.console.print(f"bulletin {bulletin_id}: item {item_id} deleted")
