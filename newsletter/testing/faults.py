"""How the fake ESP misbehaves on request: the `Fault` values and the shortcuts that add them
(`fail`, `slow`, `drop`, `hang`, `reject_addresses`, `clear_faults`), shared by the in-process `FakeEsp`
and the HTTP-driven `RemoteFakeEsp`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

FaultAction = Literal["status", "slow", "drop", "drop_after_accept", "hang_after_accept"]


@dataclass(frozen=True)
class Fault:
    """One way to misbehave: at probability `rate` per request, only `count` times, or only for `seconds`
    after it was added (then it expires)."""

    action: FaultAction = "status"
    status: int = 500
    rate: float = 1.0
    count: int | None = None
    delay: float = 0.0
    seconds: float | None = None


class FaultControls:
    """Shortcuts shared by the in-process `FakeEsp` and the HTTP-driven `RemoteFakeEsp`."""

    def add_fault(self, fault: Fault) -> None:
        raise NotImplementedError

    def _configure(self, changes: dict[str, Any]) -> None:
        raise NotImplementedError

    def fail(
        self, status: int, *, rate: float = 1.0, count: int | None = None, seconds: float | None = None
    ) -> None:
        """Answer `status` (400/401/403/429/500/503...) at `rate`, to the next `count` requests, or to
        every request for the next `seconds` (an outage that ends by itself)."""
        self.add_fault(Fault("status", status=status, rate=rate, count=count, seconds=seconds))

    def slow(self, delay: float, *, rate: float = 1.0, count: int | None = None) -> None:
        """Wait `delay` seconds before answering; a client that gave up meanwhile has sent nothing."""
        self.add_fault(Fault("slow", delay=delay, rate=rate, count=count))

    def drop(self, *, rate: float = 1.0, count: int | None = None, after_accept: bool = False) -> None:
        """Close the connection without an answer, before (default) or after accepting the batch."""
        self.add_fault(Fault("drop_after_accept" if after_accept else "drop", rate=rate, count=count))

    def hang(self, delay: float, *, rate: float = 1.0, count: int | None = None) -> None:
        """Accept and record the batch, then answer nothing for `delay` seconds (or until the client gives
        up) and close: the client cannot know its batch was taken."""
        self.add_fault(Fault("hang_after_accept", delay=delay, rate=rate, count=count))

    def reject_addresses(self, pattern: str) -> None:
        """Answer 400 ("Does not contain a valid address.") to any batch with an address matching `pattern`."""
        self._configure({"reject_pattern": pattern})

    def clear_faults(self) -> None:
        self._configure({"faults": [], "reject_pattern": ""})
