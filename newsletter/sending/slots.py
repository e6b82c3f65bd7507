"""Which schedule slot a bulletin will go in: one bulletin per slot of `SEND_SCHEDULE`.

A `ready` bulletin without its own send time waits in a queue (oldest first); the next slot sends the
first, the slot after the second, and so on. Making a second bulletin ready while one already holds the
next slot is allowed, but the admin and the CLI warn and say when each will go.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session

from newsletter.core.config import Settings
from newsletter.core.models import utcnow
from newsletter.sending import queries


@dataclass(frozen=True)
class SlotPlan:
    slot_at: datetime | None
    """When the bulletin goes out (None: the schedule has no more slots, or it is not in the queue)."""
    ahead: list[int]
    """Bulletins that go in earlier slots."""

    def warning(self, bulletin_id: int, settings: Settings) -> str:
        """A sentence for staff when another bulletin holds the next slot, else ""."""
        if not self.ahead:
            return ""
        held = ", ".join(str(b) for b in self.ahead)
        when = (
            self.slot_at.astimezone(settings.tz).strftime("%a %d %b %Y, %H:%M %Z")
            if self.slot_at
            else "never"
        )
        return (
            f"bulletin {held} already holds the next schedule slot; bulletin {bulletin_id} waits and goes "
            f"out {when} (one bulletin per slot)"
        )


def slot_plan(
    session: Session, settings: Settings, bulletin_id: int, *, now: datetime | None = None
) -> SlotPlan:
    """When `bulletin_id` (ready, no send time) goes out, and which bulletins are ahead of it."""
    from newsletter.sending.scheduler import send_trigger  # APScheduler loads only where slots matter

    queue = queries.slot_queue(session.connection())
    session.commit()
    if bulletin_id not in queue:
        return SlotPlan(None, [])
    position = queue.index(bulletin_id)
    trigger = send_trigger(settings)
    slot = trigger.get_next_fire_time(None, (now or utcnow()).astimezone(settings.tz))
    for _ in range(position):
        if slot is None:
            break
        slot = trigger.get_next_fire_time(slot, slot + timedelta(seconds=1))
    return SlotPlan(slot, queue[:position])
