"""Where a bulletin's send stands, read from the delivery ledger: what `newsletter status` prints, what
the admin dashboard shows, and the line the dispatcher logs when a bulletin finishes.

    s = send_summary(session, bulletin_id)     # counts per status, errors, duration, rate
    s.as_dict()                                # the JSON contract of `newsletter status --json`
    variant_counts(session, bulletin_id)       # who would get which variant now (planning's own rule)
    dashboard(session, bulletin_id)            # everything the dashboard page shows, in one value

Read-only: nothing here changes a row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection
from sqlmodel import Session

from newsletter.content.bulletins import get_bulletin
from newsletter.core import zones
from newsletter.core.models import Bulletin, Delivery, TestSend, utcnow
from newsletter.core.status import OPEN_DELIVERY, SENT_DELIVERY, BulletinStatus, DeliveryStatus
from newsletter.sending import queries

RATE_WINDOW = timedelta(seconds=60)
"""The dashboard's "rate over the last minute"."""
PROBLEM_STATUSES = (
    DeliveryStatus.FAILED,
    DeliveryStatus.BOUNCED,
    DeliveryStatus.DROPPED,
    DeliveryStatus.COMPLAINED,
    DeliveryStatus.DEFERRED,
)
"""Deliveries the dashboard lists by name, newest first: the ones staff may need to act on."""
LIVE_WINDOW = timedelta(minutes=10)
"""A ready bulletin this close to its send time counts as live (the dashboard offers to follow it)."""


@dataclass(frozen=True)
class ErrorCount:
    status: str
    error: str
    count: int


@dataclass(frozen=True)
class ZoneProgress:
    """One time zone of a local-time send: when the slot comes there and how its deliveries stand."""

    timezone: str | None
    """The IANA name; None for subscribers without a zone when the default zone was not given."""
    due_at: datetime | None
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def sent(self) -> int:
        return sum(n for s, n in self.counts.items() if s in SENT_DELIVERY)

    def as_dict(self) -> dict[str, Any]:
        return {
            "timezone": self.timezone,
            "due_at": self.due_at.isoformat() if self.due_at else None,
            "total": self.total,
            "pending": self.counts.get(DeliveryStatus.PENDING, 0),
            "sending": self.counts.get(DeliveryStatus.SENDING, 0),
            "sent": self.sent,
            "failed": self.counts.get(DeliveryStatus.FAILED, 0),
            "skipped": self.counts.get(DeliveryStatus.SKIPPED, 0),
            "counts": dict(sorted(self.counts.items())),
        }


def zone_progress(
    conn: Connection, bulletin_id: int, wall: datetime | None, default_zone: str | None
) -> list[ZoneProgress]:
    """Per zone, in the order the slot comes there: a local-time send's timeline. Empty for other sends."""
    if wall is None:
        return []
    counts: dict[str | None, dict[str, int]] = {}
    for zone, status, n in queries.zone_status_counts(conn, bulletin_id):
        key = zone if zone in zones.all_zones() else default_zone
        bucket = counts.setdefault(key, {})
        bucket[status] = bucket.get(status, 0) + n
    rows = [ZoneProgress(z, zones.due_at(wall, z) if z else None, c) for z, c in counts.items()]
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(rows, key=lambda r: (r.due_at or far, r.timezone or ""))


@dataclass(frozen=True)
class SendSummary:
    """Where a bulletin's send stands: what `newsletter status` prints and the admin shows."""

    bulletin_id: int
    title: str
    status: str
    counts: dict[str, int]
    """Deliveries per delivery status (only statuses that occur)."""
    variants: dict[str, int]
    """Deliveries per variant key."""
    started_at: datetime | None
    finished_at: datetime | None
    last_error: str
    errors: list[ErrorCount]
    as_of: datetime
    local_send_at: str | None = None
    """The wall-clock slot of a local-time send (None: everyone at once)."""
    zones: list[ZoneProgress] = field(default_factory=list)
    """A local-time send's zones, first due first."""

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def sent(self) -> int:
        """Deliveries the ESP took (accepted, and whatever its events moved them to since)."""
        return sum(n for s, n in self.counts.items() if s in SENT_DELIVERY)

    @property
    def open(self) -> int:
        return sum(n for s, n in self.counts.items() if s in OPEN_DELIVERY)

    @property
    def done(self) -> int:
        return self.total - self.open

    @property
    def duration(self) -> float | None:
        """Seconds from start to finish (to now while still sending)."""
        if self.started_at is None:
            return None
        end = self.finished_at or self.as_of
        return max(0.0, (end - self.started_at).total_seconds())

    @property
    def rate(self) -> float | None:
        """Recipients the ESP took per second over `duration`."""
        duration = self.duration
        if not duration:
            return None
        return self.sent / duration

    def as_dict(self) -> dict[str, Any]:
        """The JSON of `newsletter status --json` (a contract: scripts rely on it)."""
        return {
            "bulletin_id": self.bulletin_id,
            "title": self.title,
            "status": self.status,
            "total": self.total,
            "sent": self.sent,
            "open": self.open,
            "counts": dict(sorted(self.counts.items())),
            "variants": self.variants,
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "duration_seconds": round(self.duration, 3) if self.duration is not None else None,
            "rate_per_second": round(self.rate, 1) if self.rate is not None else None,
            "last_error": self.last_error,
            "errors": [{"status": e.status, "error": e.error, "count": e.count} for e in self.errors],
            "local_send_at": self.local_send_at,
            "zones": [z.as_dict() for z in self.zones],
        }

    def line(self) -> str:
        """One log line: counts per status, duration and rate."""
        counts = (
            ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items(), key=lambda kv: -kv[1])) or "nothing"
        )
        duration = f" in {self.duration:.1f}s" if self.duration is not None else ""
        rate = f" ({self.rate:,.0f} recipients/s)" if self.rate else ""
        return f"bulletin {self.bulletin_id} {self.title!r} {self.status}: {counts}{duration}{rate}"


def send_summary(
    session: Session, bulletin_id: int, *, now: datetime | None = None, default_zone: str | None = None
) -> SendSummary:
    """The send summary of a bulletin from its delivery ledger (read afresh, whatever the session holds).

    `default_zone` (`TIMEZONE`) names the zone of subscribers without one in a local-time send's `zones`.
    """
    bulletin = session.get(Bulletin, bulletin_id, populate_existing=True) or get_bulletin(
        session, bulletin_id
    )
    conn = session.connection()
    return SendSummary(
        bulletin_id=bulletin_id,
        title=bulletin.title,
        status=bulletin.status,
        counts=queries.status_counts(conn, bulletin_id),
        variants=queries.delivered_variants(conn, bulletin_id),
        started_at=bulletin.started_at,
        finished_at=bulletin.finished_at,
        last_error=bulletin.last_error,
        errors=[ErrorCount(*e) for e in queries.error_counts(conn, bulletin_id)],
        as_of=now or utcnow(),
        local_send_at=bulletin.local_send_at,
        zones=zone_progress(
            conn,
            bulletin_id,
            zones.parse_wall(bulletin.local_send_at) if bulletin.local_send_at else None,
            default_zone,
        ),
    )


def variant_counts(
    session: Session, bulletin_id: int, *, now: datetime | None = None, no_section: str = "skip"
) -> dict[str, int]:
    """How many subscribers eligible now get each variant of the bulletin (the planning rule, exactly;
    `no_section` is `NO_SECTION`)."""
    get_bulletin(session, bulletin_id)
    return queries.variant_counts(session.connection(), bulletin_id, now or utcnow(), no_section=no_section)


def no_section_count(session: Session, bulletin_id: int, *, now: datetime | None = None) -> int:
    """How many eligible subscribers have no section in this bulletin: who would get nothing of their own."""
    get_bulletin(session, bulletin_id)
    return queries.no_section_count(session.connection(), bulletin_id, now or utcnow())


@dataclass(frozen=True)
class Progress:
    total: int
    done: int
    sent: int
    open: int
    percent: float
    recent_rate: float
    """Recipients per second over the last `RATE_WINDOW`."""
    average_rate: float
    duration: float | None
    eta: float | None
    """Seconds until every open delivery is done at the recent rate, when it can be estimated."""
    finished: bool = False
    """Done and nothing open: there is no "last minute" to show, only the whole run's duration and rate."""


@dataclass(frozen=True)
class Dashboard:
    """Everything the delivery dashboard of one bulletin shows."""

    bulletin: Bulletin
    summary: SendSummary
    counts: dict[str, int]
    """Deliveries per status, every status listed (zeros too) so the table never jumps."""
    progress: Progress
    events: dict[str, dict[str, int]]
    problems: list[tuple[Delivery, str | None]]
    tests: list[TestSend]
    live: bool
    """Sending, or about to: worth following."""


def _progress(session: Session, summary: SendSummary, now: datetime) -> Progress:
    conn = session.connection()
    recent = queries.sent_since(conn, summary.bulletin_id, now - RATE_WINDOW)
    recent_rate = recent / RATE_WINDOW.total_seconds()
    total = summary.total
    return Progress(
        total=total,
        done=summary.done,
        sent=summary.sent,
        open=summary.open,
        percent=round(100 * summary.done / total, 1) if total else 0.0,
        recent_rate=recent_rate,
        average_rate=summary.rate or 0.0,
        duration=summary.duration,
        eta=summary.open / recent_rate if recent and summary.open else None,
        finished=summary.finished_at is not None and not summary.open,
    )


def dashboard(
    session: Session, bulletin_id: int, *, now: datetime | None = None, default_zone: str | None = None
) -> Dashboard:
    """The dashboard of a bulletin (NotFound if there is none); `default_zone` as for `send_summary`."""
    now = now or utcnow()
    bulletin = get_bulletin(session, bulletin_id)
    summary = send_summary(session, bulletin_id, now=now, default_zone=default_zone)
    counts = {s.value: 0 for s in DeliveryStatus}
    counts.update(summary.counts)
    conn = session.connection()
    live = bulletin.status == BulletinStatus.SENDING or (
        bulletin.status == BulletinStatus.READY
        and bulletin.send_at is not None
        and bulletin.send_at - now < LIVE_WINDOW
    )
    return Dashboard(
        bulletin=bulletin,
        summary=summary,
        counts=counts,
        progress=_progress(session, summary, now),
        events=queries.event_counts(conn, bulletin_id),
        problems=queries.problem_deliveries(session, bulletin_id, PROBLEM_STATUSES, limit=100),
        tests=queries.recent_test_sends(session, bulletin_id, limit=20),
        live=live,
    )
