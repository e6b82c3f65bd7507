"""Suppressions: the CLI, the rules for who may lift one, and that every send honours them."""

from __future__ import annotations

import itertools
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from newsletter.audience import suppressions
from newsletter.core.db import session_scope
from newsletter.core.models import AuditEntry, Delivery, Suppression, email_hash
from newsletter.core.status import SuppressionReason
from newsletter.sending.dispatcher import Dispatcher
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
