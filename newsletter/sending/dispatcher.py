"""The send loop of one process: start due bulletins, recover expired leases, and send in leased batches.

    dispatcher = Dispatcher(settings, engine)
    dispatcher.tick()                 # recover leases, resume after an outage, start due bulletins, send
    dispatcher.run_until_done(id)     # `newsletter send ID`: keep going until the bulletin is finished

The statements are in `newsletter.sending.queries`; this module decides what to do with their answers.
A pass (`work`) runs `SEND_CONCURRENCY` threads, each with its own ESP backend and its own
`batch.BatchSender` (claim → render, cached per variant → send → record), until nothing is ready; then
each bulletin with nothing open is finished. What people do to a send (send now, pause…) is
`newsletter.sending.lifecycle`; where a send stands is `newsletter.sending.summary`.

Machines start bulletins only after `preflight` passes (a failure is alerted and nothing changes); a
bulletin paused for an ESP outage is probed on a capped backoff and resumed when the ESP answers; a lease
whose holder is provably dead (this host, its pid gone) is taken over at once.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from newsletter.content.bulletins import get_bulletin
from newsletter.content.render import Renderer
from newsletter.core import audit
from newsletter.core.config import Settings
from newsletter.core.db import session_scope
from newsletter.core.errors import NewsletterError
from newsletter.core.models import utcnow
from newsletter.core.status import BulletinStatus
from newsletter.esp import backend_for
from newsletter.esp.base import EspBackend
from newsletter.sending import alerts, leases, lifecycle, preflight, queries
from newsletter.sending.batch import BatchSender, Pass, PassReport
from newsletter.sending.outage import EspHealth, ProbeSchedule
from newsletter.sending.summary import SendSummary, send_summary
from newsletter.sending.throttle import Gate, Throttle, backoff

log = logging.getLogger(__name__)

B = BulletinStatus


def worker_name() -> str:
    """This process, as written in `leased_by`: host and pid (see `sending.leases`)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


class SendStopped(NewsletterError):
    """A pass could not go on at all (no ESP backend, the database refusing writes); recipients stay
    pending or leased, and the next run carries on."""


class Dispatcher:
    """Sends bulletins for one process. Thread-safe; `stop` ends passes between batches.

    `backend_factory` makes one ESP backend per sending thread (default: `backend_for(settings)`).
    `on_progress(n)` is called from sending threads each time `n` deliveries reach a final status.
    """

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        *,
        backend_factory: Callable[[], EspBackend] | None = None,
        renderer: Renderer | None = None,
        worker: str | None = None,
        stop: threading.Event | None = None,
        on_progress: Callable[[int], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.backend_factory = backend_factory or (lambda: backend_for(settings))
        self.renderer = renderer or Renderer(settings)
        self.worker = worker or worker_name()
        self.stop = stop or threading.Event()
        self.on_progress = on_progress
        self.clock = clock
        self.rng = rng or random.Random()
        self.throttle = Throttle.from_settings(settings)
        self.gate = Gate(self.stop)
        self.health = EspHealth(settings.ESP_OUTAGE_BATCHES, clock)
        self.probes = ProbeSchedule(settings.RETRY_BASE_SECONDS, settings.ESP_PROBE_MAX_SECONDS)
        self.alerts = alerts.Alerts(settings)
        self._told_waiting: set[str] = set()
        self.blocked: list[preflight.Problem] = []
        """The problems of the last preflight that held a due bulletin back ([] once one passes)."""
        self.write_lock: AbstractContextManager[object] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )

    # --- starting bulletins ----------------------------------------------------------------------
    def start_due(self) -> list[int]:
        """Start every `ready` bulletin whose own `send_at` has come, each planned in its own transaction."""
        started: list[int] = []
        with self.transaction() as conn:
            due = queries.due_bulletins(conn, self.clock())
        if not due or not self._preflight_passes(due[0], "a bulletin's send time has come"):
            return started
        while not self.stop.is_set():
            now = self.clock()
            with self.transaction() as conn:
                bulletin_id = queries.claim_due(conn, now)
                if bulletin_id is None:
                    break
                planned = queries.plan(
                    conn,
                    bulletin_id,
                    now,
                    default_zone=self.settings.TIMEZONE,
                    no_section=self.settings.NO_SECTION,
                )
                self._audit_start(conn, bulletin_id, "send_at reached")
            log.info("bulletin %s: its send time has come; sending to %d recipients", bulletin_id, planned)
            started.append(bulletin_id)
        return started

    def fire_slot(self, slot_at: datetime, local: datetime | None = None) -> int | None:
        """Fire one slot of `SEND_SCHEDULE`: once across all processes, start the oldest ready bulletin
        without a `send_at`. Returns its id, or None (slot fired elsewhere already, or nothing ready).

        `local` (a naive wall-clock time) makes it a local-time send of that slot (`SEND_LOCAL_TIME`),
        fired when the slot first comes anywhere: each subscriber then gets it at `local` in their zone."""
        now = self.clock()
        with self.transaction() as conn:
            fired = queries.slot_fired(conn, slot_at)
            waiting = queries.slot_queue(conn)
        if fired:
            return None
        if waiting and not self._preflight_passes(waiting[0], f"schedule slot {slot_at.isoformat()}"):
            return None  # the slot stays unfired: the next tick tries again, and staff were told
        with self.transaction() as conn:
            if not queries.fire_slot(conn, slot_at, now, self.worker):
                log.debug("slot %s was fired already", slot_at.isoformat())
                return None
            bulletin_id = queries.claim_next_ready(conn, now)
            if bulletin_id is None:
                self.alerts.nothing_in_slot(slot_at)
                return None
            queries.set_slot_bulletin(conn, slot_at, bulletin_id)
            if local is not None:
                queries.set_local_slot(conn, bulletin_id, local)
            planned = queries.plan(
                conn,
                bulletin_id,
                now,
                default_zone=self.settings.TIMEZONE,
                no_section=self.settings.NO_SECTION,
            )
            self._audit_start(conn, bulletin_id, f"schedule slot {slot_at.isoformat()}")
        log.info("slot %s: sending bulletin %s to %d recipients", slot_at.isoformat(), bulletin_id, planned)
        return bulletin_id

    def _audit_start(self, conn: sa.Connection, bulletin_id: int, why: str) -> None:
        with Session(bind=conn) as session:
            audit.record(
                session,
                audit.SYSTEM_ACTOR,
                f"bulletin.{B.SENDING}",
                "bulletin",
                bulletin_id,
                {"status": [str(B.READY), str(B.SENDING)], "reason": why},
            )
            session.flush()

    def _preflight_passes(self, bulletin_id: int, why: str) -> bool:
        """Preflight before a machine starts a bulletin; a failure is alerted (once) and nothing changes."""
        problems = preflight.run(self.settings, self.engine, bulletin_id=bulletin_id)
        self.blocked = problems
        if problems:
            self.alerts.preflight_failed(bulletin_id, why, problems)
            return False
        return True

    # --- recovery ----------------------------------------------------------------------------------
    def recover(self) -> int:
        """Expired leases, and leases whose worker is provably dead (this host, pid gone): resend or fail
        them as `RESEND_ON_UNKNOWN` says; and what a cancel raced past is skipped (`sweep_cancelled`)."""
        resend = self.settings.RESEND_ON_UNKNOWN
        now = self.clock()
        with self.transaction() as conn:
            for bulletin_id, n in queries.sweep_cancelled(conn, now).items():
                if n:
                    log.info("bulletin %s: cancelled; %d recipients left waiting are skipped", bulletin_id, n)
            recovered = queries.recover_expired(conn, now, resend=resend)
            dead = leases.dead_tokens(t for _, t, _, _ in queries.live_leases(conn, now))
            if dead:
                log.warning("taking over the leases of %s: that process is gone", ", ".join(sorted(dead)))
                for bulletin_id, n in queries.recover_expired(conn, now, resend=resend, tokens=dead).items():
                    recovered[bulletin_id] = recovered.get(bulletin_id, 0) + n
        for bulletin_id, n in recovered.items():
            if resend:
                log.warning(
                    "bulletin %s: %d deliveries were in flight when a worker stopped; they will be sent "
                    "again (RESEND_ON_UNKNOWN=true)",
                    bulletin_id,
                    n,
                )
            else:
                log.warning(
                    "bulletin %s: %d deliveries were in flight when a worker stopped; marked failed as "
                    "outcome unknown (RESEND_ON_UNKNOWN=false)",
                    bulletin_id,
                    n,
                )
        return sum(recovered.values())

    # --- the loop ----------------------------------------------------------------------------------
    def sending(self) -> list[int]:
        """Bulletins in `sending` now."""
        with self.transaction() as conn:
            return queries.sending_bulletins(conn)

    def due(self) -> list[int]:
        """`ready` bulletins whose send time has come, including one another process is starting."""
        with self.engine.connect() as conn:
            return queries.due_bulletins(conn, self.clock())

    def tick(self) -> PassReport:
        """What the scheduler's interval job does: recover, resume after an outage, start due bulletins,
        send what is ready."""
        self.recover()
        self.resume_after_outage()
        self.start_due()
        return self.work()

    def resume_after_outage(self) -> list[int]:
        """Probe the ESP of each bulletin paused for an outage (on a capped backoff); resume those whose
        ESP answers. Returns the bulletins resumed."""
        with self.transaction() as conn:
            paused = queries.outage_paused(conn)
        resumed = []
        for bulletin_id in paused:
            now = self.clock()
            if not self.probes.due(bulletin_id, now):
                continue
            problem = preflight.esp_problem(self.settings, self.engine, bulletin_id)
            if problem:
                wait = self.probes.failed(bulletin_id, now)
                log.info(
                    "bulletin %s: the ESP is still unavailable (%s); next check in %.0fs",
                    bulletin_id,
                    problem,
                    wait,
                )
                continue
            self.probes.forget(bulletin_id)
            self.health.ok()
            with self.write_lock, session_scope(self.engine) as session:
                went_on = lifecycle.resume_after_outage(
                    session, bulletin_id, no_section=self.settings.NO_SECTION
                )
            if went_on:
                log.warning("bulletin %s: the ESP answers again; sending resumed", bulletin_id)
                resumed.append(bulletin_id)
        return resumed

    def work(self, bulletin_ids: Iterable[int] | None = None) -> PassReport:
        """Send every ready batch of the given (default: all `sending`) bulletins until none is left.

        Deliveries waiting for a retry time are left for a later pass; a bulletin with nothing open
        left is finished (`sent`) and its summary logged.
        """
        wanted = None if bulletin_ids is None else set(bulletin_ids)
        ids = [b for b in self.sending() if wanted is None or b in wanted]
        state = Pass(ids)
        if not ids:
            return state.report
        threads = [
            threading.Thread(target=self._thread, args=(state,), name=f"send-{n}", daemon=True)
            for n in range(self.settings.SEND_CONCURRENCY)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if state.fatal:
            raise SendStopped(state.fatal)
        report = state.report
        for bulletin_id in ids:
            counts = [
                report.accepted[bulletin_id],
                report.retried[bulletin_id],
                report.failed[bulletin_id],
                report.skipped[bulletin_id],
            ]
            if any(counts):
                log.info(
                    "bulletin %s: %d accepted, %d to retry, %d failed, %d skipped in this pass",
                    bulletin_id,
                    *counts,
                )
            if self.finish(bulletin_id):
                report.finished.append(bulletin_id)
        return report

    def finish(self, bulletin_id: int) -> bool:
        """Mark the bulletin `sent` if nothing is open; log its summary. True for the process that did it."""
        now = self.clock()
        with self.transaction() as conn:
            done = queries.finish_if_done(conn, bulletin_id, now)
        if done:
            with Session(self.engine) as session:
                summary = send_summary(session, bulletin_id, now=now)
            log.info("%s", summary.line())
            self.alerts.finished(summary)
        return done

    def run_until_done(self, bulletin_id: int, *, max_wait: float = 5.0) -> SendSummary:
        """Send one bulletin until it is no longer `sending` (sent, paused or cancelled) or `stop` is set,
        waiting for retry times and expired leases in between passes."""
        while not self.stop.is_set():
            self.recover()
            self.work([bulletin_id])
            with session_scope(self.engine) as session:
                bulletin = get_bulletin(session, bulletin_id)
                if bulletin.status != B.SENDING:
                    break
                conn = session.connection()
                waits = [
                    t
                    for t in (
                        queries.next_retry_at(conn, bulletin_id),
                        queries.earliest_lease_expiry(conn, bulletin_id),
                    )
                    if t is not None
                ]
                self._say_what_we_wait_for(conn, bulletin_id)
            now = self.clock()
            wait = min([(t - now).total_seconds() for t in waits] or [max_wait])
            self.stop.wait(min(max(wait, 0.01), max_wait))
        with Session(self.engine) as session:
            return send_summary(session, bulletin_id)

    def _say_what_we_wait_for(self, conn: sa.Connection, bulletin_id: int) -> None:
        """Log once per lease that another worker holds deliveries of this bulletin, and until when."""
        for lease_bulletin, token, until, n in queries.live_leases(conn, self.clock()):
            if (
                lease_bulletin != bulletin_id
                or token.startswith(self.worker + ":")
                or token in self._told_waiting
            ):
                continue
            self._told_waiting.add(token)
            log.warning(
                "bulletin %s: waiting for %d deliveries leased by worker %s until %s UTC (it is still "
                "sending them, or their lease must run out before they are sent again)",
                bulletin_id,
                n,
                leases.holder(token),
                until.strftime("%H:%M:%S"),
            )

    # --- one sending thread ------------------------------------------------------------------------
    def _thread(self, state: Pass) -> None:
        try:
            backend = self.backend_factory()
        except Exception as exc:
            log.error("a sending thread could not build its ESP backend: %s", exc)
            state.fatal = state.fatal or f"the ESP backend could not be built: {exc}"
            return
        try:
            BatchSender(self, state, backend).run()
        except sa.exc.DBAPIError as exc:
            log.error("a sending thread stopped: the database refused a write: %s", exc.orig)
            state.fatal = state.fatal or f"the database refused a write: {exc.orig}"
        except Exception as exc:
            log.exception("a sending thread stopped on an unexpected error")
            state.fatal = state.fatal or f"a sending thread stopped: {type(exc).__name__}: {exc}"
        finally:
            backend.close()

    # --- for the batch senders (`batch.Host`) ------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[sa.Connection]:
        """A write transaction. On SQLite the process's threads queue on a lock of their own: SQLite's busy
        handler would make them poll with sleeps of up to 100 ms instead."""
        with self.write_lock, self.engine.begin() as conn:
            yield conn

    def backoff(self, attempts: int) -> float:
        s = self.settings
        return backoff(attempts, s.RETRY_BASE_SECONDS, s.RETRY_MAX_SECONDS, self.rng.random)

    def progress(self, n: int) -> None:
        if n and self.on_progress is not None:
            self.on_progress(n)
