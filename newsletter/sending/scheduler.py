"""When to send: the weekly `SEND_SCHEDULE` slots and the interval tick, on APScheduler 3.

    run_scheduler(settings, stop_event)      # blocks until stop_event is set (`newsletter run`)

Two jobs on a BackgroundScheduler in `TIMEZONE`:

- **slot** (cron `SEND_SCHEDULE`): fires the slot, which starts the oldest `ready` bulletin without its
  own `send_at`. A slot is recorded in `schedule_slot` with `INSERT … ON CONFLICT DO NOTHING` before
  anything else, so however many processes run the scheduler, each slot fires once (as procrastinate
  deduplicates periodic jobs). A slot with nothing ready is logged and sends nothing.
- **tick** (every `SCHEDULER_TICK_SECONDS`, `max_instances=1`, coalesced): writes this process's
  heartbeat row (the admin warns when none is recent), recovers leases, resumes bulletins paused for an
  ESP outage once the ESP answers, starts bulletins whose `send_at` has come, fires the latest slot if it
  has not fired yet (so a slot held back by a failed preflight goes out once the problem is fixed), and
  runs the send loop. A failing tick is logged and the next one runs as usual.

A slot missed while no process ran is caught up once on start if it is at most `MISFIRE_GRACE_SECONDS`
old (the same grace APScheduler applies to a slot missed while the process was busy); the slot table
makes "once" hold across restarts and processes too.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from sqlalchemy.engine import Engine

from newsletter.core import zones
from newsletter.core.config import Settings
from newsletter.core.db import open_engine
from newsletter.core.errors import ConfigError, NewsletterError
from newsletter.core.models import utcnow
from newsletter.sending import preflight, queries
from newsletter.sending.dispatcher import Dispatcher, PassReport

log = logging.getLogger(__name__)

SLOT_JOB = "newsletter-slot"
TICK_JOB = "newsletter-tick"
_MAX_SLOTS_SCANNED = 100_000
_LOCAL_LEAD = timedelta(hours=27)
"""More than the widest gap between a zone's clock and any other's (UTC+14 to UTC−12 is 26 hours)."""
LOCAL_SLOT_CHECK_SECONDS = 60
"""With `SEND_LOCAL_TIME`, how often the slot job looks for a slot whose first zone has come."""


class _QuietTickFilter(logging.Filter):
    """APScheduler warns each time a tick is skipped because the previous one is still sending; that is
    the point of `max_instances=1`, not news."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            TICK_JOB in message
            and ("maximum number of running instances" in message or "was missed by" in message)
        )


_QUIET = _QuietTickFilter()


def send_trigger(settings: Settings) -> CronTrigger:
    """`SEND_SCHEDULE` as a cron trigger in `TIMEZONE`; a malformed expression is a ConfigError."""
    try:
        return CronTrigger.from_crontab(settings.SEND_SCHEDULE, timezone=settings.tz)
    except ValueError as exc:
        raise ConfigError(
            f"SEND_SCHEDULE {settings.SEND_SCHEDULE!r} is not a cron expression: {exc}"
        ) from exc


def latest_slot(trigger: CronTrigger, now: datetime, grace_seconds: float) -> datetime | None:
    """The most recent slot at or before `now` and at most `grace_seconds` old, in UTC; None if none."""
    earliest = now - timedelta(seconds=grace_seconds)
    slot = trigger.get_next_fire_time(None, earliest)
    last = None
    for _ in range(_MAX_SLOTS_SCANNED):
        if slot is None or slot > now:
            break
        last = slot
        slot = trigger.get_next_fire_time(slot, slot + timedelta(seconds=1))
    return last.astimezone(UTC) if last is not None else None


def latest_local_slot(
    trigger: CronTrigger, tz: ZoneInfo, now: datetime, grace_seconds: float
) -> tuple[datetime, datetime] | None:
    """With `SEND_LOCAL_TIME`: the latest slot whose wall-clock time has come in the first zone on Earth
    by `now`, at most `grace_seconds` ago, as (the slot in `TIMEZONE`, in UTC; its wall-clock time).

    A slot's wall time comes up to 14 hours before `TIMEZONE`'s and is caught up to `grace_seconds`
    after; the slot keeps its `TIMEZONE` instant as its key, so it still fires once across processes.
    """
    earliest = now - timedelta(seconds=grace_seconds)
    slot = trigger.get_next_fire_time(None, earliest - _LOCAL_LEAD)
    found = None
    for _ in range(_MAX_SLOTS_SCANNED):
        if slot is None or slot > now + _LOCAL_LEAD:
            break
        wall = slot.astimezone(tz).replace(tzinfo=None)
        first, _ = zones.first_and_last(wall)
        if earliest <= first <= now:
            found = (slot.astimezone(UTC), wall)
        slot = trigger.get_next_fire_time(slot, slot + timedelta(seconds=1))
    return found


class SendScheduler:
    """The slot and tick jobs for one process. `start()` catches up a missed slot, then runs both jobs."""

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        dispatcher: Dispatcher | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.clock = clock
        self.dispatcher = dispatcher or Dispatcher(settings, engine, clock=clock)
        self.trigger = send_trigger(settings)
        self._scheduler: BackgroundScheduler | None = None
        self.started_at = clock()

    # --- the jobs (also called directly by tests) ------------------------------------------------
    def fire_slot(self, now: datetime | None = None) -> int | None:
        """Fire the latest slot within the grace period, if any and not yet fired; the bulletin started."""
        now = now or self.clock()
        if self.settings.SEND_LOCAL_TIME:
            local = latest_local_slot(
                self.trigger, self.settings.tz, now, self.settings.MISFIRE_GRACE_SECONDS
            )
            return self.dispatcher.fire_slot(*local) if local is not None else None
        slot = latest_slot(self.trigger, now, self.settings.MISFIRE_GRACE_SECONDS)
        if slot is None:
            return None
        return self.dispatcher.fire_slot(slot)

    def catch_up(self, now: datetime | None = None) -> int | None:
        """On start: a slot missed while no process ran fires now, once (see the module docstring)."""
        try:
            return self.fire_slot(now)
        except Exception:
            log.exception("catching up the last schedule slot failed")
            return None

    def beat(self) -> None:
        """Write this process's heartbeat row: the admin shows whether a scheduler is alive."""
        with self.dispatcher.transaction() as conn:
            queries.beat(conn, self.dispatcher.worker, self.clock(), self.started_at)

    def tick(self) -> PassReport | None:
        """Beat, recover leases, start due bulletins and a pending slot, send; any error is logged and the
        next tick runs anyway."""
        try:
            self.beat()
            self.fire_slot()
            return self.dispatcher.tick()
        except NewsletterError as exc:
            log.error(
                "scheduler tick stopped: %s; trying again in %gs", exc, self.settings.SCHEDULER_TICK_SECONDS
            )
        except Exception:
            log.exception("scheduler tick failed; trying again in %gs", self.settings.SCHEDULER_TICK_SECONDS)
        return None

    def _slot_job(self) -> None:
        try:
            self.fire_slot()
        except Exception:
            log.exception("schedule slot failed")

    # --- running ---------------------------------------------------------------------------------
    def start(self) -> None:
        s = self.settings
        for name in ("apscheduler.scheduler", "apscheduler.executors.default"):
            logger = logging.getLogger(name)
            if _QUIET not in logger.filters:
                logger.addFilter(_QUIET)
        self.catch_up()
        scheduler = BackgroundScheduler(timezone=s.tz)
        # A local-time slot fires when it first comes anywhere, which no cron in TIMEZONE says: the job
        # then looks every minute (the slot table still makes each slot fire once).
        scheduler.add_job(
            self._slot_job,
            IntervalTrigger(seconds=LOCAL_SLOT_CHECK_SECONDS, timezone=s.tz)
            if s.SEND_LOCAL_TIME
            else self.trigger,
            id=SLOT_JOB,
            name=SLOT_JOB,
            misfire_grace_time=s.MISFIRE_GRACE_SECONDS,
            coalesce=True,
            max_instances=1,
        )
        scheduler.add_job(
            self.tick,
            IntervalTrigger(seconds=s.SCHEDULER_TICK_SECONDS, timezone=s.tz),
            id=TICK_JOB,
            name=TICK_JOB,
            misfire_grace_time=None,
            coalesce=True,
            max_instances=1,
            next_run_time=datetime.now(s.tz),
        )
        scheduler.start()
        self._scheduler = scheduler
        next_slot = self.trigger.get_next_fire_time(None, datetime.now(s.tz))
        log.info(
            "scheduler started: slots %r in %s (next %s), tick every %gs",
            s.SEND_SCHEDULE,
            s.TIMEZONE,
            next_slot.isoformat() if next_slot else "never",
            s.SCHEDULER_TICK_SECONDS,
        )

    def shutdown(self, wait: bool = True) -> None:
        """Stop both jobs; a send in progress finishes its batches in flight and records them first."""
        self.dispatcher.stop.set()
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=wait)
            self._scheduler = None
        log.info("scheduler stopped")


def run_scheduler(settings: Settings, stop_event: threading.Event, *, engine: Engine | None = None) -> None:
    """Run the slot and tick jobs until `stop_event` is set (what `newsletter run` and `worker` do).

    The web app can run next to it in the same process: call this in a thread, set the event on exit.
    """
    own_engine = engine is None
    engine = engine or open_engine(settings.DATABASE_URL)
    scheduler = SendScheduler(settings, engine)
    scheduler.start()
    try:
        stop_event.wait()
    finally:
        scheduler.shutdown(wait=True)
        if own_engine:
            engine.dispose()


@dataclass(frozen=True)
class IdleResult:
    """What `run_until_idle` did: recipients handled, bulletins left paused with why (paused for an ESP
    outage, or by the send path in this run: credentials refused, a request refused, an internal error;
    the caller's exit status says so), and when the next delivery falls due (None: nothing is waiting)."""

    handled: int
    paused: list[tuple[int, str]]
    next_due: datetime | None


def run_until_idle(
    settings: Settings, stop_event: threading.Event, *, engine: Engine | None = None
) -> IdleResult:
    """Tick until nothing is due now (or `stop_event` is set). For batch jobs, benchmarks and tests: the
    send loop without the cron slots.

    Deliveries waiting for a retry or a lease count as due: the send under way is finished first. A
    local-time send's later zones do not: the result says when the next one falls due. A bulletin
    another worker is starting right now is still `ready` and due to everyone else, so this worker
    waits for its planning to commit and then shares the sending instead of quitting.
    """
    own_engine = engine is None
    engine = engine or open_engine(settings.DATABASE_URL)
    dispatcher = Dispatcher(settings, engine, stop=stop_event)
    handled = 0
    next_due: datetime | None = None
    paused_here: set[int] = set()
    try:
        while not stop_event.is_set():
            report = dispatcher.tick()
            handled += report.recipients
            paused_here.update(report.paused)
            with dispatcher.transaction() as conn:
                busy = queries.due_now(conn, dispatcher.clock())
            if not busy:
                if not dispatcher.due():
                    with dispatcher.transaction() as conn:
                        next_due = queries.next_due(conn)
                    break
                if dispatcher.blocked:
                    raise preflight.PreflightFailed(dispatcher.blocked)
            if report.recipients == 0:
                stop_event.wait(min(settings.SCHEDULER_TICK_SECONDS, 1.0))
        with dispatcher.transaction() as conn:
            paused = queries.still_paused(conn, [*queries.outage_paused(conn), *paused_here])
    finally:
        if own_engine:
            engine.dispose()
    return IdleResult(handled, paused, next_due)
