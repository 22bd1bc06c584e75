"""One rate limiter per run, shared by every request (detail fetches and short-link hops).

Guarantee: with `k = max(1, floor(rate))`, no window of `max(1 s, k / rate)` ever holds more than
`k` request starts. So for rate >= 1 no sliding 1-second window (the first one included) sees
more than floor(rate) starts; for rate < 1 starts are at least 1/rate seconds apart.

Why not `aiolimiter.AsyncLimiter(N, 1)`: a leaky bucket starts full and admits ~2N in the first
second (STYLE.md habit 6). `AsyncLimiter(1, 1/rate)` would be safe but spaces starts evenly, so
it cannot let a server's N-per-second window fill at once after an idle gap, and it has no shared
pause. A sliding-window log of the last k starts is both exact and small.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TypedDict, Unpack

Clock = Callable[[], float]
# A server counts our requests when they arrive, not when we start them; this much extra
# spacing (the client's default `margin_s`) absorbs the jitter so its 1-second windows see no
# more than ours do.
DEFAULT_RATE_MARGIN_S = 0.05
Sleep = Callable[[float], Awaitable[None]]


class LimiterOptions(TypedDict, total=False):
    """The keyword options of `AdaptiveRate` (and so of every limiter)."""

    margin_s: float
    min_rate: float
    decrease_factor: float
    recover_after: int
    recover_step: float
    clock: Clock
    sleep: Sleep


class AdaptiveRate:
    """What every limiter shares, wherever its log of starts lives: the configured rate, the
    effective rate after 429s, the local pause, and `async with limiter:`.

    Adaptive: `slow_down()` (on a 429) halves the effective rate down to `min_rate`;
    every `recover_after` calls to `success()` add `recover_step` x the configured rate back,
    never above it. `margin_s` widens each window a little, so network jitter between our
    clock and the server's cannot squeeze k+1 of our starts into one of its windows.
    """

    def __init__(
        self,
        rate: float,
        *,
        margin_s: float = 0.0,
        min_rate: float = 0.1,
        decrease_factor: float = 0.5,
        recover_after: int = 10,
        recover_step: float = 0.1,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        if not rate > 0 or math.isinf(rate):
            raise ValueError("rate must be a positive number of requests per second")
        self.configured_rate = float(rate)
        self.min_rate = min(min_rate, self.configured_rate)
        self._rate = self.configured_rate
        self._margin_s = margin_s
        self._decrease_factor = decrease_factor
        self._recover_after = recover_after
        self._recover_step = recover_step
        self._clock = clock
        self._sleep = sleep
        self._paused_until = -math.inf
        self._successes = 0
        self._slowed_at = -math.inf
        # FIFO admission: asyncio.Lock wakes waiters in order, so nobody starves.
        self._lock = asyncio.Lock()

    @staticmethod
    def _capacity(rate: float) -> int:
        return max(1, math.floor(rate))

    @property
    def rate(self) -> float:
        """The effective rate now (configured rate, lowered after 429s)."""
        return self._rate

    @property
    def paused_until(self) -> float:
        return self._paused_until

    def _window_s(self) -> tuple[int, float]:
        """(k, window): no `window` seconds may hold more than `k` starts at the rate now."""
        k = self._capacity(self._rate)
        return k, max(1.0, k / self._rate) + self._margin_s

    async def acquire(self) -> float:
        """Wait for a turn; returns the start time recorded (pass it to `slow_down`)."""
        raise NotImplementedError

    async def __aenter__(self) -> float:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def slow_down(self, started_at: float | None = None) -> bool:
        """Lower the effective rate after a 429; returns whether it changed.

        Requests already in flight when the rate was last lowered answer 429 for the same
        congestion, so a 429 for a request started before that (`started_at`) is not counted
        again; otherwise eight concurrent 429s would cut the rate by 2**8.
        """
        if started_at is not None and started_at <= self._slowed_at:
            return False
        self._slowed_at = self._clock()
        self._rate = max(self.min_rate, self._rate * self._decrease_factor)
        self._successes = 0
        return True

    def success(self) -> None:
        if self._rate >= self.configured_rate:
            return
        self._successes += 1
        if self._successes >= self._recover_after:
            self._successes = 0
            step = self._recover_step * self.configured_rate
            self._rate = min(self.configured_rate, self._rate + step)


class RateLimiter(AdaptiveRate):
    """`async with limiter:` (or `await limiter.acquire()`) before starting each request: the
    log of the latest starts is kept in this process. `pause(s)` holds every waiter until
    `now + s` (a shared Retry-After)."""

    def __init__(self, rate: float, **options: Unpack[LimiterOptions]) -> None:
        super().__init__(rate, **options)
        self._starts: deque[float] = deque(maxlen=self._capacity(self.configured_rate))

    def _next_start(self) -> float:
        """Earliest clock time at which one more start keeps the guarantee."""
        k, window = self._window_s()
        earliest = self._paused_until
        if len(self._starts) >= k:
            earliest = max(earliest, self._starts[-k] + window)
        return earliest

    async def acquire(self) -> float:
        """Wait for a turn; returns the start time recorded (pass it to `slow_down`)."""
        async with self._lock:
            while True:
                now = self._clock()
                wait = self._next_start() - now
                if wait <= 0:
                    self._starts.append(now)
                    return now
                await self._sleep(wait)

    def try_acquire(self) -> float | None:
        """A turn now if one is free and nobody waits for one (the start recorded), else None:
        `acquire` without a task switch, for the usual case of a limiter with room."""
        if self._lock.locked():
            return None
        now = self._clock()
        if self._next_start() > now:
            return None
        self._starts.append(now)
        return now

    def restamp(self, granted: float) -> float:
        """The request granted a turn at `granted` starts only now (the event loop ran other
        work in between): record its start as now, so that the turns after it are counted
        from when it really left. Returns the start recorded.

        Moving one start later keeps the guarantee: the turns granted since were spaced from
        the records then, and every later turn is computed from the record with this start
        moved (a waiter re-reads it when it wakes)."""
        now = self._clock()
        if now <= granted:
            return granted
        starts = self._starts
        for i in range(len(starts) - 1, -1, -1):
            if starts[i] == granted:
                del starts[i]
                break
        else:
            return granted  # already out of the log: nothing after it depends on it
        i = len(starts)
        while i > 0 and starts[i - 1] > now:
            i -= 1
        starts.insert(i, now)
        return now

    def pause(self, seconds: float) -> None:
        """Hold every request start until `seconds` from now (extends, never shortens)."""
        self._paused_until = max(self._paused_until, self._clock() + max(0.0, seconds))
