"""UpstreamClient against real local servers: the fake upstream and small ad-hoc apps."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from helpers import serving
from pipeline.inputs import ShareLink, canonical_link
from pipeline.testing.fake_upstream import FakeUpstream, FaultConfig
from pipeline.testing.payloads import sample_aweme_ids
from pipeline.upstream.client import UpstreamClient
from pipeline.upstream.outcomes import FetchResult, Outcome

ENVELOPES = Path(__file__).resolve().parent / "fixtures" / "upstream" / "amagi_5.8.0_http_envelopes"
TOKEN = "tok-8f3a9c1e-very-secret"
IDS = sample_aweme_ids(40, seed=7)
STYLES = ["seed", "amagi"]

MakeFake = Callable[..., Awaitable[FakeUpstream]]


@pytest.fixture
async def make_fake() -> AsyncIterator[MakeFake]:
    fakes: list[FakeUpstream] = []

    async def make(**faults: Any) -> FakeUpstream:
        fake = FakeUpstream(seed=7, faults=FaultConfig(**faults))
        await fake.start()
        fakes.append(fake)
        return fake

    yield make
    for fake in fakes:
        await fake.close()


def client_for(base: str, style: str, **kw: Any) -> UpstreamClient:
    options: dict[str, Any] = {
        "token": None, "rate": 50.0, "concurrency": 4, "timeout_s": 2.0, "retries": 2,
        "resolve_base": base, "backoff_base_s": 0.01, "backoff_max_s": 0.05,
    }  # fmt: skip
    options.update(kw)
    return UpstreamClient(base, style, **options)  # type: ignore[arg-type]


def api_requests(fake: FakeUpstream) -> list[Any]:
    return [r for r in fake.served if r.style != "short_link"]


def short(fake: FakeUpstream, aweme_id: int) -> ShareLink:
    return ShareLink(fake.short_link(aweme_id), None, is_short=True)


# -- outcome classes, both styles ----------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
async def test_ok_and_gone(make_fake: MakeFake, style: str) -> None:
    fake = await make_fake(gone_ids=frozenset({IDS[1]}))
    async with client_for(fake.base_url or "", style) as client:
        ok = await client.fetch(canonical_link(IDS[0]))
        gone = await client.fetch(canonical_link(IDS[1]))
    assert ok.outcome is Outcome.OK
    assert ok.aweme_detail is not None
    assert ok.aweme_detail["aweme_id"] == str(IDS[0])
    assert (ok.aweme_id, ok.reason, ok.attempts, ok.http_status) == (IDS[0], "", 1, 200)
    assert gone.outcome is Outcome.GONE
    assert gone.reason == "gone: status_self_see"
    assert (gone.aweme_detail, gone.aweme_id, gone.attempts) == (None, IDS[1], 1)
    assert len(fake.served) == 2  # permanent outcomes are not retried


@pytest.mark.parametrize("style", STYLES)
async def test_short_link(make_fake: MakeFake, style: str) -> None:
    fake = await make_fake()
    async with client_for(fake.base_url or "", style) as client:
        result = await client.fetch(short(fake, IDS[2]))
    assert result.outcome is Outcome.OK
    assert result.aweme_id == IDS[2]
    kinds = [r.style for r in fake.served]
    # amagi resolves the link itself (one HEAD, stopped at the first Location with an id);
    # seed hands the link to the service.
    assert kinds == (["short_link", "amagi"] if style == "amagi" else ["seed"])
    assert result.attempts == (2 if style == "amagi" else 1)


async def test_unknown_short_link_is_invalid_in_amagi_style(make_fake: MakeFake) -> None:
    fake = await make_fake()
    async with client_for(fake.base_url or "", "amagi") as client:
        result = await client.fetch(ShareLink("https://v.douyin.com/iZZZZZZZZZZZ/", None, True))
    assert result.outcome is Outcome.INVALID
    assert result.reason.startswith("short link did not resolve to a work")
    assert all(r.style == "short_link" for r in fake.served)  # no fetch was attempted


async def test_link_without_id_is_invalid_in_seed_style(make_fake: MakeFake) -> None:
    fake = await make_fake()
    async with client_for(fake.base_url or "", "seed") as client:
        result = await client.fetch(
            ShareLink("https://www.douyin.com/user/MS4wLjABAAAA", None, False)
        )
    assert result.outcome is Outcome.INVALID
    assert "HTTP 400" in result.reason
    assert len(fake.served) == 1


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize(
    "fault", ["error_5xx", "timeout", "reset", "truncated", "non_json", "soft_failure"]
)
async def test_transient_faults_are_retried_then_succeed(
    make_fake: MakeFake, style: str, fault: str
) -> None:
    fake = await make_fake(**{f"{fault}_rate": 1.0, "fail_attempts": 1, "hang_s": 5.0})
    async with client_for(fake.base_url or "", style, timeout_s=0.3) as client:
        result = await client.fetch(canonical_link(IDS[3]))
    assert result.outcome is Outcome.OK, result.reason
    assert result.attempts == 2
    assert [r.outcome for r in fake.served] == [fault, "ok"]


@pytest.mark.parametrize("style", STYLES)
async def test_retries_stop_at_the_limit(make_fake: MakeFake, style: str) -> None:
    fake = await make_fake(error_5xx_rate=1.0, fail_attempts=100)
    async with client_for(fake.base_url or "", style, retries=3) as client:
        result = await client.fetch(canonical_link(IDS[4]))
    assert result.outcome is Outcome.TRANSIENT
    assert result.attempts == 4
    assert len(fake.served) == 4  # 1 try + 3 retries, then the link is recorded as failed
    assert "gave up after 4 attempts" in result.reason
    assert result.http_status in (500, 502, 503)


async def test_null_detail_is_transient_after_bounded_retries(make_fake: MakeFake) -> None:
    fake = await make_fake(null_detail_ids=frozenset({IDS[5]}))
    async with client_for(fake.base_url or "", "amagi", retries=1) as client:
        result = await client.fetch(canonical_link(IDS[5]))
    assert result.outcome is Outcome.TRANSIENT
    assert result.reason.startswith("upstream returned no detail")
    assert len(fake.served) == 2


@pytest.mark.parametrize("style", STYLES)
async def test_rate_limited_when_retries_run_out(make_fake: MakeFake, style: str) -> None:
    fake = await make_fake(rate_limit=1, retry_after_s=30)
    async with client_for(fake.base_url or "", style, retries=0) as client:
        results = await asyncio.gather(*(client.fetch(canonical_link(i)) for i in IDS[6:9]))
        assert client.limiter.paused_until > time.monotonic() + 20  # Retry-After: 30, uncapped
        assert client.limiter.rate < 50  # adaptive decrease
    outcomes = sorted(r.outcome.value for r in results)
    assert outcomes == ["ok", "rate_limited", "rate_limited"]
    assert all(r.http_status == 429 for r in results if r.outcome is Outcome.RATE_LIMITED)


@pytest.mark.parametrize("style", STYLES)
async def test_retry_after_pauses_everyone(make_fake: MakeFake, style: str) -> None:
    # The fake admits 1 request/s and answers the rest 429 with Retry-After: 1.
    fake = await make_fake(rate_limit=1, retry_after_s=1, latency_s=0.1)
    async with client_for(fake.base_url or "", style, retries=4, rate=10) as client:
        results = await asyncio.gather(*(client.fetch(canonical_link(i)) for i in IDS[10:13]))
    assert [r.outcome for r in results] == [Outcome.OK] * 3
    limited = [r.t for r in fake.served if r.status == 429]
    assert 1 <= len(limited) <= 3  # without the shared pause, retries would hammer
    for t in limited:
        # The 429 reaches the client at t + 0.1; requests already in flight arrived within
        # milliseconds of t. Nothing else may arrive before the pause (1 s) has passed.
        later = [r.t for r in fake.served if r.t > t + 0.05]
        assert all(x >= t + 1.0 for x in later), (t, later)


async def test_retry_after_is_capped(make_fake: MakeFake) -> None:
    fake = await make_fake(rate_limit=1, retry_after_s=3600)
    async with client_for(fake.base_url or "", "seed", retries=10, max_retry_after_s=0.2) as c:
        started = time.monotonic()
        results = await asyncio.gather(*(c.fetch(canonical_link(i)) for i in IDS[13:15]))
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK]
    assert time.monotonic() - started < 5


# -- operator errors and the token -------------------------------------------------------------


@pytest.mark.parametrize("style", STYLES)
async def test_operator_error_stops_the_client(make_fake: MakeFake, style: str) -> None:
    fake = await make_fake(cookie_expired=True)
    async with client_for(fake.base_url or "", style, concurrency=2) as client:
        first = await client.fetch(canonical_link(IDS[15]))
        assert first.outcome is Outcome.OPERATOR
        assert first.reason == "upstream service's Douyin cookie is missing or expired"
        assert client.stopped
        assert client.operator_error == first.reason
        served = len(fake.served)
        later = await asyncio.gather(*(client.fetch(canonical_link(i)) for i in IDS[16:22]))
    assert served == 1
    assert len(fake.served) == 1  # no request after the stop
    assert all(r.outcome is Outcome.OPERATOR for r in later)
    assert all(r.reason.startswith("stopped after an operator error: ") for r in later)
    assert all(r.attempts == 0 for r in later)


async def test_concurrent_fetches_stop_after_the_in_flight_ones(make_fake: MakeFake) -> None:
    fake = await make_fake(cookie_expired=True, latency_s=0.05)
    async with client_for(fake.base_url or "", "amagi", concurrency=2) as client:
        results = await asyncio.gather(*(client.fetch(canonical_link(i)) for i in IDS[:10]))
    assert len(fake.served) <= 2
    assert all(r.outcome is Outcome.OPERATOR for r in results)


@pytest.mark.parametrize("style", STYLES)
async def test_token_is_sent_and_never_leaks(
    make_fake: MakeFake, style: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pipeline.upstream")
    fake = await make_fake(require_token=TOKEN, error_5xx_rate=1.0, fail_attempts=1)
    base = fake.base_url or ""
    results: list[FetchResult] = []
    async with client_for(base, style, token=TOKEN) as client:
        results.append(await client.fetch(short(fake, IDS[22])))
        assert TOKEN not in repr(client)
    assert results[0].outcome is Outcome.OK
    async with client_for(base, style, token="wrong-" + TOKEN) as client:
        results.append(await client.fetch(canonical_link(IDS[23])))
        results.append(await client.fetch(canonical_link(IDS[24])))
    async with client_for(base, style, token=None) as client:
        results.append(await client.fetch(canonical_link(IDS[25])))
    assert [r.outcome for r in results[1:]] == [Outcome.OPERATOR] * 3
    assert results[1].reason == "upstream rejected the API token (HTTP 401)"
    assert results[2].attempts == 0
    everything = caplog.text + "".join(repr(r) + r.reason for r in results)
    assert TOKEN not in everything
    assert "Bearer" not in everything
    assert "upstream attempt" in caplog.text  # DEBUG lines were written and checked


# -- tiny ad-hoc servers: body cap, redirect rules -----------------------------------------------


class Tiny:
    """A small app whose routes exercise what the fake does not."""

    def __init__(self) -> None:
        self.sent = 0
        self.auth: list[str | None] = []
        self.paths: list[str] = []
        self.app = web.Application()
        self.app.router.add_get("/douyin/fetch_one_work", self.huge)
        self.app.router.add_get("/api/douyin/fetch_one_work", self.declared_huge)
        self.app.router.add_route("*", "/{code}/", self.short)

    async def huge(self, request: web.Request) -> web.StreamResponse:
        """50 MB of JSON-ish bytes, chunked, no Content-Length: only a streaming cap stops it."""
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        chunk = b" " * (1024 * 1024)
        try:
            for _ in range(50):
                await resp.write(chunk)
                self.sent += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async def declared_huge(self, request: web.Request) -> web.StreamResponse:
        self.auth.append(request.headers.get("Authorization"))
        if request.query.get("aweme_id") == "7071967230287744267":
            return web.Response(body=(ENVELOPES / "ok_video.http200.json").read_bytes())
        resp = web.StreamResponse(headers={"Content-Length": str(50 * 1024 * 1024)})
        await resp.prepare(request)
        await resp.write(b"{")
        await asyncio.sleep(5)  # the client must not wait for the rest
        return resp

    async def short(self, request: web.Request) -> web.StreamResponse:
        code = request.match_info["code"]
        self.auth.append(request.headers.get("Authorization"))
        self.paths.append(f"{request.method} {code}")
        video = "https://www.iesdouyin.com/share/video/7071967230287744267/?mid=7049808807056149285"
        if code == "nohead" and request.method == "HEAD":
            raise web.HTTPMethodNotAllowed("HEAD", ["GET"])
        targets = {
            "nohead": video,
            "hop": "/nohead/",  # relative Location, resolved against v.douyin.com
            # `mid=` is the music id: not a work, so the walk goes on (to a page with no work).
            "musiconly": "https://v.douyin.com/landing/?mid=7049808807056149285",
            "evil": "https://evil.example.com/video/7071967230287744267",
            "loop": "https://v.douyin.com/loop/",
        }
        if code not in targets:
            return web.Response(text="a landing page without a redirect")
        raise web.HTTPFound(targets[code])


@pytest.fixture
async def tiny() -> AsyncIterator[tuple[Tiny, str]]:
    server = Tiny()
    async with serving(server.app) as base:
        yield server, base


async def test_huge_streamed_body_is_capped(tiny: tuple[Tiny, str]) -> None:
    server, base = tiny
    async with client_for(base, "seed", retries=3) as client:
        result = await client.fetch(canonical_link(IDS[26]))
    assert result.outcome is Outcome.UNUSABLE  # permanent: the same body is as large again
    assert result.reason == "upstream body larger than 20 MiB"
    assert result.attempts == 1
    await asyncio.sleep(0.1)
    assert server.sent < 45 * 1024 * 1024  # the client stopped reading; the rest never went out


async def test_declared_huge_body_is_rejected_without_reading(tiny: tuple[Tiny, str]) -> None:
    _, base = tiny
    async with client_for(base, "amagi", max_body_bytes=1024 * 1024) as client:
        started = time.monotonic()
        result = await client.fetch(canonical_link(IDS[27]))
    assert result.outcome is Outcome.UNUSABLE
    assert result.reason == "upstream body larger than 1 MiB"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    ("code", "outcome", "reason", "paths"),
    [
        ("nohead", Outcome.OK, "", ["HEAD nohead", "GET nohead"]),
        ("hop", Outcome.OK, "", ["HEAD hop", "HEAD nohead", "GET nohead"]),
        (
            "musiconly",
            Outcome.INVALID,
            "short link did not resolve to a work",
            ["HEAD musiconly", "HEAD landing", "GET landing"],
        ),
        ("evil", Outcome.INVALID, "redirect to non-Douyin host", ["HEAD evil"]),
        ("loop", Outcome.INVALID, "more than 5 redirects", ["HEAD loop"] * 5),
        ("landing", Outcome.INVALID, "short link did not resolve to a work", None),
    ],
)
async def test_resolution_rules(
    tiny: tuple[Tiny, str], code: str, outcome: Outcome, reason: str, paths: list[str] | None
) -> None:
    server, base = tiny
    async with client_for(base, "amagi", token=TOKEN) as client:
        result = await client.fetch(ShareLink(f"https://v.douyin.com/{code}/", None, True))
    assert result.outcome is outcome, result.reason
    assert reason in result.reason
    if paths is not None:
        assert server.paths == paths
    if outcome is Outcome.OK:
        assert result.aweme_id == 7071967230287744267  # from the path, never `mid=`
        assert server.auth[-1] == f"Bearer {TOKEN}"  # the API request carries the token
    hops = server.auth[:-1] if outcome is Outcome.OK else server.auth
    assert hops
    assert all(a is None for a in hops)  # ... and no request to a Douyin host ever does


async def test_connection_refused_is_transient() -> None:
    async with client_for("http://127.0.0.1:9", "seed", retries=1) as client:
        result = await client.fetch(canonical_link(IDS[28]))
    assert result.outcome is Outcome.TRANSIENT
    assert result.reason.startswith("connection error (")
    assert result.attempts == 2
    assert result.http_status is None


# -- end to end: the limiter keeps a strict upstream happy ----------------------------------------


async def test_no_429_at_the_upstream_limit(make_fake: MakeFake) -> None:
    rate = 5
    fake = await make_fake(rate_limit=rate)
    links = [canonical_link(i) for i in IDS[:20]]
    async with client_for(fake.base_url or "", "seed", rate=rate, concurrency=8) as client:
        results = await asyncio.gather(*(client.fetch(link) for link in links))
    assert [r.outcome for r in results] == [Outcome.OK] * len(links)
    assert [r.status for r in fake.served].count(429) == 0
    assert fake.max_requests_in_window(1.0) <= rate
    times = sorted(r.t for r in fake.served)
    # Starts come in bursts of `rate`: measure from the first burst to the last one.
    achieved = (len(times) - rate) / (times[-1] - times[0])
    assert achieved >= 0.9 * rate
