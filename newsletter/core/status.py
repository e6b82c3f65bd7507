"""Every status vocabulary and the transitions allowed between them: one table per lifecycle.

Code that changes a status asks `check(...)` (or reads these tables in SQL terms) rather than
deciding on its own, so that the rules live in one place.
"""

from __future__ import annotations

from enum import StrEnum

from newsletter.core.errors import InvalidTransition


class SubscriberStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"
    COMPLAINED = "complained"


class BulletinStatus(StrEnum):
    DRAFT = "draft"
    READY = "ready"
    SENDING = "sending"
    SENT = "sent"
    PAUSED = "paused"
    CANCELLED = "cancelled"


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    ACCEPTED = "accepted"
    DEFERRED = "deferred"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    DROPPED = "dropped"
    COMPLAINED = "complained"
    FAILED = "failed"
    SKIPPED = "skipped"


class BatchStatus(StrEnum):
    """A `send_batch`: `pending` (some of its deliveries wait to be sent), `sending` (leased by a
    worker), `done` (none of its deliveries is pending)."""

    PENDING = "pending"
    SENDING = "sending"
    DONE = "done"


class ItemKind(StrEnum):
    """How an item is labelled: a prayer request, a praise report, or plain (no label: a statement)."""

    PRAY = "pray"
    PRAISE = "praise"
    PLAIN = "plain"


class Role(StrEnum):
    STAFF = "staff"
    VOLUNTEER = "volunteer"


class SuppressionReason(StrEnum):
    UNSUBSCRIBE = "unsubscribe"
    BOUNCE = "bounce"
    COMPLAINT = "complaint"
    MANUAL = "manual"
    ERASED = "erased"


S = SubscriberStatus
SUBSCRIBER_TRANSITIONS: dict[SubscriberStatus, frozenset[SubscriberStatus]] = {
    S.PENDING: frozenset({S.ACTIVE, S.UNSUBSCRIBED, S.BOUNCED, S.COMPLAINED}),
    S.ACTIVE: frozenset({S.UNSUBSCRIBED, S.BOUNCED, S.COMPLAINED}),
    # An address that left comes back only by confirming again (pending → active). The ESP may still
    # report a bounce or a complaint about mail sent before it left: that is stronger, and final.
    S.UNSUBSCRIBED: frozenset({S.PENDING, S.BOUNCED, S.COMPLAINED}),
    # A complaint may follow a bounce (as in DELIVERY_RANK): the stronger status, as its suppression.
    S.BOUNCED: frozenset({S.COMPLAINED}),
    S.COMPLAINED: frozenset(),
}
"""Where a subscriber may go from each status. Nothing, not even an import, re-activates a lost address."""


SUPPRESSION_FOR_STATUS: dict[SubscriberStatus, SuppressionReason] = {
    S.COMPLAINED: SuppressionReason.COMPLAINT,
    S.BOUNCED: SuppressionReason.BOUNCE,
    S.UNSUBSCRIBED: SuppressionReason.UNSUBSCRIBE,
}
"""The statuses that mean "never mail this address again", strongest first, each with the suppression
it adds. One rule for every way a status changes: ESP events (`sending.events`) and staff edits
(`audience.staff`) both read it, so an address marked bounced is suppressed whoever marked it."""

SUPPRESSION_RANK: dict[SuppressionReason, int] = {
    SuppressionReason.UNSUBSCRIBE: 0,
    SuppressionReason.BOUNCE: 1,
    SuppressionReason.COMPLAINT: 2,
    SuppressionReason.MANUAL: 3,
    SuppressionReason.ERASED: 4,
}
"""An address has one suppression, whose reason only ever rises in this order (`suppression_rises`).

A person's own unsubscribe is the weakest: they may undo it by confirming again, so a bounce or a
complaint reported after it must replace it, or the address could come back. A complaint outranks a
bounce (the person, not only the mailbox, refused our mail). A staff decision keeps its reason and the
note staff wrote; the ESP's events are still stored. An erasure is never replaced: nothing may write an
address, or a weaker reason, back into the suppression of someone who asked to be forgotten."""


def suppression_rises(current: str, new: str) -> bool:
    """True when a suppression held for `current` should take `new` as its reason instead."""
    return SUPPRESSION_RANK[SuppressionReason(new)] > SUPPRESSION_RANK[SuppressionReason(current)]


B = BulletinStatus
BULLETIN_TRANSITIONS: dict[BulletinStatus, frozenset[BulletinStatus]] = {
    B.DRAFT: frozenset({B.READY, B.CANCELLED}),
    B.READY: frozenset({B.DRAFT, B.SENDING, B.PAUSED, B.CANCELLED}),
    B.SENDING: frozenset({B.SENT, B.PAUSED, B.CANCELLED}),
    B.PAUSED: frozenset({B.READY, B.SENDING, B.CANCELLED}),
    B.SENT: frozenset({B.SENDING}),  # only `send --retry-failed`: failed deliveries queued again
    B.CANCELLED: frozenset(),
}

PUBLISHED_BULLETIN = frozenset({B.SENDING, B.SENT})
"""Bulletins whose emails have gone out: the only ones the public archive, the feeds and the engagement
trend show (drafts, scheduled, paused and cancelled bulletins never appear)."""

EDITABLE_BULLETIN = frozenset({B.DRAFT, B.READY, B.PAUSED})
"""A bulletin whose content may still change; once sending starts, recipients must all get the same text."""

D = DeliveryStatus
DELIVERY_RANK: dict[DeliveryStatus, int] = {
    D.PENDING: 0,
    D.SENDING: 1,
    D.ACCEPTED: 2,
    D.DEFERRED: 3,
    D.DELIVERED: 4,
    D.BOUNCED: 10,
    D.DROPPED: 10,
    D.COMPLAINED: 11,
    D.FAILED: 10,
    D.SKIPPED: 10,
}
"""Delivery events only move a delivery forward in this order; rank ≥ 10 is final (a complaint may still
follow a delivery or a bounce, which is why it ranks highest)."""

OPEN_DELIVERY = frozenset({D.PENDING, D.SENDING})
"""Deliveries that still need work: a bulletin is finished when none of these remain."""
SENT_DELIVERY = frozenset({D.ACCEPTED, D.DEFERRED, D.DELIVERED, D.BOUNCED, D.DROPPED, D.COMPLAINED})
"""Deliveries the ESP took (whatever its events moved them to since): what the send rate counts."""


def check_subscriber(current: str, new: str) -> None:
    """Raise `InvalidTransition` unless a subscriber may go from `current` to `new` (same is allowed)."""
    if current == new:
        return
    if SubscriberStatus(new) not in SUBSCRIBER_TRANSITIONS[SubscriberStatus(current)]:
        raise InvalidTransition(f"a subscriber cannot go from {current} to {new}")


def check_bulletin(current: str, new: str) -> None:
    """Raise `InvalidTransition` unless a bulletin may go from `current` to `new`."""
    if BulletinStatus(new) not in BULLETIN_TRANSITIONS[BulletinStatus(current)]:
        raise InvalidTransition(f"a bulletin cannot go from {current} to {new}")


def delivery_moves_forward(current: str, new: str) -> bool:
    """True when an ESP event saying `new` should replace `current` (never backwards, never out of final)."""
    return DELIVERY_RANK[DeliveryStatus(new)] > DELIVERY_RANK[DeliveryStatus(current)]
