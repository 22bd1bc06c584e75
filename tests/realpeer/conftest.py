"""Fixtures of the real-peer tier: the real @ikenxuan/amagi server (installed by `make test` into
tests/realpeer/node_modules) in front of a loopback Douyin stand-in. Started once per session,
each on a free 127.0.0.1 port. Missing Node or amagi fails these tests, never skips them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from douyin_standin import DouyinStandIn
from peers import SEED, AmagiServer, ThreadedStandIn, refusing_address


@pytest.fixture(scope="session")
def standin_server() -> Iterator[ThreadedStandIn]:
    server = ThreadedStandIn(seed=SEED)
    yield server
    server.close()


@pytest.fixture(scope="session")
def douyin(standin_server: ThreadedStandIn) -> DouyinStandIn:
    return standin_server.douyin


@pytest.fixture(scope="session")
def amagi(standin_server: ThreadedStandIn) -> Iterator[AmagiServer]:
    """The real amagi, its Douyin requests answered by the stand-in."""
    server = AmagiServer(standin_server.url)
    yield server
    server.close()


@pytest.fixture(scope="session")
def amagi_without_douyin() -> Iterator[AmagiServer]:
    """The real amagi where every Douyin request is refused (as when Douyin cannot be reached)."""
    sock, refused = refusing_address()
    server = AmagiServer(refused)
    yield server
    server.close()
    sock.close()
