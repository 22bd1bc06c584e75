"""Riding out a database outage: which errors are worth waiting for, and the waiting.

A run makes a handful of kinds of database call (start, known-links check, batch commit,
heartbeat, finish). Each is one short transaction that is safe to repeat, so when the server
restarts, fails over or refuses connections for a while, the call is simply repeated with a
capped exponential backoff until the outage window runs out. Meanwhile the fetchers pause on
their own: the writer stops draining the bounded queues.

Everything else a write can raise (PostgreSQL rejecting a value, a Python error building rows)
is not transient: repeating it would fail the same way, so the caller isolates it instead.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from pipeline.errors import DatabaseError

log = logging.getLogger(__name__)

T = TypeVar("T")

# SQLSTATE classes of a server going away or too busy, and of a transaction the server rolled
# back only because of another one (deadlock, serialization failure): all worth repeating.
# Class 54 (program limit exceeded, e.g. "stack depth limit exceeded" on a deeply nested JSON
# value) is an OperationalError too, but a property of the data: it is *not* listed.
_TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})
_TRANSIENT_STATES = frozenset({"55P03", "55006"})  # lock not available, object in use


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an error's message: for a driver error, the server's or client
    library's own words (SQLAlchemy appends the SQL and its parameters; they are left out)."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return (text.splitlines() or [""])[0][:limit]


class DatabaseUnavailable(DatabaseError):
    """The database stayed unreachable for longer than the outage window."""


def is_transient(exc: BaseException) -> bool:
    """Whether repeating the same transaction later may succeed."""
    if isinstance(exc, PoolTimeout):
        return True
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", None)
    if isinstance(state, str) and state:
        return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES
    # No SQLSTATE: the client library's own connection errors (refused, reset, closed).
    return isinstance(exc, (OperationalError, InterfaceError))


class OutageGuard:
    """Repeats transient failures of database calls for up to `window_s` seconds of outage.

    Shared by every call of one run (they run in worker threads), so an outage is logged once
    when it starts and once when it ends, however many calls were waiting."""

    def __init__(
        self,
        window_s: float,
        *,
        first_delay_s: float = 0.2,
        max_delay_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        self.window_s = window_s
        self.first_delay_s = first_delay_s
        self.max_delay_s = max_delay_s
        self._clock = clock
        self._aborted = threading.Event()
        self._sleep = sleep if sleep is not None else self._aborted.wait
        self._lock = threading.Lock()
        self._outage_since: float | None = None

    def abort(self) -> None:
        """Stop waiting (a second Ctrl-C): calls still waiting give up at once."""
        self._aborted.set()

    def call(self, what: str, fn: Callable[[], T]) -> T:
        """`fn()`, repeated while it fails transiently and the outage is within its window."""
        delay = self.first_delay_s
        while True:
            try:
                result = fn()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                waited = self._failed(what, exc)
                if waited >= self.window_s or self._aborted.is_set():
                    raise DatabaseUnavailable(
                        f"the database was unreachable for {waited:.0f} s during the {what} "
                        f"(limit --db-outage-seconds {self.window_s:g}): {first_line(exc)}"
                    ) from exc
                self._sleep(min(delay, max(0.0, self.window_s - waited)))
                delay = min(delay * 2, self.max_delay_s)
            else:
                self._succeeded()
                return result

    def _failed(self, what: str, exc: Exception) -> float:
        """Note a transient failure; how long the outage has lasted so far."""
        now = self._clock()
        with self._lock:
            if self._outage_since is None:
                self._outage_since = now
                log.warning(
                    "database unavailable during the %s (%s); waiting up to %g s for it "
                    "to come back (fetching pauses meanwhile)",
                    what,
                    first_line(exc),
                    self.window_s,
                )
            return now - self._outage_since

    def _succeeded(self) -> None:
        if self._outage_since is None:  # the common case: no lock taken
            return
        with self._lock:
            if self._outage_since is not None:
                log.warning(
                    "database is back after %.1f s; continuing",
                    self._clock() - self._outage_since,
                )
                self._outage_since = None
