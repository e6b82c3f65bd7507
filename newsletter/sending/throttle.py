"""Keeping within an ESP's limits: a token bucket for recipients per second, a cap on requests in flight.

    throttle = Throttle.from_settings(settings)      # SEND_RATE, SEND_CONCURRENCY, BATCH_SIZE
    with throttle.slot(len(batch)):                  # waits for tokens, then for a free request slot
        backend.send(variant, batch)

Both parts are thread-safe and take the clock and the sleep function as arguments, so tests drive them
with a fake clock instead of waiting.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from newsletter.core.config import Settings


class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; `rate` 0 means unlimited.

    `acquire(n)` reserves `n` tokens at once and sleeps until they are covered, so waiting threads are
    served in the order they asked and the long-run rate never exceeds `rate`. A request larger than
    `burst` is allowed (a batch of 1000 under a burst of 100, say): the bucket goes into debt and the
    callers after it wait for the debt to be paid back.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        if rate < 0:
            raise ValueError("rate must be >= 0 (0 = unlimited)")
        if burst < 1:
            raise ValueError("burst must be >= 1")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._stamp = clock()

    @property
    def unlimited(self) -> bool:
        return self.rate == 0

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._stamp)
        self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
        self._stamp = now

    def reserve(self, n: int = 1) -> float:
        """Take `n` tokens now (possibly into debt); return how many seconds the caller must wait."""
        if self.unlimited or n <= 0:
            return 0.0
        with self._lock:
            self._refill(self._clock())
            self._tokens -= n
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self, n: int = 1) -> float:
        """Block until `n` tokens are available (see the class docstring); return the seconds waited."""
        wait = self.reserve(n)
        if wait > 0:
            self._sleep(wait)
        return wait

    def try_acquire(self, n: int = 1) -> bool:
        """Take `n` tokens if they are there right now, without going into debt or waiting."""
        if self.unlimited or n <= 0:
            return True
        with self._lock:
            self._refill(self._clock())
            if self._tokens >= n:
                self._tokens -= n
                return True
            return False

    @property
    def available(self) -> float:
        """Tokens in the bucket now (negative while in debt); informational."""
        with self._lock:
            self._refill(self._clock())
            return self._tokens


class InFlight:
    """At most `limit` requests at a time: a BoundedSemaphore with a context manager and a count.

    `limit` 0 means no cap.
    """

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("limit must be >= 0 (0 = no cap)")
        self.limit = limit
        self._semaphore = threading.BoundedSemaphore(limit) if limit else None
        self._lock = threading.Lock()
        self._active = 0

    @property
    def active(self) -> int:
        return self._active

    def acquire(self, timeout: float | None = None) -> bool:
        if self._semaphore is not None and not self._semaphore.acquire(timeout=timeout):
            return False
        with self._lock:
            self._active += 1
        return True

    def release(self) -> None:
        with self._lock:
            self._active -= 1
        if self._semaphore is not None:
            self._semaphore.release()

    def __enter__(self) -> InFlight:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Throttle:
    """A token bucket (recipients per second) and an in-flight cap (requests), used together."""

    def __init__(self, bucket: TokenBucket, in_flight: InFlight) -> None:
        self.bucket = bucket
        self.in_flight = in_flight

    @classmethod
    def from_settings(cls, settings: Settings) -> Throttle:
        """`SEND_RATE` recipients/s with a burst of one batch (or one second), `SEND_CONCURRENCY` requests."""
        burst = max(settings.BATCH_SIZE, int(settings.SEND_RATE), 1)
        return cls(TokenBucket(settings.SEND_RATE, burst), InFlight(settings.SEND_CONCURRENCY))

    @contextmanager
    def slot(self, recipients: int) -> Iterator[None]:
        """Wait for `recipients` tokens, then for a request slot; the slot is freed on leaving."""
        self.bucket.acquire(recipients)
        with self.in_flight:
            yield


class Gate:
    """A pause shared by every sending thread of a process: after a 429, nobody sends until the ESP's
    reset time, not just the thread that was told."""

    def __init__(self, stop: threading.Event, clock: Callable[[], float] = time.monotonic) -> None:
        self._until = 0.0
        self._lock = threading.Lock()
        self._stop = stop
        self._clock = clock

    def close_for(self, seconds: float) -> None:
        with self._lock:
            self._until = max(self._until, self._clock() + seconds)

    def remaining(self) -> float:
        """Seconds until the gate opens (0 when it is open)."""
        with self._lock:
            return max(0.0, self._until - self._clock())

    def wait(self) -> None:
        """Return when the gate is open (or `stop` is set)."""
        while not self._stop.is_set():
            wait = self._until - self._clock()
            if wait <= 0:
                return
            self._stop.wait(min(wait, 1.0))


def backoff(attempts: int, base: float, cap: float, random: Callable[[], float]) -> float:
    """Exponential backoff with jitter: base·2^attempts, capped, times a random factor in [0.5, 1]."""
    ceiling = min(cap, base * (2 ** min(attempts, 30)))
    return ceiling * (0.5 + 0.5 * random())
