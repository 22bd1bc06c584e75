"""A fake upstream on a real aiohttp server: both contracts of UPSTREAM.md §1 plus short links.

Routes (all answers are delayed by `faults.latency_s`):
- seed  `GET /douyin/fetch_one_work?url=<link>`: `{"code": 0, "message": "success", "data": ...}`.
  The link may sit inside share text. Missing/empty `url` → HTTP 400 `{"code": 400, ...,
  "data": null}`; a link with no work id (or an unknown short code) → HTTP 400, same body shape.
  Failures in-contract: `{"code": 503, "message": ..., "data": null}`; cookie expired uses the
  amagi wording `...接口返回内容为空，你的抖音ck可能已经失效！`.
- amagi `GET /api/douyin/fetch_one_work?aweme_id=<id>`: the amagi 5.8.0 envelopes byte-for-byte
  in shape (see fixtures/upstream/amagi_5.8.0_http_envelopes), int64s rounded like JavaScript.
  A non-numeric `aweme_id` gets the null-detail answer.
- short links `GET|HEAD /<code>/` (also under `/sl/<code>/`, for a `--resolve-base` with a path
  prefix) → 302 to the work's real-shaped `share_url`; unknown → 404.
- hostile answers (`faults.hostile`, see `pipeline.testing.hostile`): per work id, one run mixes
  good links and links whose answer is NaN, 10,000-deep, 50 MB, a gzip bomb, a slow drip,
  another work, a redirect off host, ...
- `/_fake/advance?seconds=N` (POST) and `/_fake/state` (GET): control for subprocess tests;
  never rate-limited, faulted or recorded.

Link parsing lives in `pipeline.testing.links`, the command line in
`pipeline.testing.fake_upstream_cli`.

Order of checks: rate limit (all recorded routes; only admitted requests count toward the limit,
like a real limiter) → bearer token (API routes only; a short link is a public Douyin host) →
parameters → cookie_expired → hostile answers → transient faults (API routes, the first
`fail_attempts` requests of each work) → gone / null detail / huge body → ok.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import html
import json
import math
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from pipeline.testing import hostile, payloads
from pipeline.testing.hostile import Hostile
from pipeline.testing.links import decode_short_code, short_code, work_id_from_link

SEED_PATH = "/douyin/fetch_one_work"
AMAGI_PATH = "/api/douyin/fetch_one_work"
FAILED = "抖音数据获取失败"
COOKIE_EXPIRED = "获取响应数据失败！接口返回内容为空，你的抖音ck可能已经失效！"
GONE = "获取响应数据失败！原因：status_self_see！"
# Trimmed from deleted.http200.json: a signed Douyin URL that clients must never log or store.
_REQUEST_URL = (
    "https://www.douyin.com/aweme/v1/web/aweme/detail/?device_platform=webapp&aid=6383"
    "&channel=channel_pc_web&pc_client_type=1&msToken=eGQl9mbAa6vfnG1sLQELJLgVBDZ1sSZo1up4J"
    "&aweme_id={id}&version_code=190500&version_name=19.5.0&a_bogus=d68wQmwvDkIPhDyk54VLfY3q6VH3Y"
)
_HTML_ERROR = (
    "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head><body>"
    "<center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
)
TRANSIENT_FAULTS = ("error_5xx", "timeout", "reset", "truncated", "non_json", "soft_failure")


@dataclass(frozen=True)
class FaultConfig:
    """What the fake does wrong, and how often. Fault choice is a hash of (seed, work, attempt)."""

    latency_s: float = 0.0
    rate_limit: float | None = None  # at most floor(rate_limit) (>= 1) admitted per trailing 1 s
    rate_limit_paths: str | None = None  # only paths with this prefix are limited; None = all
    retry_after_s: int = 1
    error_5xx_rate: float = 0.0
    timeout_rate: float = 0.0
    hang_s: float = 30.0
    reset_rate: float = 0.0
    truncated_rate: float = 0.0
    non_json_rate: float = 0.0
    soft_failure_rate: float = 0.0
    fail_attempts: int = 1
    gone_ids: frozenset[int] = frozenset()
    null_detail_ids: frozenset[int] = frozenset()
    cookie_expired: bool = False
    # The cookie expires after this many work requests got past the rate limit and token check
    # (then every answer is cookie_expired, as with `cookie_expired`): a cookie dying mid-run.
    cookie_expires_after: int | None = None
    require_token: str | None = field(default=None, repr=False)
    huge_body_ids: frozenset[int] = frozenset()  # answered ok, with `desc` padded to the size below
    huge_body_bytes: int = 8 * 1024 * 1024
    # Per work id: answer with this hostile kind (every attempt). Not hashed, only read.
    hostile: Mapping[int, Hostile] = field(default_factory=dict)
    # Base URL that off-host redirects point to: a listener that must never be reached.
    redirect_target: str | None = None

    def __post_init__(self) -> None:
        rates = [getattr(self, f"{name}_rate") for name in TRANSIENT_FAULTS]
        if any(r < 0 for r in rates) or sum(rates) > 1:
            raise ValueError("fault rates must be >= 0 and sum to at most 1")


@dataclass(frozen=True)
class ServedRequest:
    t: float  # request clock at arrival
    path: str
    aweme_id: int | None
    status: int  # 0 when the connection was reset without an answer
    outcome: str
    style: str  # "seed", "amagi" or "short_link"


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    outcome: str
    aweme_id: int | None = None
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    reset: bool = False
    respond: hostile.Responder | None = None  # writes the whole answer itself (hostile kinds)


def _json(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class FakeUpstream:
    """The fake service. `faults` may be swapped between test phases.

    `clock` stamps requests and drives the rate limit; simulated time (`sim_time`, default 0,
    moved only by `advance`) drives the counts served.

    `style` makes it one real service: only that contract's route (the other's answers
    Express's HTML 404, as real amagi does for the seed route), and short links on a port of
    their own (`short_link_base`, for `--resolve-base`). Without it, one port serves both
    contracts and the short links: a convenience for tests that exercise both.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        faults: FaultConfig = FaultConfig(),  # frozen, so sharing one default is safe
        clock: Callable[[], float] = time.monotonic,
        sim_time: float | None = None,
        author_pool: int = payloads.AUTHOR_POOL,
        style: Literal["seed", "amagi"] | None = None,
    ) -> None:
        self.seed = seed
        self.faults = faults
        self.sim_t = sim_time or 0.0
        self.author_pool = author_pool
        self.served: list[ServedRequest] = []
        self.base_url: str | None = None  # set by start()
        self._clock = clock
        self._admitted: deque[float] = deque()
        self._attempts: Counter[int] = Counter()
        self._work_requests = 0
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.style = style
        self.short_link_base: str | None = None  # set by start()
        self.app = web.Application(middlewares=[_like_express])
        if style in (None, "seed"):
            self.app.router.add_get(SEED_PATH, self._seed)
        if style in (None, "amagi"):
            self.app.router.add_get(AMAGI_PATH, self._amagi)
        self.app.router.add_post("/_fake/advance", self._advance)
        self.app.router.add_get("/_fake/state", self._state)
        # Short links are Douyin's (v.douyin.com), not the service's: a service of one style
        # serves them on a port of their own (`short_link_base`), like the real peers.
        self._short_app = self.app if style is None else web.Application()
        self._short_app.router.add_get("/{code}/", self._short_link)
        self._short_app.router.add_get("/sl/{code}/", self._short_link)
        self._short_runner: web.AppRunner | None = None

    # -- public helpers --------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        # Node closes idle kept-alive connections after 5 s (`Keep-Alive: timeout=5`).
        self._runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=0.5, keepalive_timeout=_KEEP_ALIVE_S
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        self.short_link_base = self.base_url
        if self._short_app is not self.app:
            self._short_runner = web.AppRunner(self._short_app, access_log=None)
            await self._short_runner.setup()
            await web.TCPSite(self._short_runner, host, 0).start()
            short_host, short_port = self._short_runner.addresses[0][:2]
            self.short_link_base = f"http://{short_host}:{short_port}"
        return self.base_url

    async def close(self) -> None:
        self._closing.set()  # ends hanging answers at once
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._short_runner is not None:
            await self._short_runner.cleanup()
            self._short_runner = None

    async def __aenter__(self) -> FakeUpstream:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:  # fmt: skip
        await self.close()

    def short_link(self, aweme_id: int) -> str:
        return f"https://v.douyin.com/{short_code(aweme_id, self.seed)}/"

    def advance(self, seconds: float) -> None:
        """Move simulated time (what counts depend on) forward; the request clock is untouched."""
        if seconds < 0:
            raise ValueError("simulated time only moves forward")
        self.sim_t += seconds

    def counts_at(self, aweme_id: int, sim_t: float) -> dict[str, int]:
        return payloads.counts_at(aweme_id, sim_t, seed=self.seed)

    def aweme_detail(self, aweme_id: int) -> dict[str, Any]:
        return payloads.make_aweme_detail(
            aweme_id, seed=self.seed, sim_t=self.sim_t, author_pool=self.author_pool
        )

    def max_requests_in_window(self, window_s: float = 1.0, *, paths: str | None = None) -> int:
        """The most recorded requests (429s included) that arrived within any `window_s` span."""
        times = sorted(r.t for r in self.served if paths is None or r.path.startswith(paths))
        best, lo = 0, 0
        for hi, t in enumerate(times):
            while t - times[lo] >= window_s:
                lo += 1
            best = max(best, hi - lo + 1)
        return best

    # -- request handling ------------------------------------------------------------------

    async def _seed(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, "seed")

    async def _amagi(self, request: web.Request) -> web.StreamResponse:
        return await self._api(request, "amagi")

    async def _api(self, request: web.Request, style: str) -> web.StreamResponse:
        arrived = self._clock()
        answer = self._rate_limited(request.path, arrived) or self._unauthorized(request)
        if answer is None:
            answer = self._fetch_seed(request) if style == "seed" else self._fetch_amagi(request)
        return await self._finish(request, style, arrived, answer)

    async def _short_link(self, request: web.Request) -> web.StreamResponse:
        arrived = self._clock()
        answer = self._rate_limited(request.path, arrived)
        if answer is None:
            aweme_id = decode_short_code(request.match_info["code"], self.seed)
            kind = self.faults.hostile.get(aweme_id) if aweme_id is not None else None
            if aweme_id is None:
                answer = _Answer(404, b"Not Found", "not_found", content_type="text/plain")
            elif kind is not None and kind.on_short_link:
                answer = self._hostile(kind, "short_link", aweme_id, request.raw_path)
            else:
                location = self.aweme_detail(aweme_id)["share_url"]
                answer = _Answer(302, b"", "redirect", aweme_id, headers={"Location": location})
        return await self._finish(request, "short_link", arrived, answer)

    def _rate_limited(self, path: str, now: float) -> _Answer | None:
        faults = self.faults
        if faults.rate_limit is None or not path.startswith(faults.rate_limit_paths or "/"):
            return None
        while self._admitted and now - self._admitted[0] >= 1.0:
            self._admitted.popleft()
        if len(self._admitted) >= max(1, math.floor(faults.rate_limit)):
            body = _json({"code": 429, "message": "Too Many Requests", "data": None})
            headers = {"Retry-After": str(faults.retry_after_s)}
            return _Answer(429, body, "rate_limited", headers=headers)
        self._admitted.append(now)
        return None

    def _unauthorized(self, request: web.Request) -> _Answer | None:
        expected = self.faults.require_token
        if expected is None:
            return None
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {expected}".encode()):
            return None
        body = _json({"code": 401, "message": "missing or invalid token", "data": None})
        return _Answer(401, body, "unauthorized")

    def _fetch_seed(self, request: web.Request) -> _Answer:
        link = request.query.get("url", "")
        if not link.strip():
            body = {"code": 400, "message": "参数验证失败：url 不能为空", "data": None}
            return _Answer(400, _json(body), "bad_request")
        aweme_id = work_id_from_link(link, self.seed)
        if aweme_id is None:
            body = {"code": 400, "message": "无法从链接中解析作品ID", "data": None}
            return _Answer(400, _json(body), "invalid_link")
        return self._content("seed", aweme_id, request.raw_path)

    def _fetch_amagi(self, request: web.Request) -> _Answer:
        values = request.query.getall("aweme_id", [])
        if len(values) != 1 or values[0] == "":
            message = "视频ID不能为空" if values == [""] else "视频ID必须是字符串"
            body = {
                "code": 400, "message": "参数验证失败", "data": None,
                "errors": [{"field": "aweme_id", "message": message}],
                "requestPath": request.raw_path,
            }  # fmt: skip
            return _Answer(400, _json(body), "bad_request")
        if not values[0].isdigit():
            # Real amagi passes it on to Douyin unchecked and answers its generic failure.
            body = {
                "success": False,
                "message": FAILED,
                "code": 500,
                "requestPath": request.raw_path,
            }
            return _Answer(200, _json(body), "failed", None)
        return self._content("amagi", int(values[0]), request.raw_path)

    def _content(self, style: str, aweme_id: int, path: str) -> _Answer:
        """Everything after parameter checks: operator failure, transient faults, the work."""
        self._work_requests += 1
        expires_after = self.faults.cookie_expires_after
        if self.faults.cookie_expired or (
            expires_after is not None and self._work_requests > expires_after
        ):
            return self._failure(style, aweme_id, path, "operator", COOKIE_EXPIRED)
        kind = self.faults.hostile.get(aweme_id)
        if kind is not None and not kind.on_short_link:
            return self._hostile(kind, style, aweme_id, path)
        attempt = self._attempts[aweme_id]
        self._attempts[aweme_id] += 1
        fault = self._fault(aweme_id, attempt)
        if fault == "error_5xx":
            status = (500, 502, 503)[payloads.hash64(self.seed, aweme_id, "5xx", attempt) % 3]
            html = status != 500  # 502/503 come from a proxy in front of the service
            body = _HTML_ERROR.replace("502 Bad Gateway", f"{status} {_REASONS[status]}")
            return _Answer(
                status, body.encode() if html else b"Internal Server Error", fault, aweme_id,
                content_type="text/html" if html else "text/plain",
            )  # fmt: skip
        if fault == "reset":
            return _Answer(0, b"", fault, aweme_id, reset=True)
        if fault == "non_json":
            return _Answer(200, _HTML_ERROR.encode(), fault, aweme_id, content_type="text/html")
        if fault == "soft_failure":
            return self._failure(style, aweme_id, path, fault, None)
        answer = self._work(style, aweme_id, path)
        if fault == "truncated":
            return _Answer(200, answer.body[: len(answer.body) // 2], fault, aweme_id)
        if fault == "timeout":
            return _Answer(answer.status, answer.body, fault, aweme_id, hang=True)
        return answer

    def _hostile(self, kind: Hostile, style: str, aweme_id: int, path: str) -> _Answer:
        ctx = hostile.Context(
            style="amagi" if style == "amagi" else "seed", aweme_id=aweme_id, seed=self.seed,
            sim_t=self.sim_t, author_pool=self.author_pool, path=path,
            redirect_target=self.faults.redirect_target,
        )  # fmt: skip
        made = hostile.answer(kind, ctx)
        return _Answer(made.status, b"", kind.value, aweme_id, respond=made.respond)

    def _fault(self, aweme_id: int, attempt: int) -> str | None:
        if attempt >= self.faults.fail_attempts:
            return None
        draw = payloads.hash64(self.seed, aweme_id, "fault", attempt) / 2**64
        for name in TRANSIENT_FAULTS:
            rate: float = getattr(self.faults, f"{name}_rate")
            if draw < rate:
                return name
            draw -= rate
        return None

    def _work(self, style: str, aweme_id: int, path: str) -> _Answer:
        if aweme_id in self.faults.gone_ids:
            if style == "amagi":
                return self._failure(style, aweme_id, path, "gone", GONE)
            data = payloads.make_deleted_data(aweme_id)
            body = _json({"code": 0, "message": "success", "data": data})
            return _Answer(200, body, "gone", aweme_id)
        if aweme_id in self.faults.null_detail_ids:
            return self._null_detail(style, aweme_id, path)
        data = payloads.make_detail_data(
            aweme_id, seed=self.seed, sim_t=self.sim_t, author_pool=self.author_pool
        )
        outcome = "ok"
        if aweme_id in self.faults.huge_body_ids:
            data["aweme_detail"]["desc"] += "啊" * (self.faults.huge_body_bytes // 3)
            outcome = "huge_body"
        if style == "amagi":
            envelope = {
                "success": True, "data": payloads.js_number_view(data), "message": "获取成功",
                "code": 200, "requestPath": path,
            }  # fmt: skip
            return _Answer(200, _json(envelope), outcome, aweme_id)
        body = _json({"code": 0, "message": "success", "data": data})
        return _Answer(200, body, outcome, aweme_id)

    def _null_detail(self, style: str, aweme_id: int | None, path: str) -> _Answer:
        data = {"status_code": 0, "aweme_detail": None}
        if style == "amagi":
            body = {"success": True, "data": data, "message": "获取成功", "code": 200}
            return _Answer(200, _json({**body, "requestPath": path}), "null_detail", aweme_id)
        body = {"code": 0, "message": "success", "data": data}
        return _Answer(200, _json(body), "null_detail", aweme_id)

    def _failure(
        self, style: str, aweme_id: int, path: str, outcome: str, description: str | None
    ) -> _Answer:
        """amagi's `success: false` envelope (with `error` when there is a description)."""
        if style == "seed":
            body: dict[str, Any] = {"code": 503, "message": description or FAILED, "data": None}
            return _Answer(200, _json(body), outcome, aweme_id)
        body = {"success": False}
        if description is not None:
            body["error"] = {
                "errorDescription": description, "requestType": "聚合解析",
                "requestUrl": _REQUEST_URL.format(id=aweme_id),
            }  # fmt: skip
        body.update(message=FAILED, code=500, requestPath=path)
        return _Answer(200, _json(body), outcome, aweme_id)

    async def _finish(
        self, request: web.Request, style: str, arrived: float, answer: _Answer
    ) -> web.StreamResponse:
        self.served.append(
            ServedRequest(arrived, request.path, answer.aweme_id, answer.status, answer.outcome,
                          style)
        )  # fmt: skip
        delay = self.faults.latency_s + (self.faults.hang_s if answer.hang else 0.0)
        if delay > 0:
            with contextlib.suppress(TimeoutError):  # woken early by close()
                await asyncio.wait_for(self._closing.wait(), delay)
        if answer.respond is not None:
            return await answer.respond(request, self._closing)
        if answer.reset:
            if request.transport is not None:
                request.transport.abort()  # no status line at all: the client sees a reset
            return web.Response(status=204)  # written to a closed transport: goes nowhere
        return web.Response(
            status=answer.status, body=answer.body, headers=answer.headers,
            content_type=answer.content_type, charset="utf-8",
        )  # fmt: skip

    # -- control routes (for subprocess tests) ---------------------------------------------

    async def _advance(self, request: web.Request) -> web.StreamResponse:
        self.advance(float(request.query.get("seconds", "0")))
        return web.json_response({"sim_t": self.sim_t})

    async def _state(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"sim_t": self.sim_t, "served": len(self.served)})


_REASONS = {500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}
_KEEP_ALIVE_S = 5
_EXPRESS_HEADERS = {
    "X-Powered-By": "Express",
    "Connection": "keep-alive",
    "Keep-Alive": f"timeout={_KEEP_ALIVE_S}",
}
_CANNOT_GET = (
    '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>Error</title>\n'
    "</head>\n<body>\n<pre>Cannot GET {path}</pre>\n</body>\n</html>\n"
)


@web.middleware
async def _like_express(request: web.Request, handler: Any) -> web.StreamResponse:
    """Answer as the real amagi (an Express app) does: its headers on every response, and
    Express's HTML 404 page for a path it has no route for."""
    try:
        response: web.StreamResponse = await handler(request)
    except web.HTTPNotFound:
        page = _CANNOT_GET.format(path=html.escape(request.path))
        response = web.Response(status=404, text=page, content_type="text/html")
    if not response.prepared:
        response.headers.update(_EXPRESS_HEADERS)
    return response


if __name__ == "__main__":
    from pipeline.testing.fake_upstream_cli import main

    main()
