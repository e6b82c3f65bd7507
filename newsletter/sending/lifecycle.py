"""What people do to a bulletin's send, from the CLI or the admin: send now, schedule, pause, resume,
cancel. Each takes the bulletin's row lock, moves it through `core.status`'s transition table (audited),
and plans deliveries when it starts sending. The caller's session commits.

Machines start bulletins too (a due `send_at`, a schedule slot): that is the dispatcher's job
(`newsletter.sending.dispatcher`), through the same planning statement.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlmodel import Session

from newsletter.content.bulletins import change_status, get_bulletin
from newsletter.content.items import ensure_sendable
from newsletter.core import audit, zones
from newsletter.core.errors import InvalidTransition, NewsletterError
from newsletter.core.models import Bulletin, utcnow
from newsletter.core.status import BulletinStatus
from newsletter.sending import queries
from newsletter.sending.queries.planning import SKIP

log = logging.getLogger(__name__)

B = BulletinStatus


def locked(session: Session, bulletin_id: int) -> Bulletin:
    """The bulletin, read afresh under its row lock (FOR UPDATE on PostgreSQL), or NotFound."""
    bulletin = session.get(Bulletin, bulletin_id, with_for_update=True, populate_existing=True)
    if bulletin is None:
        return get_bulletin(session, bulletin_id)  # raises NotFound
    return bulletin


def _to_sending(
    session: Session,
    bulletin: Bulletin,
    actor: str,
    now: datetime,
    *,
    default_zone: str | None = None,
    no_section: str = SKIP,
) -> int:
    change_status(session, bulletin, B.SENDING, actor=actor)
    if bulletin.started_at is None:
        bulletin.started_at = now
    bulletin.last_error = ""
    bulletin.esp_down_since = None
    session.add(bulletin)
    session.flush()
    assert bulletin.id is not None
    planned = queries.plan(
        session.connection(), bulletin.id, now, default_zone=default_zone, no_section=no_section
    )
    log.info("bulletin %s %r: sending to %d new recipients (%s)", bulletin.id, bulletin.title, planned, actor)
    return planned


class DraftNeedsConfirmation(InvalidTransition):
    """Sending a draft skips the review that marking it ready is for: the caller must say so."""


def send_now(
    session: Session,
    bulletin_id: int,
    *,
    actor: str = audit.CLI_ACTOR,
    allow_draft: bool = True,
    no_section: str = SKIP,
) -> int:
    """Start sending a bulletin now (from draft, ready or paused); returns how many deliveries were planned.

    A bulletin already sending is left as it is (0). Sent or cancelled ones raise InvalidTransition; a
    draft raises DraftNeedsConfirmation unless `allow_draft`. `no_section` is `NO_SECTION` (see planning).
    "Now" means everyone now: a local-time slot the bulletin had is dropped (unless it already started).
    """
    now = utcnow()
    bulletin = locked(session, bulletin_id)
    ensure_sendable(session, bulletin_id)
    if bulletin.status == B.DRAFT and not allow_draft:
        raise DraftNeedsConfirmation(
            f"bulletin {bulletin_id} is a draft: confirm, or pass --yes to send it without review"
        )
    if bulletin.status == B.SENDING:
        return 0
    if bulletin.status == B.SENT:
        raise InvalidTransition(
            f"a bulletin cannot go from sent to sending: bulletin {bulletin_id} was sent already "
            f"(`newsletter send {bulletin_id} --retry-failed` queues its failed deliveries again)"
        )
    if bulletin.status == B.DRAFT:
        change_status(session, bulletin, B.READY, actor=actor)
    if bulletin.started_at is None and bulletin.local_send_at is not None:
        bulletin.local_send_at = None
    return _to_sending(session, bulletin, actor, now, no_section=no_section)


SCHEDULE_SLACK = timedelta(seconds=30)
"""How far in the past a typed send time may be and still count as "now" (the form was filled in slowly)."""


class PastSendTime(NewsletterError):
    """A send time a person typed has passed: a scheduled bulletin would go out at once, unasked."""


def ensure_future(when: datetime, now: datetime | None = None) -> None:
    """Refuse a send time that has passed (beyond `SCHEDULE_SLACK`), for every door that takes one typed."""
    if when < (now or utcnow()) - SCHEDULE_SLACK:
        raise PastSendTime("that time has passed; choose a time in the future")


def schedule(session: Session, bulletin_id: int, when: datetime, *, actor: str = audit.CLI_ACTOR) -> Bulletin:
    """Set a bulletin's own send time and make it `ready` (from draft, ready, or paused before it started)."""
    bulletin = _schedulable(session, bulletin_id)
    return change_status(session, bulletin, B.READY, actor=actor, send_at=when, set_send_at=True)


def schedule_local(
    session: Session, bulletin_id: int, wall: datetime, *, actor: str = audit.CLI_ACTOR
) -> Bulletin:
    """Send a bulletin at a wall-clock time (naive `wall`) that each subscriber receives in their own zone.

    It starts when that time first comes anywhere (`send_at`: Pacific/Kiritimati, UTC+14) and finishes
    after it comes in the last zone (UTC−12); each delivery waits for its own zone (`core.zones`).
    """
    bulletin = _schedulable(session, bulletin_id)
    first, _ = zones.first_and_last(wall)
    return change_status(
        session,
        bulletin,
        B.READY,
        actor=actor,
        send_at=first,
        set_send_at=True,
        local_send_at=zones.format_wall(wall),
    )


def _schedulable(session: Session, bulletin_id: int) -> Bulletin:
    bulletin = locked(session, bulletin_id)
    ensure_sendable(session, bulletin_id)
    if bulletin.status == B.PAUSED and bulletin.started_at is not None:
        raise InvalidTransition(
            f"bulletin {bulletin_id} has already started sending; resume it instead of scheduling it"
        )
    return bulletin


def pause(session: Session, bulletin_id: int, *, actor: str = audit.CLI_ACTOR, reason: str = "") -> Bulletin:
    """Stop a ready or sending bulletin: no new batch is claimed; batches in flight finish and are recorded.

    A person's pause is never an outage pause: pausing a bulletin the worker paused for an outage takes
    it out of the worker's hands, so it stays paused when the ESP answers again, until someone resumes it.
    """
    bulletin = locked(session, bulletin_id)
    if bulletin.esp_down_since is not None:
        bulletin.esp_down_since = None
        bulletin.last_error = ""  # the outage's note said a worker would resume it: no longer true
    return change_status(session, bulletin, B.PAUSED, actor=actor, reason=reason)


def resume_after_outage(session: Session, bulletin_id: int, *, no_section: str = SKIP) -> bool:
    """The worker resumes a bulletin it paused for an outage, now that the ESP answers: only if it is
    still paused for that outage (read under its row lock), not if someone paused or cancelled it since."""
    bulletin = locked(session, bulletin_id)
    if bulletin.status != B.PAUSED or bulletin.esp_down_since is None:
        return False
    resume(session, bulletin_id, actor=audit.SYSTEM_ACTOR, no_section=no_section)
    return True


def resume(
    session: Session,
    bulletin_id: int,
    *,
    actor: str = audit.CLI_ACTOR,
    default_zone: str | None = None,
    no_section: str = SKIP,
) -> Bulletin:
    """A paused bulletin goes on: back to `sending` (re-planned) if it had started, else back to `ready`.

    A local-time send goes on with the zones still to come (deliveries already due go out at once);
    re-planning it needs `default_zone` (`TIMEZONE`) for subscribers without a zone of their own.
    """
    bulletin = locked(session, bulletin_id)
    if bulletin.status != B.PAUSED:
        raise InvalidTransition(f"bulletin {bulletin_id} is {bulletin.status}, not paused")
    if bulletin.started_at is not None:
        _to_sending(session, bulletin, actor, utcnow(), default_zone=default_zone, no_section=no_section)
        return bulletin
    bulletin.last_error = ""
    bulletin.esp_down_since = None
    return change_status(session, bulletin, B.READY, actor=actor)


def stop_sending(
    session: Session, bulletin_id: int, reason: str, *, esp_down_since: datetime | None = None
) -> bool:
    """The send path pauses a bulletin it cannot go on with (credentials refused, the ESP down, a request
    the ESP refuses whatever the recipients, an internal error), with recipients still pending.
    `esp_down_since` marks an outage: the worker resumes the bulletin when the ESP answers again.
    False when the bulletin was no longer sending (another thread or process paused it first)."""
    bulletin = locked(session, bulletin_id)
    if bulletin.status != B.SENDING:
        return False
    bulletin.esp_down_since = esp_down_since
    change_status(session, bulletin, B.PAUSED, actor=audit.SYSTEM_ACTOR, reason=reason)
    return True


def retry_failed(session: Session, bulletin_id: int, *, actor: str = audit.CLI_ACTOR) -> int:
    """Queue a finished bulletin's failed deliveries again, except those the ESP refused for the address
    itself; the bulletin goes back to `sending`. Returns how many were queued (0: nothing changes)."""
    bulletin = locked(session, bulletin_id)
    if bulletin.status != B.SENT:
        raise InvalidTransition(
            f"bulletin {bulletin_id} is {bulletin.status}: only a sent bulletin's failures can be retried"
        )
    now = utcnow()
    queued = queries.requeue_failed(session.connection(), bulletin_id, now)
    if queued:
        bulletin.finished_at = None
        change_status(session, bulletin, B.SENDING, actor=actor, reason="")
        bulletin.last_error = ""
        session.add(bulletin)
        audit.record(session, actor, "bulletin.retry_failed", "bulletin", bulletin_id, {"queued": queued})
        session.flush()
    return queued


def cancel(session: Session, bulletin_id: int, *, actor: str = audit.CLI_ACTOR) -> int:
    """Cancel a bulletin for good; its pending deliveries become `skipped`. Returns how many."""
    bulletin = locked(session, bulletin_id)
    change_status(session, bulletin, B.CANCELLED, actor=actor)
    return queries.skip_open(session.connection(), bulletin_id, queries.CANCELLED_REASON, utcnow())
