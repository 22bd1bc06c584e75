"""The bundled fake (pipeline/testing/fake_upstream.py) answers like the real amagi 5.8.0 server:
same HTTP status, media type and envelope shape for the same situation (issue 11, item 5).

Written to the real server's behaviour, against the fake in its amagi style (`style="amagi"`:
one contract's route, short links on a port of their own).
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from douyin_standin import Douyin, DouyinStandIn
from peers import SEED, AmagiServer
from realpeer_helpers import Answer, http_get

from helpers import ThreadedFake
from pipeline.testing.fake_upstream import FaultConfig
from pipeline.testing.payloads import sample_aweme_ids

pytestmark = pytest.mark.slow

# Works of their own (test_real_amagi.py uses the first 40 of the same seed).
OK, GONE, COOKIE = sample_aweme_ids(50, seed=SEED)[44:47]
WORK = "/api/douyin/fetch_one_work"


@dataclass(frozen=True)
class Peers:
    amagi: AmagiServer
    fake: ThreadedFake
    fake_without_cookie: ThreadedFake


@pytest.fixture
def peers(
    amagi: AmagiServer, douyin: DouyinStandIn, fake_server: Callable[..., ThreadedFake]
) -> Peers:
    douyin.script(GONE, Douyin.GONE)
    douyin.script(COOKIE, Douyin.EMPTY)
    return Peers(
        amagi,
        fake_server(seed=SEED, faults=FaultConfig(gone_ids=frozenset({GONE})), style="amagi"),
        fake_server(seed=SEED, faults=FaultConfig(cookie_expired=True), style="amagi"),
    )


def shape(answer: Answer) -> dict[str, Any]:
    """What a client can tell apart: status, media type, and the envelope's keys and codes."""
    out: dict[str, Any] = {"status": answer.status, "media_type": answer.media_type}
    if answer.media_type != "application/json":
        return out
    try:
        doc = json.loads(answer.body)
    except ValueError:
        out["body"] = "not JSON"
        return out
    out["keys"] = sorted(doc)
    for key in ("success", "code", "message"):
        out[key] = doc.get(key)
    if isinstance(doc.get("error"), dict):
        out["error"] = sorted(doc["error"])
        out["errorDescription"] = doc["error"].get("errorDescription")
    if isinstance(doc.get("data"), dict):
        out["data"] = sorted(doc["data"])
    if isinstance(doc.get("errors"), list):
        out["errors"] = doc["errors"]
    return out


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(f"{WORK}?aweme_id={OK}", id="ok"),
        pytest.param(f"{WORK}?aweme_id={GONE}", id="gone"),
        pytest.param(f"{WORK}", id="missing-parameter"),
        pytest.param(f"{WORK}?aweme_id=", id="empty-parameter"),
        pytest.param(f"{WORK}?url=https://www.douyin.com/video/{OK}", id="url-parameter"),
        pytest.param(f"{WORK}?aweme_id={OK}&aweme_id={OK}", id="parameter-twice"),
        pytest.param(f"{WORK}?aweme_id=abc", id="non-numeric-id"),
        pytest.param("/api/douyin/no_such_route", id="unknown-path"),
        pytest.param(
            f"/douyin/fetch_one_work?url=https://www.douyin.com/video/{OK}", id="seed-path"
        ),
    ],
)
def test_same_answer_shape(peers: Peers, path: str) -> None:
    assert shape(http_get(peers.fake.url, path)) == shape(http_get(peers.amagi.url, path))


def test_short_link_path(peers: Peers) -> None:
    path = peers.fake.fake.short_link(OK).removeprefix("https://v.douyin.com")
    assert shape(http_get(peers.fake.url, path)) == shape(http_get(peers.amagi.url, path))


def test_expired_cookie(peers: Peers) -> None:
    path = f"{WORK}?aweme_id={COOKIE}"
    real = shape(http_get(peers.amagi.url, path))
    assert shape(http_get(peers.fake_without_cookie.url, path)) == real


def test_same_keep_alive_headers(peers: Peers) -> None:
    """On a kept-alive connection amagi (Node) announces `Keep-Alive: timeout=5` and closes idle
    connections after 5 s, which a client's connection pool must expect."""

    def headers(base_url: str) -> dict[str, str | None]:
        host, port = urllib.parse.urlsplit(base_url).netloc.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        try:
            conn.request("GET", f"{WORK}?aweme_id={OK}")  # HTTP/1.1, no `Connection: close`
            response = conn.getresponse()
            response.read()
            return {h: response.getheader(h) for h in ("X-Powered-By", "Keep-Alive", "Connection")}
        finally:
            conn.close()

    assert headers(peers.fake.url) == headers(peers.amagi.url)
