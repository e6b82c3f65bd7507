"""Every statement of the send path, in one package (dialect differences come from `core.dialect`).

    bulletins   start a bulletin (exactly one process wins), schedule slots, finish
    planning    who is eligible, which variant, the one planning INSERT … SELECT
    batches     claim a leased batch, record outcomes under the lease, recover expired leases
    reporting   read-only counts for summaries and the dashboard

Like procrastinate's `manager.py`, this package runs the statements and nothing else decides how rows
move; callers use `queries.<name>` whatever file it lives in. Each function takes a `Connection`
inside a transaction the caller opened (`engine.begin()`), so the caller decides what commits
together. The rules:

- **Start** (`claim_next_ready`, `claim_due`, `start`): one `UPDATE … WHERE id = (SELECT … FOR UPDATE
  SKIP LOCKED) RETURNING` moves a bulletin to `sending`, so exactly one process starts it.
- **Plan** (`plan`): one `INSERT … SELECT` creates a `pending` delivery for every eligible subscriber
  with its variant key (and a `skipped` or `global` one for those with no section this week), leaving
  out anyone the bulletin has a delivery for already. The variant is computed in SQL: each subscriber's
  matched regions become a bit mask (`SUM(1 << position)` over its subscriptions) and the mask becomes
  the key by concatenating the codes of its set bits in display order (SQLite 3.40 has no ordered
  `group_concat`). `variant_counts` uses the very same `eligible()` select.
- **Plan a local-time send**: the same statement, joined to a small (zone, due_at) VALUES table computed
  in Python for the bulletin's wall-clock slot (`core.zones`); each delivery's due time goes in
  `not_before`, which the claim already honours.
- **Batches** (`planning.cut_batches`): planning puts the new pending deliveries in `send_batch` rows,
  one per variant and window of 1000 ids, so a claim writes one row instead of a thousand.
- **Claim** (`claim_batch`): the next due batch of a `sending` bulletin (its `not_before` has passed: a
  retry time, or a local-time send's zone) becomes `sending` under a lease token unique to the claim;
  its due pending deliveries are what the worker sends. PostgreSQL locks the batch row with
  `FOR UPDATE SKIP LOCKED` so concurrent workers take different batches; SQLite relies on
  `BEGIN IMMEDIATE` (see `newsletter.core.db`), which serialises writers.
- **Record** (`record_*`): one statement per batch outcome, fenced by the lease: a worker whose lease
  was taken over can no longer change rows another worker now owns. `settle` ends the lease when the
  pass is over: the batch is `done`, or `pending` again for its retries.
- **Recover** (`recover_expired`): what was in flight under an expired lease goes back to `pending`
  (resend) or to `failed` (outcome unknown), and the batch is settled.

Datetimes are always bound through the typed table columns (`UTCDateTime`), so both databases store
and compare the same format.
"""

from __future__ import annotations

from newsletter.sending.queries.batches import (
    CANCELLED_REASON,
    LEASE_EXPIRED,
    UNKNOWN_OUTCOME,
    UNKNOWN_PREFIX,
    Claimed,
    Lease,
    claim_batch,
    count_retriable,
    earliest_lease_expiry,
    lease,
    live_leases,
    next_retry_at,
    record_accepted,
    record_failed,
    record_retry,
    record_skipped,
    recover_expired,
    release,
    requeue_failed,
    settle,
    skip_open,
    sweep_cancelled,
)
from newsletter.sending.queries.bulletins import (
    beat,
    claim_due,
    claim_next_ready,
    due_bulletins,
    due_now,
    empty_slots,
    finish_if_done,
    fire_slot,
    last_beat,
    next_due,
    outage_paused,
    sending_bulletins,
    set_local_slot,
    set_slot_bulletin,
    slot_fired,
    slot_queue,
    start,
    still_paused,
)
from newsletter.sending.queries.planning import (
    NO_SECTION_REASON,
    bulletin_regions,
    cut_batches,
    eligible,
    eligible_subscriber,
    local_slot,
    no_section_count,
    plan,
    variant_counts,
)
from newsletter.sending.queries.reporting import (
    delivered_variants,
    error_counts,
    event_counts,
    failed_shares,
    problem_deliveries,
    recent_test_sends,
    sent_since,
    status_counts,
    stopped_bulletins,
    zone_status_counts,
)

__all__ = [
    "CANCELLED_REASON",
    "LEASE_EXPIRED",
    "NO_SECTION_REASON",
    "UNKNOWN_OUTCOME",
    "UNKNOWN_PREFIX",
    "Claimed",
    "Lease",
    "beat",
    "bulletin_regions",
    "claim_batch",
    "claim_due",
    "claim_next_ready",
    "count_retriable",
    "cut_batches",
    "delivered_variants",
    "due_bulletins",
    "due_now",
    "earliest_lease_expiry",
    "eligible",
    "eligible_subscriber",
    "empty_slots",
    "error_counts",
    "event_counts",
    "failed_shares",
    "finish_if_done",
    "fire_slot",
    "last_beat",
    "lease",
    "live_leases",
    "local_slot",
    "next_due",
    "next_retry_at",
    "no_section_count",
    "outage_paused",
    "plan",
    "problem_deliveries",
    "recent_test_sends",
    "record_accepted",
    "record_failed",
    "record_retry",
    "record_skipped",
    "recover_expired",
    "release",
    "requeue_failed",
    "sending_bulletins",
    "sent_since",
    "set_local_slot",
    "set_slot_bulletin",
    "settle",
    "skip_open",
    "slot_fired",
    "slot_queue",
    "start",
    "status_counts",
    "still_paused",
    "stopped_bulletins",
    "sweep_cancelled",
    "variant_counts",
    "zone_status_counts",
]
