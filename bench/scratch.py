"""A throw-away database for one benchmark run: a temporary SQLite file, or a new PostgreSQL
database on the server of `NEWSLETTER_TEST_DATABASE_URL` (default: the local one), dropped after."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def scratch_database(kind: str, prefix: str = "bench") -> Iterator[str]:
    """Yield the URL of an empty database (`kind` is "sqlite" or "postgresql"); remove it afterwards."""
    if kind == "sqlite":
        with tempfile.TemporaryDirectory(prefix=f"{prefix}-") as tmp:
            yield f"sqlite:///{tmp}/bench.db"
        return
    base = os.environ.get("NEWSLETTER_TEST_DATABASE_URL", DEFAULT_PG)
    admin_url = sa.make_url(base).set(drivername="postgresql+psycopg")
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin_url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
