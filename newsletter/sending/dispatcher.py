"""The send path: start a bulletin, plan its deliveries, and send them in leased batches.

    dispatcher = Dispatcher(settings, engine)
    dispatcher.tick()                 # recover expired leases, start due bulletins, send what is ready
    dispatcher.run_until_done(id)     # `newsletter send ID`: keep going until the bulletin is finished

The queries are all in `newsletter.sending.queries`; this module decides what to do with their answers. A pass
(`work`) runs `SEND_CONCURRENCY` threads, each with its own ESP backend, each looping
claim → render (cached per variant) → send → record, until nothing is ready. Every batch outcome is
recorded in its own transaction right after the ESP answers, so a crash leaves at most one batch per
thread with an unknown outcome, and that batch's lease tells the next worker (`RESEND_ON_UNKNOWN`).

Outcomes: accepted → `accepted` with the message id; `RateLimited` → back to `pending` after the reset
(not counted as an attempt; every thread of the process waits too); `RetryableError` and anything
unexpected → `pending` after exponential backoff with jitter, `failed` after `MAX_ATTEMPTS`;
`BadRequest` → the batch is split in halves until the recipients at fault are alone, and only they fail;
`AuthFailed` → the batch goes back to `pending` and the bulletin is `paused` with the reason.

Lifecycle operations for people (`send_now`, `schedule`, `pause`, `resume`, `cancel`) are here too,
audited, and shared by the CLI and the admin.
"""

from __future__ import annotations

import logging
import os
import random
import secrets
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from newsletter.content.bulletins import change_status, get_bulletin, load_content
from newsletter.content.render import Renderer
from newsletter.content.types import BulletinContent, Recipient, RenderedVariant
from newsletter.core import audit
from newsletter.core.config import Settings
from newsletter.core.db import session_scope
from newsletter.core.errors import InvalidTransition
from newsletter.core.models import Bulletin, utcnow
from newsletter.core.status import OPEN_DELIVERY, BulletinStatus, DeliveryStatus
from newsletter.esp import backend_for
from newsletter.esp.base import (
    AuthFailed,
    BadRequest,
    EspBackend,
    RateLimited,
    RecipientResult,
    RetryableError,
)
from newsletter.sending import queries
from newsletter.sending.throttle import Throttle

log = logging.getLogger(__name__)

B = BulletinStatus
D = DeliveryStatus
CANCELLED_REASON = "bulletin cancelled"


def worker_name() -> str:
    """This process, as written in `leased_by`: host and pid."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}"


# --- reporting ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorCount:
    status: str
    error: str
    count: int


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

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def sent(self) -> int:
        """Deliveries the ESP took (accepted, and whatever its events moved them to since)."""
        return sum(n for s, n in self.counts.items() if s in queries.SENT_STATUSES)

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
        }

    def line(self) -> str:
        """One log line: counts per status, duration and rate."""
        counts = (
            ", ".join(f"{n} {s}" for s, n in sorted(self.counts.items(), key=lambda kv: -kv[1])) or "nothing"
        )
        duration = f" in {self.duration:.1f}s" if self.duration is not None else ""
        rate = f" ({self.rate:,.0f} recipients/s)" if self.rate else ""
        return f"bulletin {self.bulletin_id} {self.title!r} {self.status}: {counts}{duration}{rate}"


def summary(session: Session, bulletin_id: int, *, now: datetime | None = None) -> SendSummary:
    """The send summary of a bulletin from its delivery ledger (read afresh, whatever the session holds)."""
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
    )


def variant_counts(session: Session, bulletin_id: int, *, now: datetime | None = None) -> dict[str, int]:
    """How many subscribers eligible now get each variant of the bulletin (the planning rule, exactly)."""
    get_bulletin(session, bulletin_id)
    return queries.variant_counts(session.connection(), bulletin_id, now or utcnow())


# --- lifecycle, for people ------------------------------------------------------------------------------


def _locked(session: Session, bulletin_id: int) -> Bulletin:
    bulletin = session.get(Bulletin, bulletin_id, with_for_update=True, populate_existing=True)
    if bulletin is None:
        return get_bulletin(session, bulletin_id)  # raises NotFound
    return bulletin


def _to_sending(session: Session, bulletin: Bulletin, actor: str, now: datetime) -> int:
    change_status(session, bulletin, B.SENDING, actor=actor)
    if bulletin.started_at is None:
        bulletin.started_at = now
    bulletin.last_error = ""
    session.add(bulletin)
    session.flush()
    assert bulletin.id is not None
    planned = queries.plan(session.connection(), bulletin.id, now)
    log.info("bulletin %s %r: sending to %d new recipients (%s)", bulletin.id, bulletin.title, planned, actor)
    return planned


def send_now(session: Session, bulletin_id: int, *, actor: str = audit.CLI_ACTOR) -> int:
    """Start sending a bulletin now (from draft, ready or paused); returns how many deliveries were planned.

    A bulletin already sending is left as it is (0). Sent or cancelled ones raise InvalidTransition.
    """
    now = utcnow()
    bulletin = _locked(session, bulletin_id)
    if bulletin.status == B.SENDING:
        return 0
    if bulletin.status == B.DRAFT:
        change_status(session, bulletin, B.READY, actor=actor)
    return _to_sending(session, bulletin, actor, now)


def schedule(session: Session, bulletin_id: int, when: datetime, *, actor: str = audit.CLI_ACTOR) -> Bulletin:
    """Set a bulletin's own send time and make it `ready` (from draft, ready, or paused before it started)."""
    bulletin = _locked(session, bulletin_id)
    if bulletin.status == B.PAUSED and bulletin.started_at is not None:
        raise InvalidTransition(
            f"bulletin {bulletin_id} has already started sending; resume it instead of scheduling it"
        )
    return change_status(session, bulletin, B.READY, actor=actor, send_at=when, set_send_at=True)


def pause(session: Session, bulletin_id: int, *, actor: str = audit.CLI_ACTOR, reason: str = "") -> Bulletin:
    """Stop a ready or sending bulletin: no new batch is claimed; batches in flight finish and are recorded."""
    return change_status(session, _locked(session, bulletin_id), B.PAUSED, actor=actor, reason=reason)


def resume(session: Session, bulletin_id: int, *, actor: str = audit.CLI_ACTOR) -> Bulletin:
    """A paused bulletin goes on: back to `sending` (re-planned) if it had started, else back to `ready`."""
    bulletin = _locked(session, bulletin_id)
    if bulletin.status != B.PAUSED:
        raise InvalidTransition(f"bulletin {bulletin_id} is {bulletin.status}, not paused")
    if bulletin.started_at is not None:
        _to_sending(session, bulletin, actor, utcnow())
        return bulletin
    bulletin.last_error = ""
    return change_status(session, bulletin, B.READY, actor=actor)


def cancel(session: Session, bulletin_id: int, *, actor: str = audit.CLI_ACTOR) -> int:
    """Cancel a bulletin for good; its pending deliveries become `skipped`. Returns how many."""
    bulletin = _locked(session, bulletin_id)
    change_status(session, bulletin, B.CANCELLED, actor=actor)
    return queries.skip_open(session.connection(), bulletin_id, CANCELLED_REASON, utcnow())


# --- the dispatcher -------------------------------------------------------------------------------------


@dataclass
class PassReport:
    """What one `work` pass did, per bulletin."""

    accepted: Counter[int] = field(default_factory=Counter)
    retried: Counter[int] = field(default_factory=Counter)
    failed: Counter[int] = field(default_factory=Counter)
    skipped: Counter[int] = field(default_factory=Counter)
    requests: int = 0
    finished: list[int] = field(default_factory=list)

    @property
    def recipients(self) -> int:
        return sum(self.accepted.values()) + sum(self.failed.values()) + sum(self.skipped.values())


@dataclass
class _Batch:
    bulletin_id: int
    token: str
    variant_key: str
    rows: list[queries.ClaimedRow]
    attempts: int


class _Pass:
    """Shared state of one `work` pass: the bulletins, their content, the report and its lock."""

    def __init__(self, bulletin_ids: Sequence[int]) -> None:
        self.bulletin_ids = list(bulletin_ids)
        self.stopped: set[int] = set()
        self.contents: dict[int, BulletinContent] = {}
        self.report = PassReport()
        self.lock = threading.Lock()

    def count(self, kind: str, bulletin_id: int, n: int) -> None:
        if n:
            with self.lock:
                getattr(self.report, kind)[bulletin_id] += n


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
        self._gate_until = 0.0  # monotonic time before which no thread sends (after a 429)
        self._gate_lock = threading.Lock()
        self._write_lock: AbstractContextManager[object] = (
            threading.Lock() if engine.dialect.name == "sqlite" else nullcontext()
        )

    @contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """A write transaction. On SQLite the process's threads queue on a lock of their own: SQLite's busy
        handler would make them poll with sleeps of up to 100 ms instead."""
        with self._write_lock, self.engine.begin() as conn:
            yield conn

    # --- starting bulletins ----------------------------------------------------------------------
    def start_due(self) -> list[int]:
        """Start every `ready` bulletin whose own `send_at` has come, each planned in its own transaction."""
        started = []
        while not self.stop.is_set():
            now = self.clock()
            with self._transaction() as conn:
                bulletin_id = queries.claim_due(conn, now)
                if bulletin_id is None:
                    break
                planned = queries.plan(conn, bulletin_id, now)
                self._audit_start(conn, bulletin_id, "send_at reached")
            log.info("bulletin %s: its send time has come; sending to %d recipients", bulletin_id, planned)
            started.append(bulletin_id)
        return started

    def fire_slot(self, slot_at: datetime) -> int | None:
        """Fire one slot of `SEND_SCHEDULE`: once across all processes, start the oldest ready bulletin
        without a `send_at`. Returns its id, or None (slot fired elsewhere already, or nothing ready)."""
        now = self.clock()
        with self._transaction() as conn:
            if not queries.fire_slot(conn, slot_at, now, self.worker):
                log.debug("slot %s was fired already", slot_at.isoformat())
                return None
            bulletin_id = queries.claim_next_ready(conn, now)
            if bulletin_id is None:
                log.info("slot %s: no bulletin is ready; nothing sent", slot_at.isoformat())
                return None
            queries.set_slot_bulletin(conn, slot_at, bulletin_id)
            planned = queries.plan(conn, bulletin_id, now)
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
        with self._transaction() as conn:
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
        with self._transaction() as conn:
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
        state = _Pass(ids)
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
        with self._transaction() as conn:
            done = queries.finish_if_done(conn, bulletin_id, now)
        if done:
            with Session(self.engine) as session:
                log.info("%s", summary(session, bulletin_id, now=now).line())
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
            return summary(session, bulletin_id)

    # --- one sending thread ------------------------------------------------------------------------
    def _thread(self, state: _Pass) -> None:
        backend = self.backend_factory()
        try:
            limit = max(1, min(self.settings.BATCH_SIZE, backend.max_batch))
            while not self.stop.is_set():
                self._wait_gate()
                self.throttle.bucket.acquire(limit)
                batch = self._claim(state, limit)
                if batch is None:
                    return
                try:
                    self._process(state, backend, batch)
                except Exception:
                    log.exception("bulletin %s: unexpected error with a batch", batch.bulletin_id)
                    self._retry(
                        state, batch, None, "internal error (see the worker's log)", count_attempt=True
                    )
        except Exception:
            log.exception("a sending thread stopped on an unexpected error")
        finally:
            backend.close()

    def _claim(self, state: _Pass, limit: int) -> _Batch | None:
        """Lease the next batch of any bulletin of the pass; rows no longer eligible are skipped here."""
        while not self.stop.is_set():
            claimed_any = False
            for bulletin_id in state.bulletin_ids:
                if bulletin_id in state.stopped:
                    continue
                batch = self._claim_one(state, bulletin_id, limit)
                if batch is None:
                    continue
                claimed_any = True
                if batch.rows:
                    return batch
                break  # every row was skipped: claim again
            if not claimed_any:
                return None
        return None

    def _claim_one(self, state: _Pass, bulletin_id: int, limit: int) -> _Batch | None:
        token = f"{self.worker}:{secrets.token_hex(6)}"
        now = self.clock()
        lease_until = now + timedelta(seconds=self.settings.LEASE_SECONDS)
        skipped: dict[str, list[int]] = defaultdict(list)
        with self._transaction() as conn:
            claimed = queries.claim_batch(conn, bulletin_id, limit, token, now, lease_until)
            if claimed is None:
                return None
            variant, rows = claimed
            for row in rows:
                if not row.eligible:
                    skipped[row.reason].append(row.delivery_id)
            for reason, ids in skipped.items():
                queries.record_skipped(conn, bulletin_id, token, ids, reason, now)
        n_skipped = sum(len(v) for v in skipped.values())
        if n_skipped:
            state.count("skipped", bulletin_id, n_skipped)
            self._progress(n_skipped)
            log.info(
                "bulletin %s: %d recipients skipped at claim (%s)",
                bulletin_id,
                n_skipped,
                ", ".join(f"{len(v)} {k}" for k, v in skipped.items()),
            )
        good = [r for r in rows if r.eligible]
        return _Batch(bulletin_id, token, variant, good, max((r.attempts for r in good), default=0))

    def _content(self, state: _Pass, bulletin_id: int) -> BulletinContent:
        content = state.contents.get(bulletin_id)
        if content is None:
            with Session(self.engine) as session:
                content = load_content(session, bulletin_id)
            with state.lock:
                state.contents[bulletin_id] = content
        return content

    def _process(self, state: _Pass, backend: EspBackend, batch: _Batch) -> None:
        variant = self.renderer.variant(self._content(state, batch.bulletin_id), batch.variant_key)
        recipients = [
            Recipient(r.email or "", r.name, r.subscriber_id, r.delivery_id, batch.bulletin_id, r.link_secret)
            for r in batch.rows
        ]
        self._send(state, backend, batch, variant, recipients, first=True)

    def _send(
        self,
        state: _Pass,
        backend: EspBackend,
        batch: _Batch,
        variant: RenderedVariant,
        recipients: list[Recipient],
        *,
        first: bool,
    ) -> None:
        ids = [r.delivery_id for r in recipients if r.delivery_id is not None]
        if not first:
            self.throttle.bucket.acquire(len(recipients))  # a split resends: it costs tokens again
        try:
            with self.throttle.in_flight:
                with state.lock:
                    state.report.requests += 1
                results = backend.send(variant, recipients)
        except RateLimited as exc:
            wait = exc.retry_after if exc.retry_after is not None else self._backoff(batch.attempts)
            self._close_gate(wait)
            self._retry(state, batch, ids, str(exc), count_attempt=False, delay=wait)
        except AuthFailed as exc:
            self._auth_failed(state, batch, str(exc))
        except BadRequest as exc:
            if len(recipients) == 1:
                self._fail(state, batch, ids, str(exc))
                return
            middle = len(recipients) // 2
            log.info(
                "bulletin %s: the ESP refused a batch of %d (%s); splitting it to find the bad recipients",
                batch.bulletin_id,
                len(recipients),
                exc,
            )
            for half in (recipients[:middle], recipients[middle:]):
                if self.stop.is_set() or batch.bulletin_id in state.stopped:
                    break
                self._send(state, backend, batch, variant, half, first=False)
        except RetryableError as exc:
            delay = self._backoff(batch.attempts)
            if exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            self._retry(state, batch, ids, str(exc), count_attempt=True, delay=delay)
        else:
            self._record(state, batch, results, whole_batch=first)

    def _record(
        self, state: _Pass, batch: _Batch, results: list[RecipientResult], *, whole_batch: bool
    ) -> None:
        accepted = [
            (r.recipient.delivery_id, r.message_id)
            for r in results
            if r.accepted and r.recipient.delivery_id is not None
        ]
        refused = [r for r in results if not r.accepted]
        now = self.clock()
        with self._transaction() as conn:
            n = queries.record_accepted(
                conn,
                batch.bulletin_id,
                batch.token,
                accepted,
                now,
                whole_batch=whole_batch and len(accepted) == len(batch.rows),
            )
        state.count("accepted", batch.bulletin_id, n)
        self._progress(n)
        permanent: dict[str, list[int]] = defaultdict(list)
        later: dict[str, list[int]] = defaultdict(list)
        for r in refused:
            if r.recipient.delivery_id is not None:
                (permanent if r.permanent else later)[r.error or "refused"].append(r.recipient.delivery_id)
        for error, ids in permanent.items():
            self._fail(state, batch, ids, error)
        for error, ids in later.items():
            self._retry(state, batch, ids, error, count_attempt=True)

    def _retry(
        self,
        state: _Pass,
        batch: _Batch,
        ids: list[int] | None,
        error: str,
        *,
        count_attempt: bool,
        delay: float | None = None,
    ) -> None:
        now = self.clock()
        if delay is None:
            delay = self._backoff(batch.attempts)
        with self._transaction() as conn:
            retried, failed = queries.record_retry(
                conn,
                batch.bulletin_id,
                batch.token,
                ids,
                error,
                now + timedelta(seconds=delay),
                self.settings.MAX_ATTEMPTS,
                now,
                count_attempt=count_attempt,
            )
        state.count("retried", batch.bulletin_id, retried)
        state.count("failed", batch.bulletin_id, failed)
        self._progress(failed)
        if failed:
            log.warning(
                "bulletin %s: %d recipients failed after %d attempts: %s",
                batch.bulletin_id,
                failed,
                self.settings.MAX_ATTEMPTS,
                error,
            )
        if retried:
            log.info(
                "bulletin %s: %d recipients to retry in %.1fs: %s", batch.bulletin_id, retried, delay, error
            )

    def _fail(self, state: _Pass, batch: _Batch, ids: list[int], error: str) -> None:
        with self._transaction() as conn:
            n = queries.record_failed(conn, batch.bulletin_id, batch.token, ids, error, self.clock())
        state.count("failed", batch.bulletin_id, n)
        self._progress(n)
        log.warning("bulletin %s: %d recipients failed for good: %s", batch.bulletin_id, n, error)

    def _auth_failed(self, state: _Pass, batch: _Batch, error: str) -> None:
        now = self.clock()
        reason = (
            f"paused: the ESP refused our credentials ({error}). Fix the ESP settings, then run "
            f"`newsletter bulletins resume {batch.bulletin_id}`"
        )
        with state.lock:
            state.stopped.add(batch.bulletin_id)
        with self._write_lock, session_scope(self.engine) as session:
            queries.release(session.connection(), batch.bulletin_id, batch.token, now)
            bulletin = _locked(session, batch.bulletin_id)
            if bulletin.status == B.SENDING:
                change_status(session, bulletin, B.PAUSED, actor=audit.SYSTEM_ACTOR, reason=reason)
                log.error("bulletin %s %s", batch.bulletin_id, reason)

    # --- pacing ------------------------------------------------------------------------------------
    def _backoff(self, attempts: int) -> float:
        """Exponential backoff with jitter: base·2^attempts, capped, times a random factor in [0.5, 1]."""
        s = self.settings
        ceiling = min(s.RETRY_MAX_SECONDS, s.RETRY_BASE_SECONDS * (2 ** min(attempts, 30)))
        return ceiling * (0.5 + 0.5 * self.rng.random())

    def _close_gate(self, seconds: float) -> None:
        with self._gate_lock:
            self._gate_until = max(self._gate_until, time.monotonic() + seconds)

    def _wait_gate(self) -> None:
        while not self.stop.is_set():
            wait = self._gate_until - time.monotonic()
            if wait <= 0:
                return
            self.stop.wait(min(wait, 1.0))

    def _progress(self, n: int) -> None:
        if n and self.on_progress is not None:
            self.on_progress(n)
