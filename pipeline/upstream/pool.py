"""The upstream pool: several parsing services behind one run (docs/upstreams.md).

    links ──► Dispatcher ──► service A: its workers, its limiter, its watch ──┐
                        ├──► service B: …                                    ├──► writer
                        └──► service C: …                                    ┘

Every service has its own `UpstreamClient` (its own rate limiter, concurrency and
`ServiceWatch`), and `concurrency` workers that take links from one shared `Dispatcher`: a
service with capacity takes the next link, so a faster service takes more. A short link rides
the service whose worker took it (its limiter and its slots): the lookup is part of fetching
that link.

A service that signals trouble for the whole service (`ServiceStop`: expired cookie, rejected
token, captcha, unreachable, throttled on and on) is *parked*: its workers take no link, the
links it held go back to the front of the queue for the others (never recorded as failed),
and after `park_s` (doubling after each failed probe, up to `park_max_s`) one of its workers
takes one link as a probe, with no retries. An answer about the work (ok, gone, invalid,
unusable) reopens the service; anything else parks it again. The run stops early, as a run
against one service always did, only when every service is parked at the same time.

The limiter seam: `LimiterFactory` builds each service's limiter (`Limiter`, the protocol the
client uses). `local_limiter` is the in-process `RateLimiter`; a service marked `shared = true`
gets `SharedRateLimiter`, whose state lives in PostgreSQL (`pipeline.upstream.shared_limit`),
on the run's engine. Tests and tools can pass their own factory (`JobOptions["limiters"]`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from sqlalchemy import Engine

from pipeline.config import UpstreamService
from pipeline.upstream.ratelimit import DEFAULT_RATE_MARGIN_S, Clock, RateLimiter
from pipeline.upstream.shared_limit import SharedRateLimiter
from pipeline.upstream.signals import ServiceStop

if TYPE_CHECKING:
    from pipeline.upstream.client import UpstreamClient

log = logging.getLogger("pipeline.upstream")

# Whether `shared = true` services can run (a PostgreSQL-held limiter exists). The services
# file refuses `shared = true` while this is False, with a clear message.
SHARED_LIMITER_AVAILABLE = True


class Limiter(Protocol):
    """What the client needs of a rate limiter (`RateLimiter`, or a shared one)."""

    @property
    def rate(self) -> float:
        """The effective rate now (lowered after 429s)."""
        ...

    async def acquire(self) -> float:
        """Wait for a turn; return the start time recorded (the client's monotonic clock)."""
        ...

    def pause(self, seconds: float) -> None:
        """Hold every start until `seconds` from now (extends, never shortens)."""
        ...

    def slow_down(self, started_at: float | None = None) -> bool:
        """Lower the effective rate after a 429; whether it changed."""
        ...

    def success(self) -> None:
        """One successful answer (lets a lowered rate recover)."""
        ...


LimiterFactory = Callable[[UpstreamService], Limiter]


def local_limiter(service: UpstreamService) -> Limiter:
    """The in-process limiter: this service's rate for this process alone."""
    return RateLimiter(service.rate, margin_s=DEFAULT_RATE_MARGIN_S)


def make_limiters(engine: Engine | None) -> LimiterFactory:
    """The production factory: local limiters, and for `shared = true` services one whose
    state is in PostgreSQL (so several processes and hosts keep one limit together)."""

    def make(service: UpstreamService) -> Limiter:
        if service.shared:
            if engine is None:
                raise RuntimeError(f"upstream {service.name!r}: a shared limit needs the database")
            return SharedRateLimiter(engine, service.name, service.rate)
        return local_limiter(service)

    return make


# -- one service's state ------------------------------------------------------------------------


class ServiceState(StrEnum):
    OPEN = "open"  # takes links
    PARKED = "parked"  # takes nothing until its probe is due
    PROBING = "probing"  # one worker fetches one link; the others wait for its answer


@dataclass(slots=True)
class ServiceStats:
    """What a service did in one run (the summary and `ingest runs` show it)."""

    requests: int = 0  # HTTP requests started (short-link lookups included)
    rate_limited: int = 0  # answers that said "too many requests"
    parks: int = 0
    links: int = 0  # links whose fetch ended here (recorded)
    first_request_at: float | None = None
    last_request_at: float | None = None
    parked_s: float = 0.0

    def request_started(self, at: float) -> None:
        self.requests += 1
        if self.first_request_at is None:
            self.first_request_at = at
        self.last_request_at = at

    def achieved_rate(self, limit: float) -> float | None:
        """Requests per second while the service was used: from its first request start to
        one limiter window after its last. The limiter lets a window's worth of requests start
        at once, so "requests - 1 over the span between first and last" would read a burst
        of 10 at a limit of 10 as far more than 10/s; counting the last window makes a
        service kept at its limit read as its limit."""
        if self.first_request_at is None or self.last_request_at is None:
            return None
        window = max(1.0, max(1, math.floor(limit)) / limit)
        return self.requests / (self.last_request_at - self.first_request_at + window)


@dataclass(slots=True)
class PoolMember:
    """One service of the pool: its settings, its client, its state and its stats."""

    service: UpstreamService
    client: UpstreamClient
    state: ServiceState = ServiceState.OPEN
    parked_until: float = -math.inf
    parked_at: float | None = None
    backoff_s: float = 0.0
    stop: ServiceStop | None = None  # why it is (or was last) parked

    @property
    def name(self) -> str:
        return self.service.name

    @property
    def stats(self) -> ServiceStats:
        return self.client.stats

    def report(self, now: float) -> dict[str, Any]:
        """This service's line of the run record (JSON)."""
        s = self.stats
        parked_s = s.parked_s + (now - self.parked_at if self.parked_at is not None else 0.0)
        rate = s.achieved_rate(self.service.rate)
        out: dict[str, Any] = {
            "requests": s.requests,
            "rate": round(rate, 2) if rate is not None else None,
            "limit": self.service.rate,
            "rate_limited": s.rate_limited,
            "links": s.links,
            "parks": s.parks,
            "parked_s": round(parked_s, 1),
            "parked": self.state is not ServiceState.OPEN,
        }
        if self.state is not ServiceState.OPEN and self.stop is not None:
            out["cause"] = str(self.stop.cause)
            out["reason"] = self.stop.short
            out["message"] = self.stop.message
        return out


# -- the shared queue -----------------------------------------------------------------------------

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class Lease(Generic[Item]):
    item: Item
    probe: bool  # this fetch is its parked service's probe
    tried: frozenset[str] = frozenset()  # services that spent their retries on it already


class Dispatcher(Generic[Item]):
    """The links waiting for a fetch, and which service may take one.

    `take(member)` waits until the member may fetch (open, or its probe is due) and a link is
    waiting; None once the producer closed the queue and no link is waiting or in flight (a
    link in flight may still come back). `give_back` returns a link to the front of the queue:
    one a parked service held, or one whose retries ran out at a service while another open
    service has not tried it (`elsewhere`); a service passes over a link it tried while such
    another service is open. `done` says a taken link's fetch ended.
    """

    def __init__(self, maxsize: int, clock: Clock = time.monotonic) -> None:
        self.members: list[PoolMember] = []  # the pool's (`attach`), for `elsewhere`
        self._items: deque[tuple[Item, frozenset[str]]] = deque()
        self._maxsize = max(1, maxsize)
        self._in_flight = 0
        self._closed = False
        self._changed = asyncio.Condition()
        self._clock = clock

    def attach(self, members: Sequence[PoolMember]) -> None:
        self.members = list(members)

    @property
    def finished(self) -> bool:
        return self._closed and not self._items and self._in_flight == 0

    def elsewhere(self, member: PoolMember, tried: frozenset[str]) -> bool:
        """Whether another open service has not tried this link yet."""
        return any(
            m.state is ServiceState.OPEN and m is not member and m.name not in tried
            for m in self.members
        )

    def _pick(self, member: PoolMember) -> int | None:
        """The first waiting link `member` should take: not one it tried, unless no other open
        service would take it (so every link always has a taker)."""
        for i, (_, tried) in enumerate(self._items):
            if member.name not in tried or not self.elsewhere(member, tried):
                return i
        return None

    def __len__(self) -> int:
        return len(self._items)

    async def put(self, item: Item) -> None:
        async with self._changed:
            while len(self._items) >= self._maxsize:
                await self._changed.wait()
            self._items.append((item, frozenset()))
            self._changed.notify_all()

    def full(self) -> bool:
        return len(self._items) >= self._maxsize

    async def close(self) -> None:
        """No more links will be put."""
        async with self._changed:
            self._closed = True
            self._changed.notify_all()

    async def take(self, member: PoolMember) -> Lease[Item] | None:
        async with self._changed:
            while True:
                if self.finished:
                    return None
                now = self._clock()
                wait: float | None = None
                if member.state is ServiceState.PARKED and now < member.parked_until:
                    wait = member.parked_until - now
                elif member.state is not ServiceState.PROBING and (
                    (i := self._pick(member)) is not None
                ):
                    probe = member.state is ServiceState.PARKED
                    if probe:
                        member.state = ServiceState.PROBING
                        log.info("probing upstream %s with one link", member.name)
                    self._in_flight += 1
                    item, tried = self._items[i]
                    del self._items[i]
                    self._changed.notify_all()  # room for the producer
                    return Lease(item, probe, tried)
                try:
                    async with asyncio.timeout(wait):
                        await self._changed.wait()
                except TimeoutError:
                    pass  # its probe is due

    async def give_back(self, item: Item, tried: frozenset[str] = frozenset()) -> None:
        """A link taken and not settled: first in line again. `tried`: the services that
        spent their retries on it (not one that was parked: that was not the link's fault)."""
        async with self._changed:
            self._in_flight -= 1
            self._items.appendleft((item, tried))
            self._changed.notify_all()

    async def done(self) -> None:
        async with self._changed:
            self._in_flight -= 1
            self._changed.notify_all()

    async def changed(self) -> None:
        """Wake the waiters (a service's state changed)."""
        async with self._changed:
            self._changed.notify_all()


# -- parking ---------------------------------------------------------------------------------------


class Pool:
    """The services of one run and the parking rules."""

    def __init__(self, members: Sequence[PoolMember], clock: Clock = time.monotonic) -> None:
        if not members:
            raise ValueError("a pool needs at least one service")
        self.members = list(members)
        self._clock = clock

    @property
    def pooled(self) -> bool:
        return len(self.members) > 1

    @property
    def all_parked(self) -> bool:
        return all(m.state is not ServiceState.OPEN for m in self.members)

    def park(self, member: PoolMember, stop: ServiceStop, *, probe: bool = False) -> bool:
        """Park `member`, or park it again after its probe (`probe`) failed, twice as long.
        Returns whether every service is now parked (then the run stops). Links the service
        held when it was parked come back cut short too: they change nothing."""
        now = self._clock()
        first = member.state is ServiceState.OPEN
        if first:
            member.backoff_s = member.service.park_s
            member.stats.parks += 1
            member.parked_at = now
        elif probe and member.state is ServiceState.PROBING:
            member.backoff_s = min(member.service.park_max_s, member.backoff_s * 2)
        else:
            return self.all_parked
        member.stop = stop
        member.state = ServiceState.PARKED
        member.parked_until = now + member.backoff_s
        if self.all_parked:
            return True
        if first:
            log.error(
                "upstream %s parked: %s. The other services carry on; probing it again in %gs",
                member.name,
                stop.message,
                member.backoff_s,
            )
        else:
            log.warning(
                "upstream %s still unavailable (%s); next probe in %gs",
                member.name,
                stop.short,
                member.backoff_s,
            )
        return False

    def reopen(self, member: PoolMember) -> None:
        """Its probe got an answer about the work: the service takes links again."""
        if member.state is ServiceState.OPEN:
            return
        if member.parked_at is not None:
            member.stats.parked_s += self._clock() - member.parked_at
        member.parked_at = None
        member.state = ServiceState.OPEN
        member.parked_until = -math.inf
        log.warning("upstream %s answers again: back in the pool", member.name)

    def stop_message(self) -> tuple[str, bool]:
        """Why the run stops when every service is parked, and whether someone must act."""
        parked = [m for m in self.members if m.state is not ServiceState.OPEN and m.stop]
        needs_operator = any(m.stop.needs_operator for m in parked if m.stop is not None)
        if not self.pooled and parked and parked[0].stop is not None:
            return parked[0].stop.message, needs_operator
        parts = "; ".join(f"{m.name}: {m.stop.message}" for m in parked if m.stop is not None)
        return f"every upstream service is parked. {parts}", needs_operator

    def parked_needing_operator(self) -> list[PoolMember]:
        return [
            m
            for m in self.members
            if m.state is not ServiceState.OPEN and m.stop is not None and m.stop.needs_operator
        ]

    def report(self) -> dict[str, dict[str, Any]]:
        now = self._clock()
        return {m.name: m.report(now) for m in self.members}
