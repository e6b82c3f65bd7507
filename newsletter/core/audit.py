"""The audit trail: who changed which subscriber, bulletin or account, when, from what to what."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlmodel import Session

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
