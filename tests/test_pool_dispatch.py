"""The pool's dispatcher and parking rules, on a fake clock: which service may take a link,
when a parked one is probed, and when the queue is finished."""

from __future__ import annotations

import asyncio

from pipeline.config import UpstreamService
from pipeline.upstream.client import UpstreamClient
from pipeline.upstream.outcomes import Cause
from pipeline.upstream.pool import Dispatcher, Pool, PoolMember, ServiceState
from pipeline.upstream.signals import ServiceStop, operator_stop

COOKIE = operator_stop(Cause.COOKIE, "cookie expired", "http://127.0.0.1:1")
DOWN = ServiceStop(Cause.SERVICE_DOWN, "did not answer", "upstream service did not answer")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def member(name: str, park_s: float = 10, park_max_s: float = 30) -> PoolMember:
    service = UpstreamService(name, "http://127.0.0.1:1", park_s=park_s, park_max_s=park_max_s)
    client = UpstreamClient(
        service.base, "seed", token=None, rate=10, concurrency=1, timeout_s=1, retries=0
    )
    return PoolMember(service, client)


async def taken(dispatcher: Dispatcher[int], m: PoolMember) -> int | None:
    """What `m` takes at once (within 50 ms); None if it would still wait."""
    try:
        lease = await asyncio.wait_for(dispatcher.take(m), 0.05)
    except TimeoutError:
        return None
    return None if lease is None else lease.item


def test_parking_probing_and_reopening() -> None:
    async def scenario() -> None:
        clock = Clock()
        a, b = member("a"), member("b")
        pool = Pool([a, b], clock=clock)
        links: Dispatcher[int] = Dispatcher(10, clock=clock)
        for i in range(5):
            await links.put(i)

        assert await taken(links, a) == 0
        assert not pool.park(a, COOKIE)  # b is still open: the run goes on
        await links.give_back(0)  # the link a held goes first in line, for b
        assert await taken(links, b) == 0
        assert await taken(links, a) is None  # parked: takes nothing

        clock.now += 10  # its probe is due: one link, as a probe
        lease = await asyncio.wait_for(links.take(a), 1)
        assert lease is not None
        assert (lease.item, lease.probe, a.state) == (1, True, ServiceState.PROBING)
        assert await taken(links, a) is None  # one probe at a time

        assert not pool.park(a, COOKIE, probe=True)  # the probe failed: twice as long
        assert (a.backoff_s, a.parked_until) == (20, clock.now + 20)
        assert not pool.park(a, COOKIE)  # a stale link of a coming back changes nothing
        assert a.backoff_s == 20
        assert a.stats.parks == 1
        await links.give_back(1)

        clock.now += 20
        lease = await asyncio.wait_for(links.take(a), 1)
        assert lease is not None
        assert lease.probe
        pool.park(a, COOKIE, probe=True)
        assert a.backoff_s == 30  # capped at park_max_s
        await links.give_back(lease.item)

        clock.now += 30
        lease = await asyncio.wait_for(links.take(a), 1)
        assert lease is not None
        pool.reopen(a)
        assert a.state is ServiceState.OPEN
        assert a.report(clock.now)["parked"] is False
        assert await taken(links, a) == 2  # open again: takes links as usual

    asyncio.run(scenario())


def test_the_run_stops_only_when_every_service_is_parked() -> None:
    clock = Clock()
    a, b = member("a"), member("b")
    pool = Pool([a, b], clock=clock)
    assert not pool.park(a, COOKIE)
    assert pool.park(b, DOWN)
    message, needs_operator = pool.stop_message()
    assert message.startswith("every upstream service is parked. a: ")
    assert "; b: did not answer" in message
    assert needs_operator  # one of them needs someone: 77
    assert [m.name for m in pool.parked_needing_operator()] == ["a"]

    alone = member("alone")
    one = Pool([alone], clock=clock)
    assert one.park(alone, DOWN)  # a pool of one stops at once, with the service's message
    assert one.stop_message() == ("did not answer", False)


def test_the_queue_ends_only_when_no_link_can_come_back() -> None:
    async def scenario() -> None:
        a = member("a")
        links: Dispatcher[int] = Dispatcher(2)
        await links.put(1)
        await links.close()
        lease = await links.take(a)
        assert lease is not None
        assert not links.finished  # the link in flight may come back
        assert await taken(links, a) is None
        await links.give_back(lease.item)
        lease = await links.take(a)
        assert lease is not None
        await links.done()
        assert links.finished
        assert await links.take(a) is None

    asyncio.run(scenario())


def test_a_link_whose_retries_ran_out_goes_to_a_service_that_has_not_tried_it() -> None:
    async def scenario() -> None:
        clock = Clock()
        a, b = member("a"), member("b")
        pool = Pool([a, b], clock=clock)
        links: Dispatcher[int] = Dispatcher(10, clock=clock)
        links.attach([a, b])
        await links.put(1)
        await links.put(2)

        lease = await links.take(a)
        assert lease is not None
        assert lease.item == 1
        assert links.elsewhere(a, lease.tried)  # b is open and has not tried it
        await links.give_back(1, lease.tried | {"a"})
        assert await taken(links, a) == 2  # a passes over the link it tried
        lease = await links.take(b)
        assert lease is not None
        assert (lease.item, lease.tried) == (1, frozenset({"a"}))
        assert not links.elsewhere(b, lease.tried)  # everyone tried it: b records it
        await links.give_back(1, lease.tried)

        pool.park(b, DOWN)  # nobody else open would take it: a does after all
        assert await taken(links, a) == 1

    asyncio.run(scenario())
