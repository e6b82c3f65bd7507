"""The audit log: who changed what, when. Staff see everything; volunteers the subscriber entries."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from newsletter.core import audit
from newsletter.core.status import Role
from newsletter.web.admin.pages import render
from newsletter.web.auth import VolunteerUser
from newsletter.web.deps import SessionDep

router = APIRouter()

PAGE_SIZE = 100


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
    if user.role != Role.STAFF:
        entity = "subscriber"
    entries = audit.entries(
        session, entity_type=entity, actor=actor.strip().lower(), before=before, limit=PAGE_SIZE + 1
    )
    more = len(entries) > PAGE_SIZE
    entries = entries[:PAGE_SIZE]
    return render(
        request,
        "audit.html",
        {
            "entries": [(e, audit.changes_of(e)) for e in entries],
            "entity": entity,
            "actor": actor,
            "next_before": entries[-1].id if more and entries else None,
            "entity_types": ["subscriber", "bulletin", "user", "suppression"]
            if user.role == Role.STAFF
            else [],
        },
    )
