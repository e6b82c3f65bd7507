"""Telling an ESP outage from a recipient's failure.

A batch that fails as a whole (refused connection, 5xx, no answer, an ambiguous answer) says nothing
about its recipients. `EspHealth` counts such failures in a row across the sending threads of one
dispatcher; at `ESP_OUTAGE_BATCHES` the ESP is taken to be down and the bulletin is paused with its
recipients still pending ("ESP unavailable since …") instead of burning their attempts. `ProbeSchedule`
spaces the dispatcher's checks of a paused bulletin's ESP on a capped backoff; when a check succeeds the
bulletin is resumed by itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime, timedelta

OUTAGE_REASON = "ESP unavailable since"
"""How the reason of an outage pause begins (the admin and `status` show the whole line)."""


def outage_reason(bulletin_id: int, since: datetime, error: str) -> str:
    """The pause reason of an outage: since when, the last error, and what happens next."""
    return (
        f"{OUTAGE_REASON} {since.strftime('%Y-%m-%d %H:%M:%S UTC')} ({error}); recipients are kept "
        f"pending. A running worker resumes the send when the ESP answers again; `newsletter send "
        f"{bulletin_id}` tries at once"
    )


class EspHealth:
    """Whole-batch failures in a row of one ESP, shared by the threads of a dispatcher."""

    def __init__(self, threshold: int, clock: Callable[[], datetime]) -> None:
        self.threshold = max(1, threshold)
        self.clock = clock
        self.failures = 0
        self.since: datetime | None = None
        self._lock = threading.Lock()

    def ok(self) -> None:
        """The ESP took a batch: the count starts again."""
        with self._lock:
            self.failures = 0
            self.since = None

    def failed(self) -> datetime | None:
        """One more batch failed as a whole; returns since when the ESP is down once it is, else None."""
        with self._lock:
            self.failures += 1
            if self.since is None:
                self.since = self.clock()
            return self.since if self.failures >= self.threshold else None


class ProbeSchedule:
    """When to check a paused bulletin's ESP again: base, doubled after each failed check, capped."""

    def __init__(self, base: float, cap: float) -> None:
        self.base = max(base, 0.01)
        self.cap = max(cap, self.base)
        self._next: dict[int, tuple[datetime, float]] = {}

    def due(self, bulletin_id: int, now: datetime) -> bool:
        at, _ = self._next.get(bulletin_id, (now, self.base))
        return now >= at

    def failed(self, bulletin_id: int, now: datetime) -> float:
        """Push the next check back; returns the wait in seconds."""
        _, wait = self._next.get(bulletin_id, (now, self.base / 2))
        wait = min(wait * 2, self.cap)
        self._next[bulletin_id] = (now + timedelta(seconds=wait), wait)
        return wait

    def forget(self, bulletin_id: int) -> None:
        self._next.pop(bulletin_id, None)
