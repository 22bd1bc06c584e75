"""Hostile answers for the fake upstream: what a broken or malicious parsing service can send.

`FaultConfig.hostile` maps work ids to a `Hostile` kind, so one run mixes good and bad links.
The spoiled documents are built in `pipeline.testing.hostile_bodies`; this module adds the ways
of sending them (sizes, gzip, a drip, redirects) and maps each kind to its answer.

API-route kinds answer `GET /douyin/fetch_one_work` and `GET /api/douyin/fetch_one_work`;
`SHORT_LINK_*` kinds answer the short-link route instead (they matter where the client resolves
short links itself: the amagi style).
"""

from __future__ import annotations

import asyncio
import contextlib
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from functools import cache

from aiohttp import web

from pipeline.testing import hostile_bodies as bodies
from pipeline.testing.hostile_bodies import (
    LONG_INT_DIGITS,
    MODERATE_NESTING_DEPTH,
    NESTING_DEPTH,
    Context,
    other_work_id,
)

HUGE_BODY_BYTES = 50 * 1024 * 1024
GZIP_BOMB_BYTES = 512 * 1024 * 1024  # decompressed; about 0.5 MB on the wire
DRIP_INTERVAL_S = 0.2  # one byte per interval: a 10 KB body would take half an hour
DRIP_MAX_S = 120.0  # a dripping answer never outlives a test by more than this
# Where off-host redirects point when no listener was given: the discard port, never answered.
DEFAULT_REDIRECT_TARGET = "http://127.0.0.1:9"
_CHUNK = 256 * 1024

__all__ = [
    "DEFAULT_REDIRECT_TARGET",
    "GZIP_BOMB_BYTES",
    "HUGE_BODY_BYTES",
    "LONG_INT_DIGITS",
    "MODERATE_NESTING_DEPTH",
    "NESTING_DEPTH",
    "Context",
    "Hostile",
    "HostileAnswer",
    "Responder",
    "answer",
    "other_work_id",
]


class Hostile(StrEnum):
    """One way an answer can be hostile. Values are what `ServedRequest.outcome` records."""

    NAN = "nan"  # statistics.digg_count: NaN (not JSON, accepted by Python's json)
    INFINITY = "infinity"  # duration: Infinity
    HUGE_FLOAT = "huge_float"  # statistics.share_count: 1e400 (a float overflow)
    DEEP_NESTING = "deep_nesting"  # video_tag nested NESTING_DEPTH levels
    MODERATE_NESTING = "moderate_nesting"  # video_tag nested MODERATE_NESTING_DEPTH levels
    HUGE_BODY = "huge_body"  # HUGE_BODY_BYTES, Content-Length declared
    HUGE_BODY_CHUNKED = "huge_body_chunked"  # the same size, chunked: no length up front
    GZIP_BOMB = "gzip_bomb"  # Content-Encoding: gzip, GZIP_BOMB_BYTES once decompressed
    SLOW_DRIP = "slow_drip"  # a valid body, one byte every DRIP_INTERVAL_S
    UNDECODABLE = "undecodable"  # the body in GBK, not UTF-8
    LONG_INT = "long_int"  # statistics.digg_count with LONG_INT_DIGITS digits
    DETAIL_LIST = "detail_list"  # aweme_detail: [ {...} ]
    DETAIL_STRING = "detail_string"  # aweme_detail: "{...}" (the object, serialised again)
    WRONG_PART_TYPES = "wrong_part_types"  # statistics a string, author a number, music a list...
    DEGRADED = "degraded"  # author and music null, desc and text_extra missing
    HUGE_INTS = "huge_ints"  # counts and duration far beyond BIGINT (valid JSON)
    NEGATIVE_INTS = "negative_ints"  # negative counts, duration, dimensions
    NUL_CHARS = "nul_chars"  # U+0000 inside desc, nickname, hashtag, music title
    LONE_SURROGATES = "lone_surrogates"  # "\\ud83d" escapes with no partner in the same places
    CONTROL_CHARS = "control_chars"  # ESC and other C0 controls in hashtag names and desc
    OTHER_WORK = "other_work"  # a valid payload, but of another work (`other_work_id`)
    GONE_OTHER_WORK = "gone_other_work"  # seed: deleted-work answer naming `other_work_id`
    REDIRECT_OTHER_WORK = "redirect_other_work"  # 302 to this service, asking for another work
    REDIRECT_OFF_HOST = "redirect_off_host"  # 302 to the listener on another 127.0.0.1 port
    REDIRECT_FILE = "redirect_file"  # 302 to file:///etc/passwd
    SHORT_LINK_OFF_HOST = "short_link_off_host"  # the short link 302s to the listener
    SHORT_LINK_DOT_SEGMENTS = "short_link_dot_segments"  # Location /%2e%2e/escaped/ on v.douyin

    @property
    def on_short_link(self) -> bool:
        """True for kinds answered by the short-link route rather than the API routes."""
        return self.value.startswith("short_link_")


Responder = Callable[[web.Request, asyncio.Event], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class HostileAnswer:
    """What the fake sends: `respond(request, closing)` writes the whole answer."""

    status: int
    respond: Responder


def answer(kind: Hostile, ctx: Context) -> HostileAnswer:
    """The hostile answer of `kind` to the request described by `ctx`."""
    build = _BUILDERS[kind]
    return build(ctx)


# -- ways of sending -----------------------------------------------------------------------


def _static(
    status: int,
    body: bytes = b"",
    *,
    content_type: str = "application/json; charset=utf-8",
    headers: dict[str, str] | None = None,
) -> HostileAnswer:
    async def respond(request: web.Request, closing: asyncio.Event) -> web.StreamResponse:
        all_headers = {"Content-Type": content_type, **(headers or {})}
        return web.Response(status=status, body=body, headers=all_headers)

    return HostileAnswer(status, respond)


def _body(build: Callable[[Context], bytes]) -> Callable[[Context], HostileAnswer]:
    return lambda ctx: _static(200, build(ctx))


def _streamed(
    parts: Callable[[], Iterator[bytes]], length: int | None, interval_s: float = 0.0
) -> HostileAnswer:
    """A 200 written piece by piece; stops quietly when the client goes away or the fake closes."""

    async def respond(request: web.Request, closing: asyncio.Event) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.charset = "utf-8"
        if length is not None:
            response.content_length = length
        else:
            response.enable_chunked_encoding()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRIP_MAX_S
        with contextlib.suppress(ConnectionError):  # the client gave up: that is the point
            await response.prepare(request)
            for part in parts():
                if closing.is_set() or loop.time() > deadline:
                    break
                await response.write(part)
                if interval_s:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(closing.wait(), interval_s)
            else:
                await response.write_eof()
        return response

    return HostileAnswer(200, respond)


@cache
def _padding_block() -> bytes:
    """One chunk of padding, "啊" (3 bytes in UTF-8) repeated: the huge body's desc is streamed
    as this block over and over. A padding the size of the whole body, cached per size, kept a
    50 MB string alive for every distinct work asked (5.7 GB in the 1,000-link run)."""
    return "啊".encode() * (_CHUNK // 3)


def _padding_length(size: int) -> int:
    return size // 3 * 3  # whole characters only


def _huge_body(ctx: Context, *, declared: bool) -> HostileAnswer:
    prefix, suffix = bodies.huge_parts(ctx)
    pad_length = _padding_length(HUGE_BODY_BYTES - len(prefix) - len(suffix))

    def parts() -> Iterator[bytes]:
        yield prefix
        block = _padding_block()
        whole, rest = divmod(pad_length, len(block))
        for _ in range(whole):
            yield block
        yield block[:rest]
        yield suffix

    length = len(prefix) + pad_length + len(suffix)
    return _streamed(parts, length if declared else None)


@cache
def _gzip_bomb() -> bytes:
    """A seed-shaped document whose `message` is GZIP_BOMB_BYTES of spaces, gzip-compressed."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # gzip container
    out = [packer.compress(b'{"code":0,"message":"')]
    block = b" " * (1 << 20)
    for _ in range(GZIP_BOMB_BYTES // len(block)):
        out.append(packer.compress(block))
    out += [packer.compress(b'","data":null}'), packer.flush()]
    return b"".join(out)


def _gzip(ctx: Context) -> HostileAnswer:
    return _static(200, _gzip_bomb(), headers={"Content-Encoding": "gzip"})


def _slow_drip(ctx: Context) -> HostileAnswer:
    body = bodies.ok(ctx, bodies.data(ctx))

    def parts() -> Iterator[bytes]:
        for i in range(len(body)):
            yield body[i : i + 1]

    return _streamed(parts, len(body), DRIP_INTERVAL_S)


def _undecodable(ctx: Context) -> HostileAnswer:
    return _static(200, bodies.gbk(ctx), content_type="application/json; charset=gbk")


def _redirect(location: str) -> HostileAnswer:
    return _static(302, b"", content_type="text/plain", headers={"Location": location})


def _api_path(ctx: Context, aweme_id: int) -> str:
    if ctx.style == "amagi":
        return f"/api/douyin/fetch_one_work?aweme_id={aweme_id}"
    return f"/douyin/fetch_one_work?url=https://www.douyin.com/video/{aweme_id}"


def _target(ctx: Context) -> str:
    return (ctx.redirect_target or DEFAULT_REDIRECT_TARGET).rstrip("/")


_BUILDERS: dict[Hostile, Callable[[Context], HostileAnswer]] = {
    Hostile.NAN: _body(bodies.nan),
    Hostile.INFINITY: _body(bodies.infinity),
    Hostile.HUGE_FLOAT: _body(bodies.huge_float),
    Hostile.DEEP_NESTING: _body(lambda ctx: bodies.nesting(ctx, NESTING_DEPTH)),
    Hostile.MODERATE_NESTING: _body(lambda ctx: bodies.nesting(ctx, MODERATE_NESTING_DEPTH)),
    Hostile.HUGE_BODY: lambda ctx: _huge_body(ctx, declared=True),
    Hostile.HUGE_BODY_CHUNKED: lambda ctx: _huge_body(ctx, declared=False),
    Hostile.GZIP_BOMB: _gzip,
    Hostile.SLOW_DRIP: _slow_drip,
    Hostile.UNDECODABLE: _undecodable,
    Hostile.LONG_INT: _body(bodies.long_int),
    Hostile.DETAIL_LIST: _body(bodies.detail_list),
    Hostile.DETAIL_STRING: _body(bodies.detail_string),
    Hostile.WRONG_PART_TYPES: _body(bodies.wrong_part_types),
    Hostile.DEGRADED: _body(bodies.degraded),
    Hostile.HUGE_INTS: _body(bodies.huge_ints),
    Hostile.NEGATIVE_INTS: _body(bodies.negative_ints),
    Hostile.NUL_CHARS: _body(lambda ctx: bodies.texts_with(ctx, "\x00")),
    Hostile.LONE_SURROGATES: _body(bodies.lone_surrogates),
    Hostile.CONTROL_CHARS: _body(lambda ctx: bodies.texts_with(ctx, "\x1b[31m\x07")),
    Hostile.OTHER_WORK: _body(bodies.other_work),
    Hostile.GONE_OTHER_WORK: _body(bodies.gone_other_work),
    Hostile.REDIRECT_OTHER_WORK: lambda ctx: _redirect(
        _api_path(ctx, other_work_id(ctx.aweme_id, seed=ctx.seed))
    ),
    # The same request, at another service: it would answer with a perfectly good work.
    Hostile.REDIRECT_OFF_HOST: lambda ctx: _redirect(_target(ctx) + ctx.path),
    Hostile.REDIRECT_FILE: lambda ctx: _redirect("file:///etc/passwd"),
    Hostile.SHORT_LINK_OFF_HOST: lambda ctx: _redirect(
        f"{_target(ctx)}/share/video/{ctx.aweme_id}/"
    ),
    # Rebased onto a --resolve-base with a path prefix, `..` would climb out of the prefix.
    Hostile.SHORT_LINK_DOT_SEGMENTS: lambda ctx: _redirect("https://v.douyin.com/%2e%2e/escaped/"),
}
