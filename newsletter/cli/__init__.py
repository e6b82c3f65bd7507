"""The `newsletter` command line. Each command group lives in its own module and registers itself here.

User mistakes (a `NewsletterError`) print one line on stderr and exit 1, without a traceback.
"""

from __future__ import annotations

import sys

import typer

from newsletter.cli import bulletins, regions, setup, subscribers
from newsletter.cli.context import err_console
from newsletter.errors import NewsletterError

app = typer.Typer(
    name="newsletter",
    help="Weekly prayer-bulletin dispatcher: import, render, schedule and send per-region email.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

setup.register(app)
regions.register(app)
subscribers.register(app)
bulletins.register(app)


def main() -> None:
    try:
        app()
    except NewsletterError as exc:
        err_console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        sys.exit(1)
