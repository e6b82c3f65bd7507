"""Shared fixtures: real databases, settings pointed at them, and factories.

Every test that takes `settings` (or `engine`, `session`) runs once on SQLite and once more on
PostgreSQL: the server `NEWSLETTER_TEST_DATABASE_URL` names, else a local one on 127.0.0.1:5432 if it
answers (set the variable empty for SQLite only). The schema is built by the real
migrations once per run: SQLite copies a migrated template file per test, PostgreSQL gets a private
database for the run (so parallel runs never meet) that is truncated between tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel
from typer.testing import Result

from newsletter.cli import context as cli_context
from newsletter.content.regions import seed_regions
from newsletter.core.config import Settings, get_settings
from newsletter.core.db import make_engine, migrate

pytest_plugins = ["tests.factories", "tests.fixtures_esp", "tests.fixtures_web"]


def _postgres_url() -> str:
    """`NEWSLETTER_TEST_DATABASE_URL` when set (an empty value means SQLite only); otherwise the local
    server that `scripts/test.sh` looks for, so a bare `pytest` runs the same suite as CI."""
    configured = os.environ.get("NEWSLETTER_TEST_DATABASE_URL")
    if configured is not None:
        return configured
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=0.5).close()
    except OSError:
        return ""
    return LOCAL_PG_URL


LOCAL_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_URL = _postgres_url()
BACKENDS = ["sqlite", "postgresql"] if PG_URL else ["sqlite"]
DATA = Path(__file__).parent / "data"
TEST_SECRET = "test-secret-key-0123456789abcdef"

# Settings a developer's shell or .env might carry that would change what the tests exercise.
_ISOLATED_ENV = [
    name
    for name in Settings.model_fields
    if name not in {"DATABASE_URL", "SECRET_KEY", "OUTBOX_DIR", "BASE_URL", "TIMEZONE"}
]


def _psycopg_url(url: str) -> sa.URL:
    parsed = sa.make_url(url)
    return parsed.set(drivername="postgresql+psycopg")


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A private, migrated PostgreSQL database for this test run; dropped at the end."""
    if not PG_URL:
        pytest.skip("NEWSLETTER_TEST_DATABASE_URL is not set")
    admin_url = _psycopg_url(PG_URL)
    name = f"newsletter_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:  # pragma: no cover - CI must have PostgreSQL
        pytest.fail(f"NEWSLETTER_TEST_DATABASE_URL is set but PostgreSQL is unreachable: {exc}")
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "newsletter.core.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database (no regions yet) on each backend."""
    if request.param == "sqlite":
        path = tmp_path / "newsletter.core.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("pg_database")
    engine = sa.create_engine(url)
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"TRUNCATE {tables} RESTART IDENTITY CASCADE")
    engine.dispose()
    return url


def _isolate_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in _ISOLATED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env from the developer's checkout
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("BASE_URL", "http://127.0.0.1:8000")
    monkeypatch.setenv("TIMEZONE", "Europe/London")
    monkeypatch.setenv("ORG_POSTAL_ADDRESS", "1 Example Street, London N1 1AA, United Kingdom")
    cli_context.reset()


@pytest.fixture
def basic_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    """Settings for tests that need no database (rendering, tokens, parsing)."""
    _isolate_env(monkeypatch, tmp_path)
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'unused.db'}")
    yield get_settings()
    cli_context.reset()


@pytest.fixture
def settings(db_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    """Settings pointed at a fresh migrated database with the regions seeded, also in the environment
    (so the CLI and subprocesses see the same database)."""
    _isolate_env(monkeypatch, tmp_path)
    monkeypatch.setenv("DATABASE_URL", db_url)
    settings = get_settings()
    engine = make_engine(settings.DATABASE_URL)
    with Session(engine) as session:
        seed_regions(session, settings)
        session.commit()
    engine.dispose()
    yield settings
    cli_context.reset()


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    engine = make_engine(settings.DATABASE_URL)
    yield engine
    engine.dispose()


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


@pytest.fixture
def cli(settings: Settings) -> Callable[..., Result]:
    """Run the `newsletter` CLI in-process against the test's database: `cli("bulletins", "list")`.
    Asserts the exit code (`code=`, 0 by default) and returns click's result."""
    from typer.testing import CliRunner

    from newsletter.cli import app

    runner = CliRunner()

    def run(*args: str, code: int = 0) -> Result:
        result = runner.invoke(app, list(args))
        assert result.exit_code == code, (result.output, result.exception)
        return result

    return run


@pytest.fixture
def sample_text() -> str:
    """The real bulletin in `tests/data/prayer-bulletin.txt` (as in `subscribers/sample-bulletin.txt`)."""
    return (DATA / "prayer-bulletin.txt").read_text(encoding="utf-8")
