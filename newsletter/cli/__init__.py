"""The `newsletter` command line. Each command group lives in its own module and registers itself here.

User mistakes (a `NewsletterError`, invalid settings, a database or disk that refuses) print one line on
stderr and exit 1, without a traceback. `newsletter send` has more exit statuses (see its help).
Long-running commands show progress on stderr so that stdout stays clean for JSON and CSV.
Commands parse their arguments, call one service function and print its result; they hold no SQL.
May import: every group below it (`core` … `sending`, `accounts`) and `web` (to serve it); never the reverse.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
import typer
from pydantic import ValidationError
from rich.markup import escape
from typer.core import TyperGroup

from newsletter.cli import (
    bulletins,
    demo,
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


def one_line(exc: BaseException) -> str | None:
    """What a person at the keyboard should read for an error no command handles, or None for a bug
    (which keeps its traceback): invalid settings, a database that refuses, a full or read-only disk."""
    if isinstance(exc, NewsletterError):
        return str(exc)
    if isinstance(exc, ValidationError):
        parts = [
            f"{'.'.join(str(x) for x in e['loc']) or 'settings'}={e.get('input')!r}: {e['msg']}"
            for e in exc.errors()
        ]
        return "invalid setting " + "; ".join(parts)
    if isinstance(exc, sa.exc.DBAPIError):
        text = str(exc.orig).strip()
        return f"the database refused: {text.splitlines()[0] if text else type(exc.orig).__name__}"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}"
    return None


class _Group(TyperGroup):
    """Turns a user-facing error from any command (see `one_line`) into one line on stderr, exit 1."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except (NewsletterError, ValidationError, sa.exc.DBAPIError, OSError) as exc:
            line = one_line(exc)
            if line is None:
                raise
            err_console.print(
                f"[red]error:[/red] {escape(line)}", soft_wrap=True, markup=True, highlight=False
            )
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
demo.register(app)
suppressions.register(app)
web.register(app)
preview.register(app)
users.register(app)
report.register(app)


def main() -> None:
    app()
