"""The rate limiter under a controlled clock: no real sleeping anywhere in this file."""

from __future__ import annotations

import asyncio
import itertools
import math
import random

import pytest

from pipeline.upstream.ratelimit import RateLimiter


class FakeClock:
    """A clock that only moves when someone sleeps on it."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += max(0.0, seconds)
        await asyncio.sleep(0)


def max_in_window(starts: list[float], window: float) -> int:
    """Most starts in any half-open window [t, t + window)."""
    starts = sorted(starts)
    best, j = 0, 0
    for i, t in enumerate(starts):
        while starts[j] <= t - window:
            j += 1
        best = max(best, i - j + 1)
    return best


async def run_acquirers(
    limiter: RateLimiter, clock: FakeClock, tasks: int, until: float
) -> list[float]:
    starts: list[float] = []

    async def worker() -> None:
        while True:
            started = await limiter.acquire()
            if started >= until:
                return
            assert started == clock.now
            starts.append(started)
            await asyncio.sleep(0)  # let the others queue up, like real requests would

    await asyncio.gather(*(worker() for _ in range(tasks)))
    return starts


def test_window_checker_catches_a_burst() -> None:
    # The helper used below must be able to fail: 2N starts in the first second is caught.
    assert max_in_window([0.0] * 10 + [0.5] * 10, 1.0) == 20
    assert max_in_window([0.0, 1.0, 2.0], 1.0) == 1
    assert max_in_window([0.0, 0.999], 1.0) == 2


@pytest.mark.parametrize("rate", [1, 2, 5, 10, 0.5, 2.5])
async def test_no_window_exceeds_the_rate_and_throughput_holds(rate: float) -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    duration = 30.0
    starts = await run_acquirers(limiter, clock, tasks=25, until=duration)
    if rate >= 1:
        assert max_in_window(starts, 1.0) <= math.floor(rate)
        # The first second is not special: no initial burst above the limit.
        assert sum(1 for t in starts if t < 1.0) <= math.floor(rate)
    else:
        gaps = [b - a for a, b in itertools.pairwise(starts)]
        assert min(gaps) >= 1 / rate
    assert len(starts) >= 0.9 * min(rate, max(1, math.floor(rate))) * duration
    assert clock.now >= duration  # time passed only through the injected sleep


async def test_margin_spaces_windows() -> None:
    clock = FakeClock()
    limiter = RateLimiter(5, margin_s=0.05, clock=clock, sleep=clock.sleep)
    starts = await run_acquirers(limiter, clock, tasks=8, until=10.0)
    assert max_in_window(starts, 1.05) <= 5
    assert len(starts) >= 0.9 * 5 * 10


async def test_pause_delays_every_waiter() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    await limiter.acquire()
    clock.now = 0.2
    limiter.pause(5.0)
    limiter.pause(1.0)  # a shorter pause never shortens the current one
    assert limiter.paused_until == pytest.approx(5.2)
    starts = await asyncio.gather(*(limiter.acquire() for _ in range(6)))
    assert min(starts) >= 5.2
    assert max_in_window(list(starts), 1.0) <= 10


async def test_pause_issued_while_waiting_is_honoured() -> None:
    clock = FakeClock()
    limiter = RateLimiter(1, clock=clock, sleep=clock.sleep)
    await limiter.acquire()  # t=0; the next turn is at t=1

    async def pausing_sleep(seconds: float) -> None:
        # A 429 arrives while the waiter sleeps: the re-check after waking must see the pause.
        if not clock.sleeps:
            limiter.pause(10.0)
        await clock.sleep(seconds)

    limiter._sleep = pausing_sleep
    started = await limiter.acquire()
    assert started >= 10.0


async def test_slow_down_and_recover() -> None:
    clock = FakeClock()
    limiter = RateLimiter(10, min_rate=0.1, recover_after=10, clock=clock, sleep=clock.sleep)
    started = await limiter.acquire()
    assert limiter.slow_down(started) is True
    assert limiter.rate == 5
    # A 429 for a request started before that slow-down is the same congestion: not counted.
    assert limiter.slow_down(started) is False
    assert limiter.rate == 5
    starts = await run_acquirers(limiter, clock, tasks=10, until=5.0)
    assert max_in_window(starts, 1.0) <= 5
    for _ in range(9):
        limiter.success()
    assert limiter.rate == 5
    limiter.success()
    assert limiter.rate == 6  # +10% of the configured rate
    for _ in range(100):
        limiter.success()
    assert limiter.rate == 10  # never above the configured rate
    for _ in range(20):
        clock.now += 1
        limiter.slow_down(clock.now)
    assert limiter.rate == 0.1  # floor


async def test_context_manager_and_validation() -> None:
    clock = FakeClock()
    limiter = RateLimiter(2, clock=clock, sleep=clock.sleep)
    async with limiter as started:
        assert started == 0.0
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(0)
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(float("inf"))


@pytest.mark.parametrize("rate", [3.0, 10.0])
async def test_a_start_that_leaves_late_is_counted_from_when_it_left(rate: float) -> None:
    """A turn granted while the event loop was busy leaves later than granted; `restamp`
    records when it really left, so the windows of the real departures hold: without it, the
    same run puts more than the rate in some window."""
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    rng = random.Random(5)
    left: list[float] = []
    unstamped: list[float] = []

    async def worker() -> None:
        while True:
            granted = await limiter.acquire()
            if granted >= 60:
                return
            if rng.random() < 0.3:  # the loop was busy: this request leaves late
                await clock.sleep(rng.uniform(0.0, 0.4))
            unstamped.append(clock.now)
            left.append(limiter.restamp(granted))
            assert left[-1] == clock.now
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(8)))
    # (1e-9 less than a second: a start at t + 1.0 can round to a hair under it)
    assert max_in_window(left, 1.0 - 1e-9) <= math.floor(rate)
    assert len(left) >= 0.8 * rate * 60  # late departures cost little throughput


async def test_departures_without_restamp_can_break_the_window() -> None:
    """The control for the test above: the same late departures, but counted from their
    grants, put more than the rate in a window."""
    clock = FakeClock()
    limiter = RateLimiter(10, clock=clock, sleep=clock.sleep)
    rng = random.Random(5)
    left: list[float] = []

    async def worker() -> None:
        while True:
            granted = await limiter.acquire()
            if granted >= 60:
                return
            if rng.random() < 0.3:
                await clock.sleep(rng.uniform(0.0, 0.4))
            left.append(clock.now)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker() for _ in range(8)))
    assert max_in_window(left, 1.0 - 1e-9) > 10


@pytest.mark.parametrize("rate", [1, 5, 10])
async def test_try_acquire_mixed_with_waiters_keeps_the_rate(rate: int) -> None:
    # The client takes a free turn without waiting (`try_acquire`) and waits otherwise: mixed
    # with waiting acquirers, no window may exceed the rate, and the waiters still get turns.
    clock = FakeClock()
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    starts: list[float] = []
    waited: list[float] = []
    duration = 20.0

    async def eager() -> None:
        while clock.now < duration:
            started = limiter.try_acquire()
            if started is None:
                started = await limiter.acquire()
                waited.append(started)
            if started >= duration:
                return
            assert started == clock.now
            starts.append(started)
            await asyncio.sleep(0)

    await asyncio.gather(*(eager() for _ in range(6)))
    assert max_in_window(starts, 1.0) <= rate
    assert len(starts) >= 0.9 * rate * duration
    assert waited  # the rate was reached: some turns had to be waited for
    limiter = RateLimiter(rate, clock=clock, sleep=clock.sleep)
    free = [limiter.try_acquire() for _ in range(rate + 1)]
    assert free[:rate] == [clock.now] * rate
    assert free[rate] is None  # no burst beyond the rate
