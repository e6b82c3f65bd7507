"""Telling staff when a send needs them: an ERROR log line, an email to `ALERT_EMAILS`, an admin banner.

    alerts = Alerts(settings)
    alerts.paused(7, reason, esp_down=True)      # the send path paused a bulletin
    alerts.finished(summary)                     # more than ALERT_FAILED_PERCENT failed
    alerts.nothing_in_slot(slot_at)              # a schedule slot passed with nothing ready
    alerts.preflight_failed(7, why, problems)    # the scheduler would not start a bulletin
    banners(session, settings)                   # what the admin shows, read from the database

Each event is alerted by the one process that caused it (the one whose pause, finish or slot won), and a
repeated preflight failure once an hour. Emails go through `SMTP_HOST` when it is set, so that an outage
of the ESP can still be told; without it, through the ESP backend (and not at all while the ESP is what
is down: the log line and the banner remain). Banners are derived from the database, so every process of
the admin shows the same ones and they go away when their cause does.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from newsletter.content.types import Recipient, RenderedVariant
from newsletter.core.config import Settings
from newsletter.core.models import utcnow
from newsletter.esp import backend_for
from newsletter.sending import queries
from newsletter.sending.summary import SendSummary

log = logging.getLogger(__name__)

REPEAT_AFTER = timedelta(hours=1)
"""A preflight failure seen again on every tick is alerted again only after this long."""
RECENT = timedelta(days=7)
"""How far back the admin banners look for failed sends and empty slots."""


class Alerts:
    """Sends the alerts of one process (thread-safe)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._last: dict[str, datetime] = {}
        self._lock = threading.Lock()

    def paused(self, bulletin_id: int, reason: str, *, esp_down: bool) -> None:
        self.tell(f"bulletin {bulletin_id} paused", f"Bulletin {bulletin_id} {reason}", esp_down=esp_down)

    def finished(self, summary: SendSummary) -> None:
        failed = summary.counts.get("failed", 0)
        if not summary.total or failed * 100 <= summary.total * self.settings.ALERT_FAILED_PERCENT:
            return
        self.tell(
            f"bulletin {summary.bulletin_id} sent with {failed} failures",
            f"Bulletin {summary.bulletin_id} {summary.title!r} finished: {failed} of {summary.total} "
            f"recipients failed. See `newsletter status {summary.bulletin_id}`; "
            f"`newsletter send {summary.bulletin_id} --retry-failed` queues again those whose address the "
            "ESP did not refuse.",
        )

    def nothing_in_slot(self, slot_at: datetime) -> None:
        self.tell(
            f"schedule slot {slot_at:%Y-%m-%d %H:%M} UTC sent nothing",
            f"Schedule slot {slot_at:%Y-%m-%d %H:%M} UTC: no bulletin is ready; nothing sent this week. "
            "Mark a bulletin ready, or send one with `newsletter send ID`.",
        )

    def preflight_failed(self, bulletin_id: int, why: str, problems: Sequence[object]) -> None:
        lines = "\n".join(f"- {p}" for p in problems)
        self.tell(
            f"bulletin {bulletin_id} not started: preflight failed",
            f"Bulletin {bulletin_id} was due to start ({why}) but the configuration is not in order; "
            f"nothing was sent and it stays ready. Fix, then check with `newsletter check`:\n{lines}",
            key=f"preflight:{bulletin_id}:{lines}",
        )

    def tell(self, subject: str, body: str, *, esp_down: bool = False, key: str = "") -> None:
        """Log at ERROR and email `ALERT_EMAILS`; with `key`, not again within REPEAT_AFTER."""
        if key:
            now = utcnow()
            with self._lock:
                last = self._last.get(key)
                if last is not None and now - last < REPEAT_AFTER:
                    return
                self._last[key] = now
        log.error("ALERT %s: %s", subject, body)
        if self.settings.alert_emails:
            try:
                self._email(subject, body, esp_down=esp_down)
            except Exception as exc:  # an alert must never stop the send path
                log.error("the alert email to %s was not sent: %s", self.settings.ALERT_EMAILS, exc)

    def _email(self, subject: str, body: str, *, esp_down: bool) -> None:
        s = self.settings
        if s.SMTP_HOST:
            settings = s.model_copy(update={"ESP_BACKEND": "smtp"})
        elif esp_down and s.esp_backend != "outbox":
            log.error("no alert email: the ESP is down and SMTP_HOST is not set to send through")
            return
        else:
            settings = s
        variant = RenderedVariant(
            key="alert",
            regions=(),
            subject=f"[{s.ORG_NAME}] {subject}",
            html=f"<pre>{html.escape(body)}</pre>",
            text=body + "\n",
            html_placeholders={},
            text_placeholders={},
        )
        backend = backend_for(settings)
        try:
            backend.send(variant, [Recipient(email, "", None) for email in s.alert_emails])
        finally:
            backend.close()


@dataclass(frozen=True)
class Banner:
    kind: str
    """error (something is stopped or lost) or warning."""
    text: str
    bulletin_id: int | None = None


def banners(session: Session, settings: Settings, *, now: datetime | None = None) -> list[Banner]:
    """What the admin shows on top of its pages: paused sends with their reason, sends that finished with
    failures above the threshold, slots that sent nothing, and a scheduler that stopped ticking.
    Reads through `session`'s transaction (the caller ends it)."""
    now = now or utcnow()
    conn = session.connection()
    out = [
        Banner("error", f"Bulletin {i} “{t}” is paused: {r}", i)
        for i, t, r in queries.stopped_bulletins(conn)
    ]
    for bulletin_id, title, failed, total in queries.failed_shares(conn, now - RECENT):
        if failed * 100 > total * settings.ALERT_FAILED_PERCENT:
            out.append(
                Banner(
                    "warning",
                    f"Bulletin {bulletin_id} “{title}” finished with {failed} of {total} recipients failed; "
                    f"`newsletter send {bulletin_id} --retry-failed` or the dashboard queues again those "
                    "whose address the ESP did not refuse.",
                    bulletin_id,
                )
            )
    for slot in queries.empty_slots(conn, now - RECENT):
        out.append(
            Banner(
                "warning",
                f"The schedule slot of {slot:%Y-%m-%d %H:%M} UTC sent nothing: no bulletin was ready.",
            )
        )
    last = queries.last_beat(conn)
    stale = timedelta(seconds=settings.SCHEDULER_STALE_SECONDS)
    if last is None or now - last > stale:
        since = (
            "No scheduler has ever ticked"
            if last is None
            else f"No scheduler has ticked since {last:%Y-%m-%d %H:%M} UTC"
        )
        out.append(
            Banner(
                "error",
                f"{since}: scheduled bulletins will not go out. Start `newsletter worker` or `newsletter run`.",
            )
        )
    return out
