"""The `newsletter` command line. Each command group lives in its own module and registers itself here.

User mistakes (a `NewsletterError`) print one line on stderr and exit 1, without a traceback.
Long-running commands show progress on stderr so that stdout stays clean for JSON and CSV.
Commands parse their arguments, call one service function and print its result; they hold no SQL.
May import: every group below it (`core` … `sending`, `accounts`) and `web` (to serve it); never the reverse.
"""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperGroup

from newsletter.cli import (
    bulletins,
    preview,
    regions,
    report,
    sending,
    setup,
    subscribers,
    suppressions,
    users,
    web,
)
from newsletter.cli.context import err_console
from newsletter.core.errors import NewsletterError


class _Group(TyperGroup):
    """Turns a `NewsletterError` from any command into one line on stderr and exit status 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except NewsletterError as exc:
            err_console.print(f"[red]error:[/red] {exc}", soft_wrap=True, markup=True, highlight=False)
            raise typer.Exit(code=1) from exc


app = typer.Typer(
    cls=_Group,
    name="newsletter",
    help="Weekly prayer-bulletin dispatcher: import, render, schedule and send per-region email.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: paragraphs re-flowed to the terminal (rich mode kept the docstrings' source line
    # breaks) and no "<bool>" type shown for flags.
    rich_markup_mode=None,
)

setup.register(app)
regions.register(app)
subscribers.register(app)
bulletins.register(app)
sending.register(app)
suppressions.register(app)
web.register(app)
preview.register(app)
users.register(app)
report.register(app)


def main() -> None:
    app()
