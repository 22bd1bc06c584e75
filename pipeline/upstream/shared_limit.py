"""A rate limiter whose state lives in PostgreSQL, for a service several processes share.

Same interface and guarantee as `pipeline.upstream.ratelimit.RateLimiter`, across every process
on every host that uses the service (`shared = true` in the upstreams file): with
`k = max(1, floor(rate))`, no window of `max(1 s, k / rate) + margin` holds more than `k`
request starts. The service's row in `upstream_limits` keeps the start times of its latest `k`
requests (a sliding-window log, exact like the in-process one; a GCRA would space requests
evenly and could not let a server's N-per-second window fill at once after an idle gap). One
statement takes a turn: it appends a start when the `k`-th latest is a window old, under the
row's lock, so two processes can never both take the last place. Every time in it is the
database's clock (`clock_timestamp()`), so hosts with skewed clocks share one timeline.

The margin is wider than the in-process limiter's: after the database grants a turn, the
answer still travels back, through a thread and the event loop, before the request leaves,
and that hop differs from process to process. Within one process, turns are taken one at a
time (FIFO, like RateLimiter), so each process has at most one statement in flight, and a
turn costs one short round trip, off the event loop.

What is local: `slow_down` / `success` (the adaptive rate after 429s) narrow this process's
own turns only; `pause` (a Retry-After) holds this process at once and is written to the row,
so the other processes hold too.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from typing import Unpack

from sqlalchemy import Engine, text

from pipeline.db.outage import first_line
from pipeline.upstream.ratelimit import AdaptiveRate, LimiterOptions

log = logging.getLogger(__name__)

DEFAULT_SHARED_MARGIN_S = 0.2
_MIN_POLL_S = 0.002
_MAX_POLL_S = 1.0

_ENSURE_ROW = text("INSERT INTO upstream_limits (name) VALUES (:name) ON CONFLICT DO NOTHING")

# The turn, in one statement. The UPDATE waits for the row's lock and then re-reads the row,
# so its condition is judged on the latest committed starts. The SELECT after it reads the
# row as it was when the statement began: its wait is only a hint of when to ask again.
_TAKE_TURN = text(
    """
WITH granted AS (
  UPDATE upstream_limits AS l
  SET starts = (l.starts || clock_timestamp())[greatest(1, cardinality(l.starts) + 2 - :keep):]
  WHERE l.name = :name
    AND l.paused_until <= clock_timestamp()
    AND (cardinality(l.starts) < :k
         OR l.starts[cardinality(l.starts) - :k + 1] + :window <= clock_timestamp())
  RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM granted) AS granted,
       (SELECT extract(epoch FROM greatest(
                 l.paused_until,
                 CASE WHEN cardinality(l.starts) >= :k
                      THEN l.starts[cardinality(l.starts) - :k + 1] + :window END,
                 clock_timestamp()) - clock_timestamp())
        FROM upstream_limits l WHERE l.name = :name) AS wait_s
"""
)

_PAUSE = text(
    "UPDATE upstream_limits SET paused_until = greatest(paused_until, clock_timestamp() + :s) "
    "WHERE name = :name"
)


class SharedRateLimiter(AdaptiveRate):
    """`async with limiter:` (or `await limiter.acquire()`) before starting each request; the
    turn is taken in PostgreSQL (`engine`), in the row `name` of `upstream_limits`."""

    def __init__(
        self,
        engine: Engine,
        name: str,
        rate: float,
        **options: Unpack[LimiterOptions],
    ) -> None:
        options.setdefault("margin_s", DEFAULT_SHARED_MARGIN_S)
        super().__init__(rate, **options)
        self.engine = engine
        self.name = name
        self._keep = self._capacity(self.configured_rate)
        self._row_ready = False
        self._writes: set[asyncio.Future[None]] = set()

    def _try_turn(self) -> tuple[bool, float]:
        """One round trip: (granted, seconds to wait before asking again)."""
        k, window_s = self._window_s()
        window = timedelta(seconds=window_s)
        with self.engine.begin() as conn:
            if not self._row_ready:
                conn.execute(_ENSURE_ROW, {"name": self.name})
            row = conn.execute(
                _TAKE_TURN, {"name": self.name, "k": k, "keep": self._keep, "window": window}
            ).one()
        self._row_ready = True
        return bool(row.granted), float(row.wait_s or 0.0)

    async def acquire(self) -> float:
        """Wait for a turn; returns the local start time recorded (pass it to `slow_down`)."""
        async with self._lock:
            while True:
                local_wait = self._paused_until - self._clock()
                if local_wait > 0:
                    await self._sleep(local_wait)
                    continue
                try:
                    granted, wait = await asyncio.to_thread(self._try_turn)
                except Exception as exc:
                    # No database, no shared limit: no request starts. The run's own outage
                    # guard decides how long that may last.
                    log.debug("shared limit of %s not reachable: %s", self.name, first_line(exc))
                    await self._sleep(_MAX_POLL_S)
                    continue
                if granted:
                    return self._clock()
                await self._sleep(min(_MAX_POLL_S, max(_MIN_POLL_S, wait)))

    def pause(self, seconds: float) -> None:
        """Hold every request start until `seconds` from now (extends, never shortens): here at
        once, in the other processes from the moment the row is written."""
        seconds = max(0.0, seconds)
        self._paused_until = max(self._paused_until, self._clock() + seconds)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop (a synchronous caller): the local pause still holds
        write = loop.run_in_executor(None, self._write_pause, seconds)
        self._writes.add(write)
        write.add_done_callback(self._writes.discard)

    def _write_pause(self, seconds: float) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(_PAUSE, {"name": self.name, "s": timedelta(seconds=seconds)})
        except Exception as exc:  # the local pause holds; the others learn of it by a 429
            log.debug("shared pause of %s not written: %s", self.name, first_line(exc))
