"""Preflight: the whole configuration checked before any state changes.

    problems = preflight.run(settings, engine, bulletin_id=7)    # [] when everything is in order
    preflight.require(settings, engine, bulletin_id=7)           # or raise PreflightFailed (one line)

`newsletter send` runs it before it touches the bulletin, the scheduler before it starts one, and
`newsletter check` prints every problem (for operators and CI). Each problem names the setting to fix.
What is checked: the signing keys, `BASE_URL`, the sender identity and postal address, the templates
(one variant of the bulletin, or of the sample, is rendered), the database (initialised, writable) and
the ESP with these credentials (`EspBackend.probe`: SendGrid sandbox mode, SMTP login, outbox write).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import sqlalchemy as sa
from email_validator import EmailNotValidError, validate_email
from sqlalchemy.engine import Engine
from sqlmodel import Session

from newsletter.content.bulletins import load_content, read_bulletin_file
from newsletter.content.render import Renderer
from newsletter.content.types import RenderedVariant
from newsletter.core.config import Settings, default_subscribers_dir
from newsletter.core.errors import ConfigError, NewsletterError
from newsletter.core.models import SCHEDULER_HEARTBEAT, utcnow
from newsletter.esp import EspError, backend_for

SAMPLE_BULLETIN = "sample-bulletin.txt"
WEAK_KEYS = frozenset({"changeme", "change-me", "secret", "password", "test", "example"})


@dataclass(frozen=True)
class Problem:
    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.setting}: {self.message}"


class PreflightFailed(ConfigError):
    """The configuration would lose or spoil a send; nothing was changed."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more: run `newsletter check`)" if len(problems) > 1 else ""
        super().__init__(f"preflight failed, nothing was changed: {problems[0]}{more}")


def require(settings: Settings, engine: Engine, *, bulletin_id: int | None = None) -> None:
    problems = run(settings, engine, bulletin_id=bulletin_id)
    if problems:
        raise PreflightFailed(problems)


def run(
    settings: Settings, engine: Engine, *, bulletin_id: int | None = None, esp: bool = True
) -> list[Problem]:
    """Every problem found, in the order a person should fix them (settings first, the ESP last)."""
    problems = [*_secrets(settings), *_base_url(settings), *_sender(settings), *_database(engine)]
    variant, problem = _variant(settings, engine, bulletin_id)
    if problem:
        problems.append(problem)
    if esp and variant is not None:
        problems.extend(_esp(settings, variant, probe=not problems))  # ask the ESP once the rest is right
    return problems


def esp_problem(settings: Settings, engine: Engine, bulletin_id: int | None = None) -> str:
    """Only the ESP check (is it back after an outage?): "" when it answers, else why not."""
    variant, problem = _variant(settings, engine, bulletin_id)
    if variant is None:
        return str(problem)
    found = _esp(settings, variant)
    return str(found[0]) if found else ""


def _secrets(settings: Settings) -> list[Problem]:
    try:
        _ = settings.secret_keys
    except ConfigError as exc:
        return [Problem("SECRET_KEY", str(exc).removeprefix("SECRET_KEY ").removeprefix("is "))]
    key = settings.SECRET_KEY
    if key.lower() in WEAK_KEYS or len(set(key)) < 8:
        return [Problem("SECRET_KEY", "is a placeholder or too repetitive: use a random value")]
    return []


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain") or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _esp_is_local(settings: Settings) -> bool:
    """Mail that never leaves this machine (outbox, or an ESP on loopback, as in tests)."""
    backend = settings.esp_backend
    if backend == "sendgrid":
        return is_loopback(urlsplit(settings.SENDGRID_HOST).hostname or "")
    if backend == "smtp":
        return is_loopback(settings.SMTP_HOST)
    return True


def _base_url(settings: Settings) -> list[Problem]:
    url = urlsplit(settings.BASE_URL.strip())
    host = url.hostname or ""
    if url.scheme not in ("http", "https") or not host:
        return [
            Problem(
                "BASE_URL",
                f"{settings.BASE_URL!r} is not an absolute http(s) URL: every link in every email starts with it",
            )
        ]
    if is_loopback(host):
        if not _esp_is_local(settings):
            return [
                Problem(
                    "BASE_URL",
                    f"{settings.BASE_URL} points to this machine: set the public address of the web app",
                )
            ]
        return []
    if url.scheme != "https":
        return [Problem("BASE_URL", f"{settings.BASE_URL} must use https (only loopback may use http)")]
    return []


def _sender(settings: Settings) -> list[Problem]:
    problems = []
    for name in ("FROM_EMAIL", "REPLY_TO"):
        value = getattr(settings, name)
        if name == "REPLY_TO" and not value:
            continue
        try:
            validate_email(value, check_deliverability=False)
        except EmailNotValidError as exc:
            problems.append(Problem(name, f"{value!r} is not a valid address: {exc}"))
    if not settings.ORG_POSTAL_ADDRESS.strip():
        problems.append(Problem("ORG_POSTAL_ADDRESS", "is empty: bulk-mail law (CAN-SPAM, PECR) requires it"))
    if settings.esp_backend == "sendgrid" and urlsplit(settings.SENDGRID_HOST).scheme not in (
        "http",
        "https",
    ):
        problems.append(Problem("SENDGRID_HOST", f"{settings.SENDGRID_HOST!r} must start with https://"))
    return problems


def _database(engine: Engine) -> list[Problem]:
    """The schema is there and a write goes through (rolled back): a read-only or full disk shows here."""
    try:
        with engine.connect() as conn:
            initialised = sa.inspect(conn).has_table(SCHEDULER_HEARTBEAT.name)
            conn.rollback()
            if not initialised:
                return [
                    Problem(
                        "DATABASE_URL",
                        "the database is not initialised or is out of date: run `newsletter init`",
                    )
                ]
            now = utcnow()
            conn.execute(
                sa.insert(SCHEDULER_HEARTBEAT).values(worker="preflight", started_at=now, ticked_at=now)
            )
            conn.rollback()
    except sa.exc.DBAPIError as exc:
        text = str(exc.orig).strip()
        return [
            Problem("DATABASE_URL", f"the database refuses a write: {text.splitlines()[0] if text else exc}")
        ]
    return []


def _variant(
    settings: Settings, engine: Engine, bulletin_id: int | None
) -> tuple[RenderedVariant | None, Problem | None]:
    """One variant of the bulletin (or of the sample bulletin), rendered with the configured templates."""
    if not settings.templates_dir.is_dir():
        return None, Problem("TEMPLATES_DIR", f"{settings.templates_dir} is not a directory")
    try:
        if bulletin_id is not None:
            with Session(engine) as session:
                content = load_content(session, bulletin_id)
        else:
            content = read_bulletin_file(default_subscribers_dir() / SAMPLE_BULLETIN, settings)
        if not content.region_codes:
            return None, Problem("bulletin", f"bulletin {bulletin_id} is without items: nobody would get it")
        return Renderer(settings).variant(content, content.region_codes[:1]), None
    except NewsletterError as exc:
        return None, Problem("bulletin", str(exc))
    except Exception as exc:  # a template that does not load or render: any Jinja or I/O error
        return None, Problem(
            "TEMPLATES_DIR", f"the email templates do not render: {type(exc).__name__}: {exc}"
        )


def _esp(settings: Settings, variant: RenderedVariant, *, probe: bool = True) -> list[Problem]:
    name = settings.esp_backend
    setting = {"sendgrid": "SENDGRID_API_KEY/SENDGRID_HOST", "smtp": "SMTP_HOST", "outbox": "OUTBOX_DIR"}.get(
        name, "ESP_BACKEND"
    )
    try:
        backend = backend_for(settings)
    except ConfigError as exc:
        return [Problem(setting, str(exc))]
    if not probe:
        backend.close()
        return []
    try:
        backend.probe(variant)
    except EspError as exc:
        return [Problem(setting, f"the {name} backend does not work: {exc}")]
    finally:
        backend.close()
    return []
