"""Settings: one object, read from the environment and `.env`.

Every setting is listed with a comment in `.env.example`. Secrets have no working default: code that
needs one asks for it through a property that fails with a clear message when it is missing, so a
command that does not need a secret (importing a CSV, say) still runs without one.
"""

from __future__ import annotations

import json
import re
from datetime import date
from functools import cached_property
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from newsletter.core.errors import ConfigError

_PACKAGE = Path(__file__).resolve().parent.parent
"""The `newsletter` package directory: a wheel carries templates/ and subscribers/ inside it."""

DEFAULT_REGIONS: list[tuple[str, str]] = [
    ("africa", "Africa"),
    ("latin-america", "Latin America"),
    ("south-asia", "South Asia"),
    ("southeast-asia", "Southeast Asia"),
    ("global", "HQ & Global Partners"),
]
"""Seeded by `newsletter init` unless `REGIONS` says otherwise: (code, display name), in display order."""

DEFAULT_REGION_ALIASES: dict[str, str] = {
    "IJM HQ & Global Partners": "global",
    "HQ and Global Partners": "global",
    "Global Partners": "global",
    "Global": "global",
}


class Settings(BaseSettings):
    """All configuration of the dispatcher. Field names are the environment variable names."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # --- storage -------------------------------------------------------------------------------
    DATABASE_URL: str = "sqlite:///var/newsletter.db"
    TEMPLATES_DIR: Path | None = None
    LOG_LEVEL: str = "INFO"

    # --- content -------------------------------------------------------------------------------
    REGIONS: str = ""
    REGION_ALIASES: str = ""
    DEFAULT_REGION: str = "africa"

    # --- sender identity (bulk-mail law wants a postal address in every message) ---------------
    ORG_NAME: str = "Prayer Bulletin"
    ORG_POSTAL_ADDRESS: str = ""
    FROM_EMAIL: str = "bulletin@example.org"
    FROM_NAME: str = "Prayer Bulletin"
    REPLY_TO: str = ""
    LIST_ID: str = "prayer-bulletin.example.org"
    BASE_URL: str = "http://127.0.0.1:8000"
    UNSUBSCRIBE_MAILTO: str = ""

    # --- branding (no template editing needed) -------------------------------------------------
    LOGO_URL: str = ""
    LOGO_ALT: str = ""
    ACCENT_COLOUR: str = "#1d4e89"
    DONATE_URL: str = ""
    DONATE_LABEL: str = "Give to our work"
    DATELINE: Literal["date", "issue", "none"] = "date"
    SUBJECT_TEMPLATE: str = ""

    # --- secrets ---------------------------------------------------------------------------------
    SECRET_KEY: str = ""
    SECRET_KEYS_OLD: str = ""
    TOKEN_TTL_DAYS: int = 400
    CONFIRM_TTL: int = Field(default=7 * 24 * 3600, description="seconds")
    MY_DATA_TTL_SECONDS: int = Field(default=3600, ge=60)

    # --- schedule --------------------------------------------------------------------------------
    TIMEZONE: str = "Europe/London"
    SEND_SCHEDULE: str = "0 7 * * mon"
    SEND_LOCAL_TIME: bool = False
    SCHEDULER_TICK_SECONDS: float = 5.0
    MISFIRE_GRACE_SECONDS: int = 6 * 3600

    # --- sending ---------------------------------------------------------------------------------
    ESP_BACKEND: Literal["", "outbox", "sendgrid", "smtp"] = ""
    OUTBOX_DIR: Path = Path("var/outbox")
    SENDGRID_API_KEY: str = ""
    SENDGRID_HOST: str = "https://api.sendgrid.com"
    SENDGRID_TIMEOUT: float = 30.0
    SMTP_HOST: str = ""
    SMTP_PORT: int = 587
    SMTP_USERNAME: str = ""
    SMTP_PASSWORD: str = ""
    SMTP_STARTTLS: bool = True
    SMTP_TIMEOUT: float = 30.0
    BATCH_SIZE: int = Field(default=1000, ge=1, le=1000)
    SEND_RATE: float = Field(default=0.0, ge=0.0, description="recipients per second, 0 = unlimited")
    SEND_CONCURRENCY: int = Field(default=4, ge=1)
    MAX_ATTEMPTS: int = Field(default=5, ge=1)
    RETRY_BASE_SECONDS: float = 2.0
    RETRY_MAX_SECONDS: float = 600.0
    LEASE_SECONDS: int = 300
    RESEND_ON_UNKNOWN: bool = True
    ESP_OUTAGE_BATCHES: int = Field(default=3, ge=1)
    ESP_PROBE_MAX_SECONDS: float = Field(default=300.0, gt=0)
    NO_SECTION: Literal["global", "skip"] = "skip"

    # --- alerts ----------------------------------------------------------------------------------
    ALERT_EMAILS: str = ""
    ALERT_FAILED_PERCENT: float = Field(default=1.0, ge=0.0, le=100.0)
    SCHEDULER_STALE_SECONDS: int = Field(default=300, ge=1)

    # --- web -------------------------------------------------------------------------------------
    WEB_HOST: str = "127.0.0.1"
    WEB_PORT: int = 8000
    SESSION_COOKIE_SECURE: bool | None = None
    SESSION_LIFETIME_SECONDS: int = Field(default=12 * 3600, ge=60)
    LOGIN_MAX_FAILURES: int = 5
    LOGIN_LOCKOUT_SECONDS: int = 900
    TRUSTED_PROXIES: str = ""
    MAX_FORM_BYTES: int = Field(default=64 * 1024, ge=1024)
    MAX_UPLOAD_BYTES: int = Field(default=20 * 1024 * 1024, ge=1024)
    MAX_WEBHOOK_BYTES: int = Field(default=16 * 1024 * 1024, ge=1024)
    CONFIRM_SEND_ATTEMPTS: int = Field(default=3, ge=1)
    STAFF_TEST_RECIPIENTS: str = ""
    WELCOME_LATEST_BULLETIN: bool = False
    SUBSCRIBE_LIMIT_PER_ADDRESS: int = 3
    SUBSCRIBE_LIMIT_PER_IP: int = 20
    SUBSCRIBE_LIMIT_WINDOW_SECONDS: int = 3600
    SENDGRID_WEBHOOK_PUBLIC_KEY: str = ""
    WEBHOOK_MAX_AGE_SECONDS: int = 600

    # --- public archive and engagement tracking ----------------------------------------------------
    ARCHIVE_ENABLED: bool = True
    ARCHIVE_PAGE_SIZE: int = Field(default=20, ge=1, le=200)
    ARCHIVE_CACHE_SECONDS: int = Field(default=300, ge=0)
    # Off by default: an open pixel and rewritten links tell the ESP who read what (see .env.example).
    TRACK_OPENS: bool = False
    TRACK_CLICKS: bool = False

    @field_validator("DATABASE_URL")
    @classmethod
    def _driver(cls, url: str) -> str:
        """Use psycopg 3 for PostgreSQL whatever form the URL was given in."""
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url[len(prefix) :]
        return url

    @field_validator("TIMEZONE")
    @classmethod
    def _timezone(cls, name: str) -> str:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {name!r}") from exc
        return name

    @field_validator("ACCENT_COLOUR")
    @classmethod
    def _colour(cls, value: str) -> str:
        if not re.fullmatch(r"#[0-9a-fA-F]{6}", value.strip()):
            raise ValueError(f"expected a colour like #1d4e89, got {value!r}")
        return value.strip().lower()

    @field_validator("LOGO_URL", "DONATE_URL")
    @classmethod
    def _public_url(cls, value: str) -> str:
        value = value.strip()
        if value and not re.match(r"https?://[^\s\"'<>]+$", value):
            raise ValueError(f"expected an http(s):// address, got {value!r}")
        return value

    @field_validator("SUBJECT_TEMPLATE")
    @classmethod
    def _subject_template(cls, template: str) -> str:
        """Tried once here, so a typo stops the start-up instead of a send."""
        try:
            render_subject(template, "Title", date(2026, 12, 7), 1)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ValueError(
                f"cannot use {template!r}: {exc!r} (fields: {{title}}, {{date:%d %B %Y}}, {{issue}})"
            ) from None
        return template

    @model_validator(mode="after")
    def _logo_needs_alt(self) -> Settings:
        if self.LOGO_URL and not self.LOGO_ALT.strip():
            raise ValueError("LOGO_ALT is required with LOGO_URL (what a reader without images is told)")
        return self

    # --- derived values --------------------------------------------------------------------------
    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.TIMEZONE)

    @property
    def is_sqlite(self) -> bool:
        return self.DATABASE_URL.startswith("sqlite")

    @cached_property
    def regions(self) -> list[tuple[str, str]]:
        """(code, name) pairs in display order, from `REGIONS` (`code=Name;code=Name`) or the defaults."""
        if not self.REGIONS.strip():
            return list(DEFAULT_REGIONS)
        pairs = []
        for part in self.REGIONS.split(";"):
            if not part.strip():
                continue
            code, sep, name = part.partition("=")
            if not sep or not code.strip() or not name.strip():
                raise ConfigError(f"REGIONS: expected code=Name, got {part!r}")
            pairs.append((code.strip(), name.strip()))
        return pairs

    @cached_property
    def region_aliases(self) -> dict[str, str]:
        """Heading text → region code. `REGION_ALIASES` is JSON (`{"IJM HQ": "global"}`), added to defaults."""
        aliases = dict(DEFAULT_REGION_ALIASES)
        if self.REGION_ALIASES.strip():
            try:
                extra = json.loads(self.REGION_ALIASES)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"REGION_ALIASES is not valid JSON: {exc}") from exc
            if not isinstance(extra, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in extra.items()
            ):
                raise ConfigError(
                    'REGION_ALIASES must be a JSON object of strings, e.g. {"IJM HQ": "global"}'
                )
            aliases.update(extra)
        return aliases

    @property
    def secret_keys(self) -> list[str]:
        """Signing keys, newest first: `SECRET_KEY` signs, it and `SECRET_KEYS_OLD` verify."""
        if not self.SECRET_KEY:
            raise ConfigError(
                "SECRET_KEY is not set: links in emails and admin sessions are signed with it. "
                'Generate one with: python -c "import secrets; print(secrets.token_urlsafe(32))"'
            )
        old = [k.strip() for k in self.SECRET_KEYS_OLD.split(",") if k.strip()]
        for name, key in [("SECRET_KEY", self.SECRET_KEY)] + [("SECRET_KEYS_OLD", k) for k in old]:
            check_key_strength(name, key)
        return [self.SECRET_KEY, *old]

    @property
    def trusted_proxies(self) -> frozenset[str]:
        """Peers whose `X-Forwarded-For` names the real client (the TLS proxy in front of the app)."""
        return frozenset(a.strip() for a in self.TRUSTED_PROXIES.split(",") if a.strip())

    @property
    def esp_backend(self) -> str:
        """`ESP_BACKEND`, or the one the other settings imply: SendGrid with a key, SMTP with a host, else outbox."""
        if self.ESP_BACKEND:
            return self.ESP_BACKEND
        if self.SENDGRID_API_KEY:
            return "sendgrid"
        if self.SMTP_HOST:
            return "smtp"
        return "outbox"

    @property
    def sender_warnings(self) -> list[str]:
        """What is legal or sensible to fix before a bulk send, in words for staff (empty: nothing).

        Shown on the admin home page and logged when the scheduler or a send starts.
        """
        warnings = []
        if not self.ORG_POSTAL_ADDRESS.strip():
            warnings.append(
                "ORG_POSTAL_ADDRESS is empty: bulk-mail law (CAN-SPAM, PECR) requires the sender's postal "
                "address in every bulletin"
            )
        if self.FROM_EMAIL.endswith(("@example.org", "@example.com")):
            warnings.append(f"FROM_EMAIL is still the example address {self.FROM_EMAIL}")
        return warnings

    @property
    def branding(self) -> dict[str, str]:
        """The branding settings as staff see them in the admin (setting name → value, empty ones too)."""
        names = (
            "LOGO_URL",
            "LOGO_ALT",
            "ACCENT_COLOUR",
            "DONATE_URL",
            "DONATE_LABEL",
            "DATELINE",
            "SUBJECT_TEMPLATE",
        )
        return {name: str(getattr(self, name)) for name in ("ORG_NAME", "ORG_POSTAL_ADDRESS", *names)}

    @property
    def alert_emails(self) -> list[str]:
        return [a.strip() for a in self.ALERT_EMAILS.split(",") if a.strip()]

    @property
    def staff_test_recipients(self) -> list[str]:
        return [a.strip() for a in self.STAFF_TEST_RECIPIENTS.split(",") if a.strip()]

    @property
    def templates_dir(self) -> Path:
        """`TEMPLATES_DIR`, else the templates shipped in the wheel, else the source checkout's."""
        if self.TEMPLATES_DIR is not None:
            return self.TEMPLATES_DIR
        return default_templates_dir()


def render_subject(template: str, title: str, issue_date: date, issue: int) -> str:
    """A subject from `SUBJECT_TEMPLATE` (empty: the title itself), e.g. "{title} – {date:%d %B %Y}"."""
    if not template:
        return title
    return template.format(title=title, date=issue_date, issue=issue)


def served_base_url(settings: Settings, host: str, port: int) -> tuple[Settings, str]:
    """The settings a web server on `host:port` should use, and a line saying where links point.

    Unset `BASE_URL`: derived from the address actually served (a wildcard host becomes 127.0.0.1),
    so `newsletter web --port 8080` does not send subscribers to a dead port. Set and different:
    kept (a reverse proxy usually serves the public address), with a warning in the line.
    """
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    shown = f"[{shown}]" if ":" in shown else shown
    served = f"http://{shown}:{port}"
    if "BASE_URL" not in settings.model_fields_set:
        derived = settings.model_copy(update={"BASE_URL": served})
        return derived, f"BASE_URL is not set: links in emails and pages use {served}"
    if settings.BASE_URL.rstrip("/") != served:
        return settings, (
            f"warning: BASE_URL is {settings.BASE_URL} but this server listens on {served}; "
            "links in emails and pages use BASE_URL"
        )
    return settings, f"links in emails and pages use BASE_URL {settings.BASE_URL}"


MIN_KEY_LENGTH = 16
MIN_KEY_DISTINCT_CHARACTERS = 8


def check_key_strength(name: str, key: str) -> None:
    """Raise ConfigError for a signing key an attacker could guess: every key, current or old, verifies
    links and sessions, so every key must be as strong as the one that signs."""
    if len(key) < MIN_KEY_LENGTH:
        raise ConfigError(f"{name} is too short: use at least {MIN_KEY_LENGTH} random characters")
    if len(set(key)) < MIN_KEY_DISTINCT_CHARACTERS:
        raise ConfigError(f"{name} is not random enough: generate it with secrets.token_urlsafe(32)")


def default_templates_dir() -> Path:
    packaged = _PACKAGE / "templates"
    if packaged.is_dir():
        return packaged
    return _PACKAGE.parent / "templates"


def default_subscribers_dir() -> Path:
    packaged = _PACKAGE / "subscribers"
    if packaged.is_dir():
        return packaged
    return _PACKAGE.parent / "subscribers"


def _setting_problem(error: Any) -> str:
    """One pydantic error as "NAME: problem (got 'value')", without pydantic's "Value error, " prefix."""
    name = ".".join(str(part) for part in error["loc"]) or "settings"
    message = str(error["msg"]).removeprefix("Value error, ")
    given = repr(error.get("input"))
    return f"{name}: {message}" if given in message else f"{name}: {message} (got {given})"


def get_settings(**overrides: object) -> Settings:
    """A fresh settings object; keyword arguments override the environment (tests, the demo).

    A bad value raises `ConfigError` naming each setting and its problem on one line, so a command
    stops with that line instead of pydantic's traceback.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(_setting_problem(error) for error in exc.errors())
        raise ConfigError(f"bad setting: {problems}") from None
