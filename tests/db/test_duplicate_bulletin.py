"""Duplicating a bulletin: a new draft with the same content, for requests that recur."""

from __future__ import annotations

from sqlmodel import select

from newsletter.content.bulletins import duplicate_bulletin, load_content
from newsletter.core.models import AuditEntry, Bulletin, Delivery
from newsletter.core.status import BulletinStatus
from newsletter.sending import lifecycle


def test_a_finished_bulletin_becomes_a_new_draft_with_the_same_items(
    session, planned_bulletin, make_subscribers
):
    make_subscribers(3)
    original = planned_bulletin()
    lifecycle.cancel(session, original.id)  # any status can be copied, even a finished one
    session.commit()
    copy = duplicate_bulletin(session, original.id, actor="staff@example.org")
    session.commit()
    assert copy.id != original.id and copy.status == BulletinStatus.DRAFT and copy.send_at is None
    before, after = load_content(session, original.id), load_content(session, copy.id)
    assert (
        after.sections == before.sections and after.title == before.title and after.subject == before.subject
    )
    assert (after.scripture_text, after.scripture_reference) == (
        before.scripture_text,
        before.scripture_reference,
    )
    assert session.exec(select(Delivery).where(Delivery.bulletin_id == copy.id)).all() == []
    entry = session.exec(select(AuditEntry).where(AuditEntry.action == "bulletin.duplicate")).one()
    assert (entry.actor, entry.entity_id, entry.changes) == (
        "staff@example.org",
        copy.id,
        f'{{"from": {original.id}}}',
    )
    assert session.get(Bulletin, original.id).status == BulletinStatus.CANCELLED  # the original is untouched


def test_the_cli_duplicates(cli, make_bulletin):
    original = make_bulletin()
    out = cli("bulletins", "duplicate", str(original.id)).stdout
    assert out.strip() == f"bulletin {original.id + 1} is a new draft copied from bulletin {original.id}"
    assert "no bulletin 999" in cli("bulletins", "duplicate", "999", code=1).stderr
