"""The PostgreSQL-held rate limiter (`pipeline.upstream.shared_limit`): turns are taken in the
database, so two limiters on two engines (stand-ins for two processes) keep one limit. The
end-to-end proof, two `ingest` processes against one limited fake, is in
tests/reliability/test_many_workers.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text

from pipeline.upstream.shared_limit import SharedRateLimiter

# A window far longer than the test can take: whether a turn is granted never depends on
# how fast this machine is.
WIDE = 60.0


@pytest.fixture
def engines(db_url: str) -> Iterator[tuple[Engine, Engine]]:
    a, b = create_engine(db_url), create_engine(db_url)
    yield a, b
    a.dispose()
    b.dispose()


def test_two_limiters_share_one_window(engines: tuple[Engine, Engine]) -> None:
    a = SharedRateLimiter(engines[0], "svc", 3, margin_s=WIDE)
    b = SharedRateLimiter(engines[1], "svc", 3, margin_s=WIDE)
    grants = [a._try_turn(), b._try_turn(), a._try_turn()]
    assert [granted for granted, _ in grants] == [True, True, True]
    for limiter in (b, a):
        granted, wait = limiter._try_turn()
        assert not granted
        assert 0 < wait <= 1 + WIDE
    # Another service has its own row and its own window.
    assert SharedRateLimiter(engines[1], "other", 3, margin_s=WIDE)._try_turn()[0]
    with engines[0].connect() as conn:
        starts = conn.execute(
            text("SELECT cardinality(starts) FROM upstream_limits WHERE name = 'svc'")
        ).scalar_one()
    assert starts == 3  # the log keeps the latest k starts only


def test_a_shared_pause_holds_the_other_processes(engines: tuple[Engine, Engine]) -> None:
    a = SharedRateLimiter(engines[0], "svc", 10)
    b = SharedRateLimiter(engines[1], "svc", 10)
    assert b._try_turn()[0]
    a._write_pause(WIDE)  # what `pause` writes from its thread
    granted, wait = b._try_turn()
    assert not granted
    assert wait > 1


async def test_acquire_takes_turns_and_slow_down_narrows_them(
    engines: tuple[Engine, Engine],
) -> None:
    limiter = SharedRateLimiter(engines[0], "svc", 4, margin_s=WIDE)
    for _ in range(4):
        await limiter.acquire()
    assert not limiter._try_turn()[0]
    assert limiter.slow_down()
    assert limiter.rate == 2
    limiter.success()
    assert limiter.rate == 2  # recovers only after recover_after successes


def test_rejects_a_rate_that_is_not_positive(engines: tuple[Engine, Engine]) -> None:
    with pytest.raises(ValueError, match="positive"):
        SharedRateLimiter(engines[0], "svc", 0)


async def test_without_the_database_no_request_starts(engines: tuple[Engine, Engine]) -> None:
    """A shared limit that cannot be read grants nothing (and raises nothing): the run's own
    outage guard decides how long to wait."""
    gone = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=2")
    sleeps: list[float] = []

    class Enough(Exception):
        pass

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 2:
            raise Enough

    limiter = SharedRateLimiter(gone, "svc", 5, sleep=sleep)
    with pytest.raises(Enough):
        await limiter.acquire()
    assert sleeps == [1.0, 1.0]
    gone.dispose()
