"""`newsletter regions list`."""

from __future__ import annotations

import typer
from rich.table import Table

from newsletter.audience.queries import active_subscribers_per_region
from newsletter.cli import context

regions_app = typer.Typer(help="The regions a bulletin is grouped by.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.add_typer(regions_app, name="regions")


@regions_app.command("list")
def list_regions() -> None:
    """List regions in display order, with how many active subscribers receive each."""
    with context.session() as session:
        rows = active_subscribers_per_region(session)
    table = Table("code", "name", "active subscribers")
    for code, name, n in rows:
        table.add_row(code, name, str(n))
    context.console.print(table)
