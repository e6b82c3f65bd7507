"""The send loop of one process: start due bulletins, recover expired leases, and send in leased batches.

    dispatcher = Dispatcher(settings, engine)
    dispatcher.tick()                 # recover expired leases, start due bulletins, send what is ready
    dispatcher.run_until_done(id)     # `newsletter send ID`: keep going until the bulletin is finished

The statements are in `newsletter.sending.queries`; this module decides what to do with their answers.
A pass (`work`) runs `SEND_CONCURRENCY` threads, each with its own ESP backend and its own
`batch.BatchSender` (claim → render, cached per variant → send → record), until nothing is ready; then
each bulletin with nothing open is finished. What people do to a send (send now, pause…) is
`newsletter.sending.lifecycle`; where a send stands is `newsletter.sending.summary`.
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
from newsletter.core.models import utcnow
from newsletter.core.status import BulletinStatus
from newsletter.esp import backend_for
from newsletter.esp.base import EspBackend
from newsletter.sending import queries
from newsletter.sending.batch import BatchSender, Pass, PassReport
from newsletter.sending.summary import SendSummary, send_summary
from newsletter.sending.throttle import Gate, Throttle, backoff

log = logging.getLogger(__name__)

B = BulletinStatus


def worker_name() -> str:
    """This process, as written in `leased_by`: host and pid."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


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
        self.write_lock: AbstractContextManager[object] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )

    # --- starting bulletins ----------------------------------------------------------------------
    def start_due(self) -> list[int]:
        """Start every `ready` bulletin whose own `send_at` has come, each planned in its own transaction."""
        started = []
        while not self.stop.is_set():
            now = self.clock()
            with self.transaction() as conn:
                bulletin_id = queries.claim_due(conn, now)
                if bulletin_id is None:
                    break
                planned = queries.plan(conn, bulletin_id, now, default_zone=self.settings.TIMEZONE)
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
            if not queries.fire_slot(conn, slot_at, now, self.worker):
                log.debug("slot %s was fired already", slot_at.isoformat())
                return None
            bulletin_id = queries.claim_next_ready(conn, now)
            if bulletin_id is None:
                log.info("slot %s: no bulletin is ready; nothing sent", slot_at.isoformat())
                return None
            queries.set_slot_bulletin(conn, slot_at, bulletin_id)
            if local is not None:
                queries.set_local_slot(conn, bulletin_id, local)
            planned = queries.plan(conn, bulletin_id, now, default_zone=self.settings.TIMEZONE)
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

    # --- recovery ----------------------------------------------------------------------------------
    def recover(self) -> int:
        """Expired leases (a worker died mid-batch): resend or fail them as `RESEND_ON_UNKNOWN` says."""
        resend = self.settings.RESEND_ON_UNKNOWN
        with self.transaction() as conn:
            recovered = queries.recover_expired(conn, self.clock(), resend=resend)
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

    def tick(self) -> PassReport:
        """What the scheduler's interval job does: recover, start due bulletins, send what is ready."""
        self.recover()
        self.start_due()
        return self.work()

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
                log.info("%s", send_summary(session, bulletin_id, now=now).line())
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
            now = self.clock()
            wait = min([(t - now).total_seconds() for t in waits] or [max_wait])
            self.stop.wait(min(max(wait, 0.01), max_wait))
        with Session(self.engine) as session:
            return send_summary(session, bulletin_id)

    # --- one sending thread ------------------------------------------------------------------------
    def _thread(self, state: Pass) -> None:
        try:
            backend = self.backend_factory()
        except Exception:
            log.exception("a sending thread could not build its ESP backend")
            return
        try:
            BatchSender(self, state, backend).run()
        except Exception:
            log.exception("a sending thread stopped on an unexpected error")
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
