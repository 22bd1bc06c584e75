"""A loopback stand-in for Douyin's web API, so the real amagi server can run without the internet.

amagi 5.8.0 asks Douyin one thing per work (seen by logging every request it makes here):
`GET https://www.douyin.com/aweme/v1/web/aweme/detail/?…&aweme_id=<id>&…&a_bogus=<signature>`,
with the configured cookie. `server.mjs` sends that request here instead, same path and query, and
names the host amagi meant in an `X-Douyin-Host` header. A request the stand-in has no answer for
(another path, a non-numeric `aweme_id`: what Douyin answers to that is not known) has its
connection dropped, so amagi sees a failed request, as when Douyin cannot be reached.

What a work's detail request gets:
- the captured real Douyin bodies in `tests/fixtures/upstream/` for their works (the album item
  wrapped as a detail body, as `SOURCES.md` there describes);
- for any other id, the raw Douyin body the bundled fake builds its answer from
  (`pipeline.testing.payloads`, same seed and simulated time), so one work can be fetched through
  the real amagi and through the fake and the loaded rows compared;
- or a scripted situation (`Douyin`), set per work with `script()`: one situation per request,
  the last one repeating.

Every request is recorded in `requests` (host, path, aweme_id, situation answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import defaultdict
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from aiohttp import web

from pipeline.testing import payloads

DETAIL_PATH = "/aweme/v1/web/aweme/detail/"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "upstream"

# The captured works (tests/fixtures/upstream/SOURCES.md).
REAL_VIDEO = 7071967230287744267
REAL_ALBUM = 7232626237586312485
REAL_DELETED = 7223326284024139065
VERIFY_PAGE = (
    '<!DOCTYPE html><html><head><meta charset="utf-8"><title>验证码中间页</title></head>'
    '<body><div id="captcha_container"></div></body></html>'
).encode()


class Douyin(StrEnum):
    """What Douyin does when asked for one work."""

    BODY = "body"  # the work's body: captured real one, or the fake's template for the id
    GONE = "gone"  # the real deleted-work body (filter_detail status_self_see) for the id
    EMPTY = "empty"  # HTTP 200, empty body: what Douyin sends when the cookie is not accepted
    STALL = "stall"  # no answer until well past amagi's own timeout
    # An HTML page instead of JSON, as when Douyin answers with a verification (captcha) page;
    # the page itself is made up (no real one is captured), amagi only sees that it is not JSON.
    VERIFY = "verify"


@dataclass(frozen=True)
class SeenRequest:
    host: str  # the Douyin host amagi meant
    path: str
    aweme_id: str | None
    answered: str  # a Douyin situation, or "dropped"


def _real_bodies() -> dict[int, bytes]:
    album_page = json.loads((FIXTURES / "album_postlist_7232626237586312485.json").read_bytes())
    item, log_pb = album_page["aweme_list"][0], album_page["log_pb"]
    album = {"aweme_detail": item, "log_pb": log_pb, "status_code": 0}
    return {
        REAL_VIDEO: (FIXTURES / "video_detail_7071967230287744267.json").read_bytes(),
        REAL_ALBUM: json.dumps(album, ensure_ascii=False).encode(),
        REAL_DELETED: (FIXTURES / "deleted_filter_detail_7223326284024139065.json").read_bytes(),
    }


class DouyinStandIn:
    """The stand-in's aiohttp app. `seed` and `sim_t` must match the fake it is compared with."""

    def __init__(self, *, seed: int = 0, sim_t: float = 0.0, stall_s: float = 15.0) -> None:
        self.seed, self.sim_t, self.stall_s = seed, sim_t, stall_s
        self.requests: list[SeenRequest] = []
        self.base_url: str | None = None
        self._real = _real_bodies()
        self._scripts: dict[int, list[Douyin]] = {}
        self._answered: defaultdict[int, int] = defaultdict(int)
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.app = web.Application()
        self.app.router.add_get("/{path:.*}", self._handle)

    def script(self, aweme_id: int, *situations: Douyin) -> None:
        """Answer the next requests for `aweme_id` with these situations, the last repeating."""
        self._scripts[aweme_id] = list(situations)
        self._answered[aweme_id] = 0

    def requests_for(self, aweme_id: int) -> list[SeenRequest]:
        return [r for r in self.requests if r.aweme_id == str(aweme_id)]

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def close(self) -> None:
        self._closing.set()  # ends stalls at once
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _situation(self, aweme_id: int) -> Douyin:
        script = self._scripts.get(aweme_id, [Douyin.BODY])
        n = self._answered[aweme_id]
        self._answered[aweme_id] += 1
        return script[min(n, len(script) - 1)]

    def _body(self, situation: Douyin, aweme_id: int) -> bytes:
        if situation is Douyin.EMPTY:
            return b""
        if situation is Douyin.VERIFY:
            return VERIFY_PAGE
        doc: dict[str, Any]
        if situation is Douyin.GONE:
            doc = payloads.make_deleted_data(aweme_id)
        elif aweme_id in self._real:
            return self._real[aweme_id]
        else:
            doc = payloads.make_detail_data(aweme_id, seed=self.seed, sim_t=self.sim_t)
        return json.dumps(doc, ensure_ascii=False).encode()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        host = request.headers.get("X-Douyin-Host", "")
        raw_id = request.query.get("aweme_id")
        if request.path != DETAIL_PATH or raw_id is None or not raw_id.isdigit():
            self.requests.append(SeenRequest(host, request.path, raw_id, "dropped"))
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=204)  # written to a closed transport: goes nowhere
        aweme_id = int(raw_id)
        situation = self._situation(aweme_id)
        self.requests.append(SeenRequest(host, request.path, raw_id, situation))
        if situation is Douyin.STALL:
            with contextlib.suppress(TimeoutError):  # woken early by close()
                await asyncio.wait_for(self._closing.wait(), self.stall_s)
        media_type = "text/html" if situation is Douyin.VERIFY else "application/json"
        return web.Response(
            body=self._body(situation, aweme_id), content_type=media_type, charset="utf-8"
        )
