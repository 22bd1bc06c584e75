"""No request leaves the configured hosts: the parsing service's redirects are never followed,
and the short-link resolver only requests the short-link host (or --resolve-base, under its
path prefix). A bare TCP listener on another 127.0.0.1 port proves nothing reached it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from aiohttp import web

from helpers import serving
from pipeline.inputs import ShareLink, canonical_link
from pipeline.upstream.client import UpstreamClient
from pipeline.upstream.outcomes import Outcome
from pipeline.upstream.resolve import normal_path, request_url, resolve_short_link

ENVELOPES = Path(__file__).resolve().parent / "fixtures" / "upstream" / "amagi_5.8.0_http_envelopes"
VIDEO_ID = 7071967230287744267
TOKEN = "tok-redirect-secret-42"


class Listener:
    """A TCP server that only counts connections: anything reaching it is a leak."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            writer.close()

        self._server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


class Service:
    """The parsing service (both styles) and, under /short, a stand-in for v.douyin.com."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.seen: list[tuple[str, str, str | None]] = []  # (method, path_qs, Authorization)
        self.api_redirect: str | None = None
        self.app = web.Application()
        self.app.router.add_get("/douyin/fetch_one_work", self.api)
        self.app.router.add_get("/api/douyin/fetch_one_work", self.api)
        self.app.router.add_route("*", "/{tail:.*}", self.anything)

    async def api(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs, request.headers.get("Authorization")))
        if self.api_redirect is not None:
            raise web.HTTPFound(self.api_redirect)
        return web.Response(body=(ENVELOPES / "ok_video.http200.json").read_bytes())

    async def anything(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.path_qs, request.headers.get("Authorization")))
        leak = f"http://127.0.0.1:{self.listener.port}"
        targets = {
            # Off-host, even though the URL names a work: never requested, never trusted.
            "/short/offhost/": f"{leak}/share/video/{VIDEO_ID}/",
            "/short/offhost-noid/": f"{leak}/landing/",
            # Douyin's short-link host, but another port (the listener's).
            "/short/port/": f"https://v.douyin.com:{self.listener.port}/next/",
            # Another Douyin host without an id: only read, never requested.
            "/short/www/": "https://www.douyin.com/landing/",
            # Climbs out of /short with encoded dots, or hides a separator.
            "/short/dots/": "/%2e%2e/%2E%2E/admin/",
            "/short/slash/": "/x%2f..%2f..%2fadmin/",
            # Scheme-relative: another host.
            "/short/schemerel/": f"//127.0.0.1:{self.listener.port}/x/",
            # Absolute Location into the resolve base: allowed, stays under the prefix.
            "/short/selfref/": f"http://{request.host}/short/final/",
            "/short/final/": f"https://www.iesdouyin.com/share/video/{VIDEO_ID}/?mid=1",
            # Absolute Location to the resolve base's host but outside its prefix.
            "/short/outside/": f"http://{request.host}/admin/",
            # Dot segments that stay inside the prefix are resolved, then requested.
            "/short/inside/": "/a/%2e%2e/final/",
        }
        if request.path in targets:
            # A raw header: aiohttp's HTTPFound would normalise `%2e%2e` away before sending.
            return web.Response(status=302, headers={"Location": targets[request.path]})
        return web.Response(text="no redirect here")


@pytest.fixture
async def world() -> AsyncIterator[tuple[Service, str, Listener]]:
    listener = Listener()
    await listener.start()
    service = Service(listener)
    try:
        async with serving(service.app) as base:
            yield service, base, listener
    finally:
        await listener.close()


def _client(base: str, style: str, **kw: object) -> UpstreamClient:
    options: dict[str, object] = {
        "token": TOKEN, "rate": 100.0, "concurrency": 2, "timeout_s": 2.0, "retries": 2,
        "resolve_base": base + "/short", "backoff_base_s": 0.01, "backoff_max_s": 0.02,
    }  # fmt: skip
    options.update(kw)
    return UpstreamClient(base, style, **options)  # type: ignore[arg-type]


# -- the parsing service ---------------------------------------------------------------------


@pytest.mark.parametrize("style", ["seed", "amagi"])
@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("{leak}/douyin/fetch_one_work?url=x", "to http://127.0.0.1:{port};"),
        ("http://user:pass@127.0.0.1:{port}/steal", "to http://127.0.0.1:{port};"),
        ("/api/douyin/fetch_one_work?aweme_id=1", "to a path on the same host;"),
        ("file:///etc/passwd", "to file:;"),
    ],
)
async def test_service_redirects_are_not_followed(
    world: tuple[Service, str, Listener], style: str, target: str, shown: str
) -> None:
    service, base, listener = world
    leak = f"http://127.0.0.1:{listener.port}"
    service.api_redirect = target.format(leak=leak, port=listener.port)
    async with _client(base, style) as client:
        result = await client.fetch(canonical_link(VIDEO_ID))
    assert result.outcome is Outcome.UNUSABLE
    assert result.attempts == 1  # permanent: not retried
    assert result.aweme_id == VIDEO_ID
    assert result.aweme_detail is None
    assert shown.format(port=listener.port) in result.reason
    assert "pass" not in result.reason
    assert "steal" not in result.reason
    assert "etc" not in result.reason
    assert len(service.seen) == 1  # the redirect target, even on the same host, was not asked
    assert service.seen[0][2] == f"Bearer {TOKEN}"
    await asyncio.sleep(0.05)
    assert listener.connections == 0


# -- the short-link resolver, end to end ------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("offhost", "redirect to non-Douyin host (http://127.0.0.1:"),
        ("offhost-noid", "redirect to non-Douyin host (http://127.0.0.1:"),
        ("schemerel", "redirect to non-Douyin host (https://127.0.0.1:"),
        ("outside", "redirect to non-Douyin host (http://127.0.0.1:"),
        ("port", "redirected to https://v.douyin.com:"),
        ("www", "redirected to https://www.douyin.com, not followed"),
        ("dots", "redirected to https://v.douyin.com, not followed"),
        ("slash", "redirected to https://v.douyin.com, not followed"),
    ],
)
async def test_resolver_never_leaves_the_resolve_base(
    world: tuple[Service, str, Listener], code: str, reason: str
) -> None:
    service, base, listener = world
    async with _client(base, "amagi") as client:
        result = await client.fetch(ShareLink(f"https://v.douyin.com/{code}/", None, True))
    assert result.outcome is Outcome.INVALID, result.reason
    assert reason in result.reason
    paths = [path for _, path, _ in service.seen]
    assert paths == [f"/short/{code}/"]  # one HEAD, then nothing anywhere
    assert all(auth is None for _, _, auth in service.seen)  # hops never carry the token
    await asyncio.sleep(0.05)
    assert listener.connections == 0


@pytest.mark.parametrize(
    ("code", "paths"),
    [
        ("selfref", ["/short/selfref/", "/short/final/"]),
        ("inside", ["/short/inside/", "/short/final/"]),
    ],
)
async def test_resolver_follows_redirects_inside_the_resolve_base(
    world: tuple[Service, str, Listener], code: str, paths: list[str]
) -> None:
    service, base, listener = world
    async with _client(base, "amagi") as client:
        result = await client.fetch(ShareLink(f"https://v.douyin.com/{code}/", None, True))
    assert result.outcome is Outcome.OK, result.reason
    assert result.aweme_id == VIDEO_ID
    hops = [path for method, path, _ in service.seen if method == "HEAD"]
    assert hops == paths
    assert listener.connections == 0


# -- the resolver's rules, with a recording hop (no network at all) --------------------------


class Hops:
    """A `Hop` answering from a table: URL -> Location (absent: 200, no redirect)."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self.table = table
        self.requested: list[str] = []

    async def __call__(self, method: str, url: str) -> tuple[int, Mapping[str, str]]:
        self.requested.append(url)
        if url in self.table:
            return 302, {"Location": self.table[url]}
        return 200, {}


@pytest.mark.parametrize("resolve_base", [None, "http://127.0.0.1:9/prefix"])
@pytest.mark.parametrize(
    "location",
    [
        "http://www.douyin.com:8080/landing/",  # another Douyin host and port
        "https://evil.douyin.com/x/",  # any *.douyin.com subdomain
        "https://v.douyin.com:8443/x/",  # the short-link host on another port
        "https://user:pw@v.douyin.com/x/",  # credentials
        "ftp://v.douyin.com/x/",
        "/%2e%2e/%2e%2e/x/",  # climbs above the root
        "/..%2Fadmin/",
        "/a\\..\\admin/",
    ],
)
async def test_resolver_refuses_hops_outside_the_allowed_hosts(
    resolve_base: str | None, location: str
) -> None:
    start = request_url("https://v.douyin.com/abc/", resolve_base)
    assert start is not None
    hops = Hops({start: location})
    result = await resolve_short_link("https://v.douyin.com/abc/", hops, resolve_base=resolve_base)
    assert result.outcome is Outcome.INVALID
    assert hops.requested == [start]  # the short link itself, and nothing after it


def test_normal_path() -> None:
    assert normal_path("/a/b/") == "/a/b/"
    assert normal_path("//a//b") == "/a/b"
    assert normal_path("/a/./b/../c/") == "/a/c/"
    assert normal_path("/a/%2e%2E/c") == "/c"
    assert normal_path("/..") is None
    assert normal_path("/a/%2e%2e/%2e%2e/c") is None
    assert normal_path("/a%2fb") is None
    assert normal_path("/a%5Cb") is None
    assert normal_path("/") == "/"


def test_request_url_keeps_the_prefix() -> None:
    base = "http://127.0.0.1:9/prefix/"
    assert request_url("https://v.douyin.com/a/../b/", base) == "http://127.0.0.1:9/prefix/b/"
    assert request_url("https://v.douyin.com/a/?x=1", base) == "http://127.0.0.1:9/prefix/a/?x=1"
    assert request_url("https://v.douyin.com/../b/", base) is None
    assert request_url("http://v.douyin.com:80/a/", None) == "https://v.douyin.com/a/"
    assert request_url("https://v.douyin.com:444/a/", None) is None
    assert request_url("https://www.iesdouyin.com/share/video/1/", base) is None
