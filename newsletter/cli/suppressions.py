"""`newsletter suppressions list|add|remove`: addresses never to be mailed again."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from newsletter.audience import suppressions
from newsletter.audience.subscribers import normalize_email
from newsletter.cli import context
from newsletter.core.errors import NewsletterError
from newsletter.core.status import SuppressionReason

suppressions_app = typer.Typer(
    help="Addresses never to be mailed again (unsubscribes, bounces, complaints, manual, erased).",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.add_typer(suppressions_app, name="suppressions")


def _address(raw: str) -> str:
    try:
        return normalize_email(raw)
    except ValueError as exc:
        raise NewsletterError(f"invalid email {raw!r}: {exc}") from exc


@suppressions_app.command("list")
def list_command(
    reason: Annotated[str | None, typer.Option(help="Only this reason.")] = None,
    limit: Annotated[int, typer.Option(help="Show at most this many, newest first (0 = all).")] = 100,
) -> None:
    """List suppressions, newest first. Erased addresses show as (erased): only their hash is kept."""
    if reason and reason not in {r.value for r in SuppressionReason}:
        raise NewsletterError(
            f"unknown reason {reason!r} (one of {', '.join(r.value for r in SuppressionReason)})"
        )
    with context.session() as session:
        rows = suppressions.list_all(session, reason=reason, limit=limit)
    table = Table("email", "reason", "since", "note")
    for row in rows:
        table.add_row(
            row.email or "(erased)", row.reason, row.created_at.strftime("%Y-%m-%d %H:%M"), row.note
        )
    context.console.print(table)
    context.console.print(f"{len(rows)} suppressions shown")


@suppressions_app.command("add")
def add_command(
    email: Annotated[str, typer.Argument(help="The address to suppress.")],
    reason: Annotated[
        str, context.choice(SuppressionReason, "Why (manual unless you know better).")
    ] = SuppressionReason.MANUAL.value,
    note: Annotated[str, typer.Option(help="A note for the next person.")] = "",
) -> None:
    """Never mail EMAIL again (its subscriber, if any, keeps its status but is skipped by every send)."""
    address = _address(email)
    with context.session() as session:
        added = suppressions.add(session, address, SuppressionReason(reason), note=note)
    context.console.print(
        f"{address} suppressed ({reason})" if added else f"{address} was already suppressed"
    )


@suppressions_app.command("remove")
def remove_command(email: Annotated[str, typer.Argument(help="The address to mail again.")]) -> None:
    """Lift the suppression of EMAIL. An unsubscribed subscriber stays unsubscribed until they confirm again."""
    address = _address(email)
    with context.session() as session:
        lifted = suppressions.remove(session, address)
    context.console.print(f"suppression of {address} ({lifted.reason}) removed")
