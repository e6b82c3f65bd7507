"""The `newsletter` command line. Each command group lives in its own module and registers itself here.

User mistakes (a `NewsletterError`, invalid settings, a database or disk that refuses) print one line on
stderr and exit 1, without a traceback. Output piped into a reader that stops early (`| head`) ends the
command quietly with status 0, as `cat` and `grep` do. `newsletter send` has more exit statuses (see its help).
Long-running commands show progress on stderr so that stdout stays clean for JSON and CSV.
Commands parse their arguments, call one service function and print its result; they hold no SQL.
May import: every group below it (`core` … `sending`, `accounts`) and `web` (to serve it); never the reverse.
"""

from __future__ import annotations

import os
import select
import sys
from typing import Any, NoReturn

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


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reader has closed it (`| head` read enough). Asked of the
    descriptor itself, so that a broken pipe elsewhere (a socket to the ESP) is still an error."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll (Windows) or no real descriptor (tests)
        return False


class _Group(TyperGroup):
    """Turns a user-facing error from any command (see `one_line`) into one line on stderr, exit 1, and
    a reader that closed standard output into a quiet exit 0."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            if not _stdout_reader_gone():
                self._fail(exc)
            # Python's documented way (signal module, "Note on SIGPIPE"): point stdout at devnull so
            # that the final flush at exit cannot fail again, and stop. The reader has what it wanted.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            raise typer.Exit(code=0) from None
        except (NewsletterError, ValidationError, sa.exc.DBAPIError, OSError) as exc:
            self._fail(exc)

    @staticmethod
    def _fail(exc: BaseException) -> NoReturn:
        """One line on stderr and exit 1 for a user-facing error; a bug keeps its traceback."""
        line = one_line(exc)
        if line is None:
            raise exc
        err_console.print(f"[red]error:[/red] {escape(line)}", soft_wrap=True, markup=True, highlight=False)
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
