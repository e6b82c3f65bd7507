"""The audit trail: who changed which subscriber, bulletin or account, when, from what to what.

Writing (`record`) and reading (`entries`, `changes_of`) live together: the JSON shape of `changes` is
decided here and nowhere else."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlmodel import Session, col, select

from newsletter.core.models import AuditEntry

CLI_ACTOR = "cli"
SYSTEM_ACTOR = "system"
SUBSCRIBER_ACTOR = "subscriber"


def record(
    session: Session,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: int | None,
    changes: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """Add an audit entry to the session's transaction (it commits or rolls back with the change)."""
    entry = AuditEntry(
        actor=actor,
        action=action,
        entity_type=entity_type,
        entity_id=entity_id,
        changes=json.dumps(dict(changes or {}), default=str, ensure_ascii=False),
    )
    session.add(entry)
    return entry


def diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, list[Any]]:
    """{field: [old, new]} for the fields whose value changed."""
    return {k: [before.get(k), after[k]] for k in after if before.get(k) != after[k]}


def changes_of(entry: AuditEntry) -> dict[str, Any]:
    """The entry's `changes` as a dict; an unreadable or non-object value is shown under "?" rather
    than hiding the entry (old rows, or rows written by hand)."""
    try:
        value = json.loads(entry.changes)
    except json.JSONDecodeError:
        return {"?": entry.changes}
    return value if isinstance(value, dict) else {"?": value}


def entries(
    session: Session,
    *,
    entity_type: str = "",
    entity_id: int | None = None,
    actor: str = "",
    before: int | None = None,
    limit: int = 100,
) -> list[AuditEntry]:
    """Entries newest first (by id, so a page boundary `before` is exact), optionally filtered."""
    query = select(AuditEntry)
    if entity_type:
        query = query.where(AuditEntry.entity_type == entity_type)
    if entity_id is not None:
        query = query.where(AuditEntry.entity_id == entity_id)
    if actor:
        query = query.where(AuditEntry.actor == actor)
    if before is not None:
        query = query.where(col(AuditEntry.id) < before)
    return list(session.exec(query.order_by(col(AuditEntry.id).desc()).limit(limit)).all())
