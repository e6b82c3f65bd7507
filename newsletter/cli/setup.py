"""`newsletter init`: create or migrate the database and seed the regions."""

from __future__ import annotations

import typer

from newsletter.cli import context
from newsletter.content.regions import seed_regions
from newsletter.core.db import current_revision, migrate


def register(app: typer.Typer) -> None:
    app.command("init")(init)


def init() -> None:
    """Create or migrate the database and seed the regions. Safe to run again at any time."""
    engine = context.creating_engine()
    before = current_revision(engine)
    migrate(engine)
    after = current_revision(engine)
    engine.dispose()
    with context.session() as session:
        added = seed_regions(session, context.settings())
    url = context.engine().url.render_as_string(hide_password=True)
    state = "created" if before is None else ("migrated" if before != after else "up to date")
    context.console.print(f"database {state} at revision {after} ({url}); {added} regions added")
