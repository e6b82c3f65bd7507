"""The token bucket and the in-flight cap that keep sends within an ESP's limits."""

from __future__ import annotations

import threading
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from newsletter.core.config import Settings
from newsletter.sending.throttle import InFlight, Throttle, TokenBucket


class FakeClock:
    """A clock that only moves when someone sleeps (or the test advances it)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def bucket(rate: float, burst: int) -> tuple[TokenBucket, FakeClock]:
    clock = FakeClock()
    return TokenBucket(rate, burst, clock=clock, sleep=clock.sleep), clock


def test_rate_zero_means_unlimited() -> None:
    limiter, clock = bucket(0, 1)
    for _ in range(100):
        assert limiter.acquire(1000) == 0
    assert clock.sleeps == []


def test_a_full_bucket_serves_a_burst_at_once_then_paces_at_the_rate() -> None:
    limiter, clock = bucket(10, 5)
    assert [limiter.acquire() for _ in range(5)] == [0, 0, 0, 0, 0]
    assert limiter.acquire() == pytest.approx(0.1)
    assert limiter.acquire(2) == pytest.approx(0.2)
    assert clock.now == pytest.approx(0.3)


def test_tokens_come_back_with_time_but_never_beyond_the_burst() -> None:
    limiter, clock = bucket(10, 5)
    limiter.acquire(5)
    clock.now += 0.3
    assert limiter.available == pytest.approx(3)
    clock.now += 100
    assert limiter.available == pytest.approx(5)


def test_a_batch_larger_than_the_burst_goes_through_and_later_callers_pay_the_debt() -> None:
    limiter, clock = bucket(100, 10)
    assert limiter.acquire(1000) == pytest.approx(9.9)  # 990 tokens short at 100/s
    assert limiter.acquire(1) == pytest.approx(0.01)
    assert clock.now == pytest.approx(9.91)


def test_try_acquire_never_waits_nor_borrows() -> None:
    limiter, clock = bucket(10, 3)
    assert limiter.try_acquire(3)
    assert not limiter.try_acquire(1)
    clock.now += 0.1
    assert limiter.try_acquire(1)
    assert clock.sleeps == []


def test_the_long_run_rate_holds_for_batches() -> None:
    limiter, clock = bucket(500, 100)
    for _ in range(10):
        limiter.acquire(100)
    assert clock.now == pytest.approx((1000 - 100) / 500)


@given(
    rate=st.floats(min_value=0.5, max_value=10_000),
    burst=st.integers(min_value=1, max_value=2000),
    steps=st.lists(
        st.tuples(st.floats(min_value=0, max_value=5), st.integers(min_value=1, max_value=3000)), max_size=40
    ),
)
def test_never_more_than_burst_plus_rate_times_elapsed(
    rate: float, burst: int, steps: list[tuple[float, int]]
) -> None:
    limiter, clock = bucket(rate, burst)
    start, granted = clock.now, 0
    for idle, n in steps:
        clock.now += idle
        wait = limiter.acquire(n)
        granted += n
        assert wait <= n / rate + 1e-9  # nobody waits longer than their own tokens take
        assert granted <= burst + rate * (clock.now - start) + 1e-6 * granted


def test_threads_sharing_a_bucket_stay_within_the_rate() -> None:
    limiter = TokenBucket(rate=4000, burst=20)
    started = time.monotonic()

    def work() -> None:
        for _ in range(50):
            limiter.acquire(2)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert time.monotonic() - started >= (8 * 50 * 2 - 20) / 4000 * 0.95


def test_in_flight_caps_concurrent_requests() -> None:
    cap = InFlight(2)
    peak = 0
    lock = threading.Lock()

    def request() -> None:
        nonlocal peak
        with cap:
            with lock:
                peak = max(peak, cap.active)
            time.sleep(0.02)

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 2 and cap.active == 0
    assert InFlight(1).acquire(timeout=0)  # a free slot is taken at once


def test_in_flight_zero_means_no_cap() -> None:
    cap = InFlight(0)
    for _ in range(100):
        assert cap.acquire(timeout=0)
    assert cap.active == 100


def test_a_throttle_from_settings_uses_send_rate_and_concurrency(basic_settings: Settings) -> None:
    throttle = Throttle.from_settings(
        basic_settings.model_copy(update={"SEND_RATE": 50.0, "SEND_CONCURRENCY": 3})
    )
    assert throttle.bucket.rate == 50 and throttle.bucket.burst == basic_settings.BATCH_SIZE
    assert throttle.in_flight.limit == 3
    with throttle.slot(10):
        assert throttle.in_flight.active == 1
    assert throttle.in_flight.active == 0
