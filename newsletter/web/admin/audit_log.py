"""The audit log: who changed what, when. Staff see everything; volunteers the subscriber entries."""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlmodel import col, select

from newsletter.core.models import AuditEntry
from newsletter.core.status import Role
from newsletter.web.admin.pages import render
from newsletter.web.auth import VolunteerUser
from newsletter.web.deps import SessionDep

router = APIRouter()

PAGE_SIZE = 100


def _changes(raw: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {"?": raw}
    return value if isinstance(value, dict) else {"?": value}


@router.get("/audit")
def audit_page(
    request: Request,
    user: VolunteerUser,
    session: SessionDep,
    entity: str = "",
    actor: str = "",
    before: int | None = None,
) -> Response:
    """Newest first, keyset-paginated by id; filter by entity type and actor."""
    query = select(AuditEntry)
    if user.role != Role.STAFF:
        entity = "subscriber"
    if entity:
        query = query.where(AuditEntry.entity_type == entity)
    if actor.strip():
        query = query.where(AuditEntry.actor == actor.strip().lower())
    if before is not None:
        query = query.where(col(AuditEntry.id) < before)
    entries = session.exec(query.order_by(col(AuditEntry.id).desc()).limit(PAGE_SIZE + 1)).all()
    more = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]
    return render(
        request,
        "audit.html",
        {
            "entries": [(e, _changes(e.changes)) for e in entries],
            "entity": entity,
            "actor": actor,
            "next_before": entries[-1].id if more and entries else None,
            "entity_types": ["subscriber", "bulletin", "user", "suppression"]
            if user.role == Role.STAFF
            else [],
        },
    )
