"""What every CLI command shares: settings, the database, the console and progress bars.

Commands call `settings()` and `engine()` rather than building their own, so tests can point the
whole CLI at another database through the environment, and so the engine is made once per process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from functools import cache
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy.engine import Engine
from sqlmodel import Session

from newsletter.core.config import Settings, get_settings
from newsletter.core.db import make_engine, open_engine, session_scope

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON (a stable format for scripts).")]
"""The `--json` option of commands whose JSON output scripts rely on."""


def choice(values: type[StrEnum], help: str) -> Any:
    """A typer option taking one value of an enum, as text. A wrong one gets click's plain "'admin' is
    not one of 'staff', 'volunteer'"; an Enum annotation gets pydantic's "Value error, …" in recent Typer."""
    names = [v.value for v in values]

    def check(value: str) -> str:
        if value not in names:
            raise typer.BadParameter(f"{value!r} is not one of " + ", ".join(repr(n) for n in names))
        return value

    return typer.Option(help=help, metavar="|".join(names), callback=check)


console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


@cache
def settings() -> Settings:
    return get_settings()


@cache
def engine() -> Engine:
    """The database `newsletter init` created; "run `newsletter init`" (one line) when there is none."""
    return open_engine(settings().DATABASE_URL)


def creating_engine() -> Engine:
    """An engine that creates the SQLite file if missing: for `newsletter init` only."""
    return make_engine(settings().DATABASE_URL)


def reset() -> None:
    """Forget settings and engine (tests run many CLI invocations in one process)."""
    if engine.cache_info().currsize:
        engine().dispose()
    engine.cache_clear()
    settings.cache_clear()


@contextmanager
def session() -> Iterator[Session]:
    with session_scope(engine()) as s:
        yield s


def warn_about_sender() -> None:
    """Print the settings' sender warnings (no postal address…) on stderr before work that sends."""
    for warning in settings().sender_warnings:
        err_console.print(f"[yellow]warning:[/yellow] {warning}", soft_wrap=True)


def progress(transient: bool = False) -> Progress:
    """A progress bar on stderr, so that stdout stays clean for JSON and CSV output."""
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=transient,
    )


def configure_logging() -> None:
    logging.basicConfig(
        level=settings().LOG_LEVEL.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
