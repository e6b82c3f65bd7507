"""Suppressions: the CLI, the rules for who may lift one, and that every send honours them."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from newsletter.audience import optin, suppressions
from newsletter.core.db import session_scope
from newsletter.core.models import AuditEntry, Delivery, Subscriber, Suppression, email_hash, utcnow
from newsletter.core.status import SubscriberStatus, SuppressionReason
from newsletter.esp.sendgrid.events import Event
from newsletter.sending.dispatcher import Dispatcher
from newsletter.sending.events import apply_events
from newsletter.sending.lifecycle import send_now
from tests.factories import MakeBulletin, MakeSubscriber


def test_add_list_and_remove_from_the_command_line(cli, engine: Engine) -> None:
    assert (
        "suppressed (manual)"
        in cli("suppressions", "add", "Ada@Example.org", "--note", "asked by phone").output
    )
    assert "already suppressed" in cli("suppressions", "add", "ada@example.org", "--reason", "bounce").output
    listed = cli("suppressions", "list").output
    assert "ada@example.org" in listed and "manual" in listed and "asked by phone" in listed
    assert (
        "bounce" not in cli("suppressions", "list", "--reason", "manual").output.split("ada@example.org")[0]
    )
    assert "removed" in cli("suppressions", "remove", "ada@example.org").output
    assert "not suppressed" in cli("suppressions", "remove", "ada@example.org", code=1).output
    assert "invalid email" in cli("suppressions", "add", "nobody", code=1).output
    with Session(engine) as s:
        actions = s.exec(
            select(AuditEntry.action).where(AuditEntry.entity_type == "suppression").order_by(AuditEntry.id)
        ).all()
    assert actions == ["suppression.add", "suppression.remove"]


def test_an_erased_address_is_listed_without_it(cli, engine: Engine) -> None:
    with session_scope(engine) as s:
        s.add(Suppression(email_hash="0" * 64, email=None, reason=SuppressionReason.ERASED))
    assert "(erased)" in cli("suppressions", "list").output


def test_only_the_owners_own_unsubscribe_is_lifted_by_confirming(engine: Engine) -> None:
    with session_scope(engine) as s:
        suppressions.add(s, "left@example.org", SuppressionReason.UNSUBSCRIBE)
        suppressions.add(s, "bounced@example.org", SuppressionReason.BOUNCE)
    with session_scope(engine) as s:
        assert suppressions.lift_for_confirmation(s, "left@example.org")
        assert not suppressions.lift_for_confirmation(s, "bounced@example.org")
        assert not suppressions.blocks_subscription(suppressions.find(s, "left@example.org"))
        assert suppressions.blocks_subscription(suppressions.find(s, "bounced@example.org"))
        assert suppressions.lift_for_confirmation(s, "never@example.org"), "nothing holds it"
        assert suppressions.find(s, "bounced@example.org") is not None


STRONGER_LAST = [
    SuppressionReason.UNSUBSCRIBE,
    SuppressionReason.BOUNCE,
    SuppressionReason.COMPLAINT,
    SuppressionReason.MANUAL,
    SuppressionReason.ERASED,
]
"""A person's own unsubscribe is the weakest reason (they may undo it); an erasure is never replaced."""


def test_a_suppression_takes_the_stronger_reason_and_never_a_weaker_one(engine: Engine) -> None:
    pairs = list(itertools.product(STRONGER_LAST, repeat=2))
    with session_scope(engine) as s:
        for n, (first, _) in enumerate(pairs):
            address = f"p{n}@example.org"
            if first == SuppressionReason.ERASED:  # as erasure leaves it: the hash, no address
                s.add(Suppression(email_hash=email_hash(address), email=None, reason=first))
            else:
                suppressions.add(s, address, first, note="first")
    with session_scope(engine) as s:
        changed = [
            suppressions.add(s, f"p{n}@example.org", then, note="then") for n, (_, then) in enumerate(pairs)
        ]
    with Session(engine) as s:
        found = {x.email_hash: x for x in s.exec(select(Suppression)).all()}
    for n, (first, then) in enumerate(pairs):
        kept = found[email_hash(f"p{n}@example.org")]
        stronger = max(first, then, key=STRONGER_LAST.index)
        assert (kept.reason, changed[n]) == (stronger, then != first and stronger == then), (first, then)
        assert kept.note == ("then" if changed[n] else "first" if first != SuppressionReason.ERASED else "")
        # An erased suppression never holds the address, whether it was erased first or raised to it.
        assert (kept.email is None) == (stronger == SuppressionReason.ERASED)


def test_a_suppressed_subscriber_gets_no_delivery(
    settings, engine: Engine, session: Session, make_subscriber: MakeSubscriber, make_bulletin: MakeBulletin
) -> None:
    kept = make_subscriber("kept@example.org")
    make_subscriber("manual@example.org")
    session.rollback()
    with session_scope(engine) as s:
        suppressions.add(s, "manual@example.org", SuppressionReason.MANUAL)
    bulletin = make_bulletin()
    with session_scope(engine) as s:
        send_now(s, bulletin.id)
    Dispatcher(settings, engine).run_until_done(bulletin.id, max_wait=0.2)
    with Session(engine) as s:
        deliveries = s.exec(select(Delivery)).all()
    assert [d.subscriber_id for d in deliveries] == [kept.id]
    assert len(list((Path(settings.OUTBOX_DIR) / f"bulletin-{bulletin.id}").glob("*.eml"))) == 1


# --- confirming again races the ESP's bounce -------------------------------------------------------
def left(engine: Engine, make_subscriber: MakeSubscriber) -> Subscriber:
    """A subscriber who unsubscribed (their own suppression, which confirming may lift)."""
    subscriber = make_subscriber("left@example.org", status=SubscriberStatus.UNSUBSCRIBED)
    with Session(engine) as s:
        found = suppressions.find(s, subscriber.email)
        assert found is not None and found.reason == SuppressionReason.UNSUBSCRIBE
    return subscriber


def bounce(email: str) -> Event:
    """A hard bounce as SendGrid's webhook reports it."""
    return Event(
        esp_event_id=f"bounce-{email}",
        event="bounce",
        occurred_at=utcnow(),
        email=email,
        delivery_id=None,
        bounce_type="bounce",
        payload="{}",
    )


def state(engine: Engine, email: str) -> tuple[str, str | None, list[str]]:
    """The subscriber's status, the suppression's reason and the audited subscriber actions."""
    with Session(engine) as s:
        subscriber = s.exec(select(Subscriber).where(Subscriber.email == email)).one()
        found = suppressions.find(s, email)
        actions = s.exec(
            select(AuditEntry.action)
            .where(AuditEntry.entity_type == "subscriber", AuditEntry.entity_id == subscriber.id)
            .order_by(AuditEntry.id)
        ).all()
        return subscriber.status, found.reason if found else None, list(actions)


def test_a_suppression_raised_to_bounce_before_the_lift_is_not_lifted(
    engine: Engine, make_subscriber: MakeSubscriber
) -> None:
    """The session read the suppression as `unsubscribe`; a bounce raises the row before the DELETE.
    The lift goes by the reason in the database, not by the session's copy of the row."""
    subscriber = left(engine, make_subscriber)
    with session_scope(engine) as s:
        held = suppressions.find(s, subscriber.email)
        assert held is not None and held.reason == SuppressionReason.UNSUBSCRIBE
        suppressions.add_many(s, [(subscriber.email, SuppressionReason.BOUNCE, "bounce ev1")])
        assert held.reason == SuppressionReason.UNSUBSCRIBE, "the session's copy is now stale"
        assert not suppressions.lift_for_confirmation(s, subscriber.email)
    assert state(engine, subscriber.email)[1] == SuppressionReason.BOUNCE


def test_a_bounce_applied_between_confirmings_read_and_its_writes_stays(
    engine: Engine, make_subscriber: MakeSubscriber
) -> None:
    """The confirmation read an unsubscribed subscriber and their `unsubscribe` suppression; the
    webhook's bounce is applied before it writes (on SQLite, in the same transaction: one writer at a
    time). The bounce and the bounced status stay, and the link is refused."""
    subscriber = left(engine, make_subscriber)
    issued_at = utcnow() + timedelta(seconds=1)
    with session_scope(engine) as s:
        read = s.get(Subscriber, subscriber.id)
        assert read is not None and read.status == SubscriberStatus.UNSUBSCRIBED
        held = suppressions.find(s, subscriber.email)
        assert held is not None and not suppressions.blocks_subscription(held)
        apply_events(s, [bounce(subscriber.email)])
        assert (read.status, held.reason) == (SubscriberStatus.UNSUBSCRIBED, SuppressionReason.UNSUBSCRIBE), (
            "what confirming read is now stale"
        )
        assert optin.confirm(s, read, issued_at=issued_at) is optin.Confirmation.REFUSED
    status, reason, actions = state(engine, subscriber.email)
    assert (status, reason) == (SubscriberStatus.BOUNCED, SuppressionReason.BOUNCE)
    assert "subscriber.confirm" not in actions


def waits_for(engine: Engine, first: Callable[[Session], None], second: Callable[[], None], why: str) -> None:
    """Run `first` in a transaction and, before it commits, `second` in a thread of its own: `second`
    must be waiting for `first`'s locks a second later (`why`), and finish once `first` commits."""
    with Session(engine) as held:
        first(held)
        held.flush()
        waiting = threading.Thread(target=second)
        waiting.start()
        waiting.join(timeout=1.0)
        assert waiting.is_alive(), why
        held.commit()
    waiting.join()


def test_a_confirmation_waiting_on_a_bounce_in_flight_changes_nothing(
    engine: Engine, make_subscriber: MakeSubscriber
) -> None:
    """PostgreSQL: the webhook's transaction has raised the suppression to `bounce` and marked the
    subscriber bounced, not yet committed, while the person clicks confirm (reading `unsubscribed`).
    The confirmation waits for the webhook, then finds the bounce: it lifts nothing and is refused."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: a confirmation cannot run inside a webhook")
    subscriber = left(engine, make_subscriber)
    issued_at = utcnow() + timedelta(seconds=1)
    outcomes: list[optin.Confirmation] = []

    def click() -> None:
        with Session(engine) as confirming:
            read = confirming.get(Subscriber, subscriber.id)
            assert read is not None and read.status == SubscriberStatus.UNSUBSCRIBED
            outcomes.append(optin.confirm(confirming, read, issued_at=issued_at))
            confirming.commit()

    def webhook(s: Session) -> None:
        apply_events(s, [bounce(subscriber.email)])

    waits_for(engine, webhook, click, "the confirmation waits for the webhook's lock on the suppression")
    assert outcomes == [optin.Confirmation.REFUSED]
    status, reason, actions = state(engine, subscriber.email)
    assert (status, reason) == (SubscriberStatus.BOUNCED, SuppressionReason.BOUNCE)
    assert "subscriber.confirm" not in actions


def test_a_bounce_arriving_while_a_confirmation_commits_still_wins(
    engine: Engine, make_subscriber: MakeSubscriber
) -> None:
    """PostgreSQL, the other order: the confirmation has lifted the suppression and made the subscriber
    active, not yet committed, when the webhook reports a bounce. The webhook waits for it, then
    suppresses the address again and marks the subscriber bounced."""
    if engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: a webhook cannot run inside a confirmation")
    subscriber = left(engine, make_subscriber)
    issued_at = utcnow() + timedelta(seconds=1)

    def report() -> None:
        with session_scope(engine) as webhook:
            apply_events(webhook, [bounce(subscriber.email)])

    def confirming(s: Session) -> None:
        read = s.get(Subscriber, subscriber.id)
        assert read is not None
        assert optin.confirm(s, read, issued_at=issued_at) is optin.Confirmation.CONFIRMED

    waits_for(engine, confirming, report, "the webhook waits for the confirmation's lock on the suppression")
    status, reason, actions = state(engine, subscriber.email)
    assert (status, reason) == (SubscriberStatus.BOUNCED, SuppressionReason.BOUNCE)
    assert actions[-2:] == ["subscriber.confirm", "subscriber.bounced"]
