"""One sending thread's work: claim a leased batch, render its variant, send it, record every outcome.

A `work` pass of the dispatcher runs `SEND_CONCURRENCY` threads; each owns one ESP backend and one
`BatchSender`, and they share a `Pass` (the bulletins, their content, the report). What happens to a
batch depends on what the ESP answers:

- accepted → `accepted` with the ESP's message id;
- `RateLimited` → back to `pending` after the reset time, not counted as an attempt, and the whole
  process waits (the shared `Gate`);
- `RetryableError` → `pending` after exponential backoff with jitter, never `failed`: the fault is the
  ESP's. After `ESP_OUTAGE_BATCHES` such batches in a row (`outage.EspHealth`), or a batch at
  `MAX_ATTEMPTS`, the bulletin is `paused` as an outage and resumed when the ESP answers again;
- `OutcomeUnknown` (the ESP may have taken the batch) → as above, counted as ambiguous in the ledger, when
  `RESEND_ON_UNKNOWN` is on; `failed` ("outcome unknown") when it is off, so nobody gets two copies;
- `BadRequest` → the batch is split in halves until the recipients at fault are alone; only they fail.
  One that blames the request itself (the sender, the content) pauses the bulletin instead;
- `AuthFailed` → the batch goes back to `pending` and the bulletin is `paused` with the reason;
- a database error stops the thread (nothing can be recorded); anything else unexpected puts the batch
  back and pauses the bulletin with the error.

A recipient is `failed` only for a reason about that recipient: the ESP refused the address, refused it
temporarily `MAX_ATTEMPTS` times, or (with `RESEND_ON_UNKNOWN` off) its copy may already be out.

Every outcome is recorded in its own transaction right after the ESP answers, fenced by the lease
token, so a crash leaves at most one batch per thread with an unknown outcome. When its pass is over the
batch is settled: `done`, or `pending` again for its retries.
"""

from __future__ import annotations

import logging
import secrets
import threading
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from newsletter.content.bulletins import load_content
from newsletter.content.render import Renderer
from newsletter.content.types import BulletinContent, Recipient, RenderedVariant
from newsletter.core.config import Settings
from newsletter.core.db import session_scope
from newsletter.core.status import BulletinStatus
from newsletter.esp.base import (
    AuthFailed,
    BadRequest,
    EspBackend,
    OutcomeUnknown,
    RateLimited,
    RecipientResult,
    RetryableError,
)
from newsletter.sending import queries
from newsletter.sending.alerts import Alerts
from newsletter.sending.lifecycle import stop_sending
from newsletter.sending.outage import EspHealth, outage_reason
from newsletter.sending.throttle import Gate, Throttle

log = logging.getLogger(__name__)

B = BulletinStatus

REQUEST_SECONDS = 60.0
"""What one request may take once sent (twice the backends' default timeout): a split half is only sent
after a rate-limit wait if its lease outlasts the wait by at least this much."""


@dataclass
class PassReport:
    """What one `work` pass did, per bulletin."""

    accepted: Counter[int] = field(default_factory=Counter)
    retried: Counter[int] = field(default_factory=Counter)
    failed: Counter[int] = field(default_factory=Counter)
    skipped: Counter[int] = field(default_factory=Counter)
    requests: int = 0
    finished: list[int] = field(default_factory=list)
    paused: list[int] = field(default_factory=list)
    """Bulletins the send path paused in this pass (an outage, credentials refused, a bad request, an
    internal error): they are not finished, whoever asked for the pass must hear so."""

    @property
    def recipients(self) -> int:
        return sum(self.accepted.values()) + sum(self.failed.values()) + sum(self.skipped.values())


@dataclass
class Batch:
    """Deliveries of one bulletin and one variant, leased together under `token`."""

    bulletin_id: int
    token: str
    variant_key: str
    recipients: list[Recipient]
    attempts: int
    settled: bool = False
    """Its lease has ended (see `queries.settle`)."""
    lease_until: datetime | None = None
    """When its lease runs out: after that, lease recovery may hand its rows to another worker."""


class Pass:
    """Shared state of one `work` pass: the bulletins, their content, the report and its lock."""

    def __init__(self, bulletin_ids: Sequence[int]) -> None:
        self.bulletin_ids = list(bulletin_ids)
        self.stopped: set[int] = set()
        self.fatal: str = ""
        """Why a thread could not go on at all (no backend, the database refusing writes): the pass fails."""
        self.contents: dict[int, BulletinContent] = {}
        self.report = PassReport()
        self.lock = threading.Lock()

    def count(self, counter: Counter[int], bulletin_id: int, n: int) -> None:
        """Add `n` to one of the report's counters (`self.report.accepted`…) for a bulletin."""
        if n:
            with self.lock:
                counter[bulletin_id] += n


class Host(Protocol):
    """What a sender needs from the dispatcher that runs it (shared by all its threads)."""

    settings: Settings
    engine: Engine
    renderer: Renderer
    throttle: Throttle
    gate: Gate
    health: EspHealth
    alerts: Alerts
    worker: str
    stop: threading.Event
    write_lock: AbstractContextManager[object]
    clock: Callable[[], datetime]

    def transaction(self) -> AbstractContextManager[sa.Connection]: ...

    def backoff(self, attempts: int) -> float: ...

    def progress(self, n: int) -> None: ...


class BatchSender:
    """Sends batches for one thread of a pass until none is left (or the dispatcher stops)."""

    def __init__(self, host: Host, state: Pass, backend: EspBackend) -> None:
        self.host = host
        self.state = state
        self.backend = backend

    def run(self) -> None:
        """Claim and send batches until none is ready. An unexpected error with a batch retries it (it
        counts as an attempt) rather than losing it."""
        limit = max(1, min(self.host.settings.BATCH_SIZE, self.backend.max_batch))
        while not self.host.stop.is_set():
            self.host.gate.wait()
            self.host.throttle.bucket.acquire(limit)
            batch = self.claim(limit)
            if batch is None:
                return
            try:
                self.process(batch)
            except sa.exc.DBAPIError:
                raise  # nothing can be recorded: the thread stops (see Dispatcher._thread)
            except Exception as exc:
                log.exception("bulletin %s: unexpected error with a batch", batch.bulletin_id)
                error = f"stopped on an internal error ({type(exc).__name__}: {exc}); see the worker's log"
                reason = f"{error}. Fix it, then run `newsletter send {batch.bulletin_id}`"
                self._pause(batch, reason, error=error)
            else:
                if not batch.settled:  # done, or pending again for what is left (retries, a stop)
                    with self.host.transaction() as conn:
                        queries.settle(conn, batch.token, self.host.clock())

    def claim(self, limit: int) -> Batch | None:
        """Lease the next batch of any bulletin of the pass; rows no longer eligible are skipped here."""
        while not self.host.stop.is_set():
            claimed_any = False
            for bulletin_id in self.state.bulletin_ids:
                if bulletin_id in self.state.stopped:
                    continue
                batch = self._claim_one(bulletin_id, limit)
                if batch is None:
                    continue
                claimed_any = True
                if batch.recipients:
                    return batch
                break  # every row was skipped: claim again
            if not claimed_any:
                return None
        return None

    def _claim_one(self, bulletin_id: int, limit: int) -> Batch | None:
        token = f"{self.host.worker}:{secrets.token_hex(6)}"
        now = self.host.clock()
        lease_until = now + timedelta(seconds=self.host.settings.LEASE_SECONDS)
        with self.host.transaction() as conn:
            claimed = queries.claim_batch(conn, bulletin_id, limit, token, now, lease_until)
            if claimed is None:
                return None
            for reason, ids in claimed.skipped.items():
                queries.record_skipped(conn, bulletin_id, token, ids, reason, now)
            if not claimed.recipients:
                queries.settle(conn, token, now)  # nobody left to mail in it
        n_skipped = sum(len(v) for v in claimed.skipped.values())
        if n_skipped:
            self.state.count(self.state.report.skipped, bulletin_id, n_skipped)
            self.host.progress(n_skipped)
            log.info(
                "bulletin %s: %d recipients skipped at claim (%s)",
                bulletin_id,
                n_skipped,
                ", ".join(f"{len(v)} {k}" for k, v in claimed.skipped.items()),
            )
        return Batch(
            bulletin_id, token, claimed.variant, claimed.recipients, claimed.attempts, lease_until=lease_until
        )

    def _content(self, bulletin_id: int) -> BulletinContent:
        content = self.state.contents.get(bulletin_id)
        if content is None:
            with Session(self.host.engine) as session:
                content = load_content(session, bulletin_id)
            with self.state.lock:
                self.state.contents[bulletin_id] = content
        return content

    def process(self, batch: Batch) -> None:
        variant = self.host.renderer.variant(self._content(batch.bulletin_id), batch.variant_key)
        self._send(batch, variant, batch.recipients, first=True)

    def _send(
        self,
        batch: Batch,
        variant: RenderedVariant,
        recipients: list[Recipient],
        *,
        first: bool,
    ) -> None:
        ids = [r.delivery_id for r in recipients if r.delivery_id is not None]
        if not first:
            self.host.throttle.bucket.acquire(len(recipients))  # a split resends: it costs tokens again
        try:
            with self.host.throttle.in_flight:
                with self.state.lock:
                    self.state.report.requests += 1
                results = self.backend.send(variant, recipients)
        except RateLimited as exc:
            wait = exc.retry_after if exc.retry_after is not None else self.host.backoff(batch.attempts)
            self.host.gate.close_for(wait)
            self._retry(batch, ids, str(exc), count_attempt=False, delay=wait)
        except AuthFailed as exc:
            self._auth_failed(batch, str(exc))
        except BadRequest as exc:
            if exc.blames_request:
                reason = (
                    f"paused: the ESP refused the request itself, not a recipient ({exc}). Fix the "
                    f"settings (`newsletter check`), then run `newsletter send {batch.bulletin_id}`"
                )
                self._pause(batch, reason, error=str(exc))
                return
            if len(recipients) == 1:
                self._fail(batch, ids, str(exc))
                return
            middle = len(recipients) // 2
            log.info(
                "bulletin %s: the ESP refused a batch of %d (%s); splitting it to find the bad recipients",
                batch.bulletin_id,
                len(recipients),
                exc,
            )
            for half in (recipients[:middle], recipients[middle:]):
                if self._wait_outlasts_lease(batch):
                    # Waiting out the rate limit would outlive the lease: lease recovery could hand these
                    # rows to another worker, and both would send them. Back to pending, due at the reset.
                    self._retry(
                        batch,
                        [r.delivery_id for r in half if r.delivery_id is not None],
                        "rate limited until after this batch's lease ends; sent when the limit resets",
                        count_attempt=False,
                        delay=self.host.gate.remaining(),
                    )
                    continue
                self.host.gate.wait()  # a half answered 429: the other waits out the rate limit too
                if self.host.stop.is_set() or batch.bulletin_id in self.state.stopped:
                    break
                self._send(batch, variant, half, first=False)
        except OutcomeUnknown as exc:
            self._unknown(batch, ids, str(exc))
        except RetryableError as exc:
            delay = self.host.backoff(batch.attempts)
            if exc.retry_after is not None:
                delay = max(delay, exc.retry_after)
            self._retry(batch, ids, str(exc), count_attempt=True, delay=delay, give_up=False)
            self._esp_failed(batch, str(exc))
        else:
            self.host.health.ok()
            self._record(batch, results, whole_batch=first)

    def _wait_outlasts_lease(self, batch: Batch) -> bool:
        """Whether waiting for the rate-limit gate, then one request (`REQUEST_SECONDS`), would end after
        the batch's lease."""
        wait = self.host.gate.remaining()
        if not wait or batch.lease_until is None:
            return False
        left = (batch.lease_until - self.host.clock()).total_seconds()
        return wait + REQUEST_SECONDS >= left

    def _unknown(self, batch: Batch, ids: list[int], error: str) -> None:
        """The ESP may have taken the batch: send it again or not, as `RESEND_ON_UNKNOWN` says."""
        if self.host.settings.RESEND_ON_UNKNOWN:
            note = f"{error}; outcome unknown, sent again (RESEND_ON_UNKNOWN=true)"
            self._retry(batch, ids, note, count_attempt=True, give_up=False, ambiguous=True)
        else:
            note = f"{queries.UNKNOWN_PREFIX} ({error}); not sent again (RESEND_ON_UNKNOWN=false)"
            with self.host.transaction() as conn:
                n = queries.record_failed(
                    conn,
                    batch.bulletin_id,
                    batch.token,
                    ids,
                    note,
                    self.host.clock(),
                    refused=False,
                    ambiguous=True,
                )
            self.state.count(self.state.report.failed, batch.bulletin_id, n)
            self.host.progress(n)
            log.warning("bulletin %s: %d recipients failed: %s", batch.bulletin_id, n, note)
        self._esp_failed(batch, error)

    def _esp_failed(self, batch: Batch, error: str) -> None:
        """A batch failed as a whole: pause as an outage once enough have in a row, or this one is out of
        attempts (its recipients stay pending either way)."""
        since = self.host.health.failed()
        if since is None and batch.attempts + 1 < self.host.settings.MAX_ATTEMPTS:
            return
        since = since or self.host.clock()
        self._pause(batch, outage_reason(batch.bulletin_id, since, error), esp_down_since=since)

    def _record(self, batch: Batch, results: list[RecipientResult], *, whole_batch: bool) -> None:
        accepted = [
            (r.recipient.delivery_id, r.message_id)
            for r in results
            if r.accepted and r.recipient.delivery_id is not None
        ]
        refused = [r for r in results if not r.accepted]
        now = self.host.clock()
        every_one = whole_batch and len(accepted) == len(batch.recipients)
        with self.host.transaction() as conn:
            n = queries.record_accepted(conn, batch.bulletin_id, batch.token, accepted, now)
            if every_one:  # the usual end of a batch, settled in the same transaction
                queries.settle(conn, batch.token, now)
                batch.settled = True
        self.state.count(self.state.report.accepted, batch.bulletin_id, n)
        self.host.progress(n)
        permanent: dict[str, list[int]] = defaultdict(list)
        later: dict[str, list[int]] = defaultdict(list)
        for r in refused:
            if r.recipient.delivery_id is not None:
                (permanent if r.permanent else later)[r.error or "refused"].append(r.recipient.delivery_id)
        for error, ids in permanent.items():
            self._fail(batch, ids, error)
        for error, ids in later.items():
            self._retry(batch, ids, error, count_attempt=True)

    def _retry(
        self,
        batch: Batch,
        ids: list[int] | None,
        error: str,
        *,
        count_attempt: bool,
        delay: float | None = None,
        give_up: bool = True,
        ambiguous: bool = False,
    ) -> None:
        """Back to pending after `delay`; `give_up=False` when the fault is not the recipients' (they are
        never failed for it)."""
        now = self.host.clock()
        if delay is None:
            delay = self.host.backoff(batch.attempts)
        with self.host.transaction() as conn:
            retried, failed = queries.record_retry(
                conn,
                batch.bulletin_id,
                batch.token,
                ids,
                error,
                now + timedelta(seconds=delay),
                self.host.settings.MAX_ATTEMPTS if give_up else None,
                now,
                count_attempt=count_attempt,
                ambiguous=ambiguous,
            )
        self.state.count(self.state.report.retried, batch.bulletin_id, retried)
        self.state.count(self.state.report.failed, batch.bulletin_id, failed)
        self.host.progress(failed)
        if failed:
            log.warning(
                "bulletin %s: %d recipients failed after %d attempts: %s",
                batch.bulletin_id,
                failed,
                self.host.settings.MAX_ATTEMPTS,
                error,
            )
        if retried:
            log.info(
                "bulletin %s: %d recipients to retry in %.1fs: %s", batch.bulletin_id, retried, delay, error
            )

    def _fail(self, batch: Batch, ids: list[int], error: str) -> None:
        with self.host.transaction() as conn:
            n = queries.record_failed(conn, batch.bulletin_id, batch.token, ids, error, self.host.clock())
        self.state.count(self.state.report.failed, batch.bulletin_id, n)
        self.host.progress(n)
        log.warning("bulletin %s: %d recipients failed for good: %s", batch.bulletin_id, n, error)

    def _auth_failed(self, batch: Batch, error: str) -> None:
        self._pause(
            batch,
            f"paused: the ESP refused our credentials ({error}). Fix the ESP settings, then run "
            f"`newsletter bulletins resume {batch.bulletin_id}`",
        )

    def _pause(
        self, batch: Batch, reason: str, *, error: str = "", esp_down_since: datetime | None = None
    ) -> None:
        """Stop this bulletin in this pass: what is still leased of the batch goes back to `pending` (not
        counted as an attempt, with `error` if given) and the bulletin is paused with `reason`."""
        with self.state.lock:
            self.state.stopped.add(batch.bulletin_id)
        now = self.host.clock()
        with self.host.write_lock, session_scope(self.host.engine) as session:
            queries.release(session.connection(), batch.bulletin_id, batch.token, now, error)
            paused = stop_sending(session, batch.bulletin_id, reason, esp_down_since=esp_down_since)
        if paused:
            with self.state.lock:
                self.state.report.paused.append(batch.bulletin_id)
            self.host.alerts.paused(batch.bulletin_id, reason, esp_down=esp_down_since is not None)
