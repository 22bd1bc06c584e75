"""The upstream client: one aiohttp session, one rate limiter, bounded concurrency, retries.

`await client.fetch(link)` never raises for upstream trouble: every way a request can end is a
`FetchResult` with an outcome class (UPSTREAM.md §1.3). Answers that concern the whole service
(`pipeline.upstream.signals`) act once: throttling is one shared, growing cool-down; an
operator problem (expired cookie, rejected token, captcha...) or the same failure for many
works in a row stops the client (`service_stop`, logged once): later calls return at once,
without a request, and the run stops.
The service's redirects are never followed, bodies are decoded strictly (`decode.py`), and an
answer about another work than the one asked for is UNUSABLE (docs/upstream.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import urlsplit

import aiohttp

from pipeline.config import Secret
from pipeline.inputs import ShareLink
from pipeline.rows import JsonText
from pipeline.upstream.contracts import AmagiContract, Contract, SeedContract
from pipeline.upstream.decode import too_large
from pipeline.upstream.outcomes import Cause, FetchResult, Outcome
from pipeline.upstream.pool import Limiter, ServiceStats
from pipeline.upstream.ratelimit import DEFAULT_RATE_MARGIN_S, Clock, RateLimiter, Sleep
from pipeline.upstream.resolve import SHORT_HOST, resolve_short_link
from pipeline.upstream.retry import RetryPolicy
from pipeline.upstream.signals import (
    OPERATOR_CAUSES,
    Failure,
    ServiceStop,
    ServiceWatch,
    operator_stop,
    redact_url,
)

log = logging.getLogger("pipeline.upstream")

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
_CHUNK = 64 * 1024
# Results a service stop cut short: the link is not recorded (another service or the next
# run fetches it).
_CUT_SHORT = frozenset({Outcome.TRANSIENT, Outcome.RATE_LIMITED, Outcome.OPERATOR})


@dataclass(frozen=True, slots=True)
class _Step:
    """One attempt's result (a detail request or one short-link resolution)."""

    outcome: Outcome
    reason: str = ""
    detail: dict[str, Any] | None = None
    aweme_id: int | None = None
    http_status: int | None = None
    retry_after: float | None = None
    started_at: float | None = None
    cause: Cause | None = None
    payload: JsonText | None = None  # with `detail`: the body's text, stored as received


class _Stopped(Exception):
    """Raised inside an attempt when the client stopped while the attempt waited for a turn."""


class UpstreamClient:
    """`async with UpstreamClient(...) as client: result = await client.fetch(link)`."""

    def __init__(
        self,
        api_base: str,
        style: Literal["seed", "amagi"],
        *,
        token: str | Secret | None,
        rate: float,
        concurrency: int,
        timeout_s: float,
        retries: int,
        resolve_base: str | None = None,
        max_retry_after_s: float = 60.0,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        rate_margin_s: float = DEFAULT_RATE_MARGIN_S,
        clock: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        limiter: Limiter | None = None,
        label: str | None = None,
        on_stop: Callable[[ServiceStop], None] | None = None,
    ) -> None:
        """`limiter` replaces the in-process one (a pool's shared limiter); `label` is how
        messages name the service (default: its redacted URL); `on_stop` is told of a stop
        instead of the "stopping the run" log line (a pool parks the service instead)."""
        if style not in ("seed", "amagi"):
            raise ValueError(f"unknown API style {style!r} (expected 'seed' or 'amagi')")
        if concurrency < 1 or timeout_s <= 0 or max_body_bytes < 1:
            raise ValueError("concurrency, timeout_s and max_body_bytes must be positive")
        if token is not None and urlsplit(api_base).username is not None:
            # aiohttp refuses both at request time; say so once, here (the CLI checks earlier).
            raise ValueError("api_base carries credentials and a token is set too: use one")
        self.api_base = api_base.rstrip("/")
        self.style = style
        self.contract: Contract = SeedContract() if style == "seed" else AmagiContract()
        self._token = Secret(token) if isinstance(token, str) else token
        self.resolve_base = resolve_base
        self.policy = RetryPolicy(retries, backoff_base_s, backoff_max_s, max_retry_after_s)
        self.limiter: Limiter = limiter or RateLimiter(
            rate, margin_s=rate_margin_s, clock=clock, sleep=sleep
        )
        self.concurrency = concurrency
        self.max_body_bytes = max_body_bytes
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._timeout_s = timeout_s
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._slots = asyncio.Semaphore(concurrency)
        self._session: aiohttp.ClientSession | None = None
        self.service = label or redact_url(self.api_base)
        self.short_link_host = (
            f"{redact_url(resolve_base)} (--resolve-base)"
            if resolve_base
            else f"https://{SHORT_HOST}"
        )
        self.watch = ServiceWatch(self.service, self.short_link_host, retries=retries > 0)
        self.service_stop: ServiceStop | None = None
        self.last_stop: ServiceStop | None = None  # kept across `resume`
        self._on_stop = on_stop
        self._retries = retries
        self._stopped = asyncio.Event()
        self._warned_no_answer = False
        self.stats = ServiceStats()

    def __repr__(self) -> str:
        return (
            f"UpstreamClient({self.api_base!r}, {self.style!r}, "
            f"token_set={self._token is not None})"
        )

    async def __aenter__(self) -> Self:
        connector = aiohttp.TCPConnector(limit=self.concurrency)
        session = aiohttp.ClientSession(connector=connector, timeout=self._timeout)
        if hasattr(session, "_retry_connection"):
            # aiohttp (>= 3.9) silently re-sends an idempotent request once after a disconnect:
            # that request would bypass the rate limiter and the retry budget. aiohttp's own
            # TestClient switches it off the same way; there is no public option.
            session._retry_connection = False
        self._session = session
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def stopped(self) -> bool:
        return self.service_stop is not None

    @property
    def operator_error(self) -> str | None:
        """The answer that stopped the client, when someone must act on it (exit 77)."""
        stop = self.service_stop
        return stop.short if stop is not None and stop.needs_operator else None

    def _stop(self, stop: ServiceStop) -> None:
        """Stop every fetch, once: the first stop wins and is the one line logged."""
        if self.service_stop is None:
            self.service_stop = self.last_stop = stop
            self._stopped.set()
            if self._on_stop is not None:
                self._on_stop(stop)
            else:
                log.error("stopping the run: %s", stop.message)

    def resume(self) -> None:
        """Take requests again after a stop (a parked service's probe), with fresh streaks.
        The limiter keeps its lowered rate and pause: the service earned them."""
        self.service_stop = None
        self._stopped = asyncio.Event()
        self.watch = ServiceWatch(self.service, self.short_link_host, retries=self._retries > 0)

    async def fetch(self, link: ShareLink, *, max_attempts: int | None = None) -> FetchResult:
        """Fetch one work's detail (`_fetch_one`), and say whether a stop cut it short
        (`FetchResult.cut_short`: the service was stopped when it ended, and the result is
        no answer of its own about the work). `max_attempts` lowers the retry budget (1: a
        parked service's probe)."""
        result = await self._fetch_one(link, max_attempts)
        if self.service_stop is not None and result.outcome in _CUT_SHORT:
            return dataclasses.replace(result, cut_short=True)
        return result

    async def _fetch_one(self, link: ShareLink, max_attempts: int | None) -> FetchResult:
        """One work's detail, resolving a short link first when the style needs an id.

        The answer must be about the work asked for: the link's id, or the id its short link
        resolved to. Only a seed-style short link, which the service resolves itself, takes
        the id from an OK answer. A gone answer never names the work: for a seed short link it
        marks no work at all (the answer's id alone is not trusted to say which work is gone).
        """
        if self.service_stop is not None:
            return self._stopped_result(link.aweme_id, 0)
        asked, attempts = link.aweme_id, 0
        if self.contract.needs_aweme_id and asked is None:
            step, attempts = await self._with_retries(
                lambda: self._resolve_once(link), link.key, max_attempts, resolving=True
            )
            if step.outcome is not Outcome.OK:
                return self._result(step, None, attempts)
            asked = step.aweme_id
        known = asked
        step, more = await self._with_retries(
            lambda: self._fetch_once(link, known), link.key, max_attempts
        )
        return self._result(_same_work(step, asked), asked, attempts + more)

    # -- retries ------------------------------------------------------------------------------

    async def _with_retries(
        self,
        attempt: Callable[[], Awaitable[_Step]],
        work: str,
        max_attempts: int | None = None,
        *,
        resolving: bool = False,
    ) -> tuple[_Step, int]:
        """Run `attempt` until it ends in a final outcome or the retry budget is spent."""
        budget = min(self.policy.max_attempts, max_attempts or self.policy.max_attempts)
        tries = 0
        while True:
            if self.service_stop is not None:
                return self._stopped_step(), tries
            tries += 1
            try:
                step = await attempt()
            except _Stopped:  # stopped while waiting for a turn: no request was sent
                return self._stopped_step(), tries - 1
            log.debug(
                "upstream attempt %d/%d (%s): %s, HTTP %s%s",
                tries,
                budget,
                self.style,
                step.outcome.value,
                step.http_status,
                f" - {step.reason}" if step.reason else "",
            )
            if step.outcome is Outcome.OK:
                self.limiter.success()
            self._watch(step, work, resolving)
            if self.service_stop is not None and step.outcome.retryable:
                # This answer stopped the run (or came in after the stop): the link is left
                # pending for the next run, not spent here.
                return self._stopped_step(), tries
            if not step.outcome.retryable or tries >= budget:
                if step.outcome.retryable and tries > 1:
                    step = _replace_reason(step, f"{step.reason}; gave up after {tries} attempts")
                return step, tries
            if step.outcome is Outcome.TRANSIENT:
                delay = self.policy.backoff(tries, self._rng)
                if step.retry_after is not None:
                    delay = max(delay, self.policy.cap_retry_after(step.retry_after))
                await self._sleep(delay)
            # After a 429 the wait is the limiter's shared pause, taken at the next acquire.

    def _watch(self, step: _Step, work: str, resolving: bool) -> None:
        """What this answer says about the whole service (`pipeline.upstream.signals`)."""
        if step.outcome in (Outcome.OK, Outcome.GONE, Outcome.INVALID):
            if not resolving:  # a short link resolving says nothing about the service
                self.watch.success()
        elif step.outcome is Outcome.OPERATOR:
            # Every operator answer carries its cause (contracts.py); HTTP 401/403 is the
            # one operator answer the client knew before causes, hence the fallback.
            known = step.cause is not None and step.cause in OPERATOR_CAUSES
            cause = step.cause if known and step.cause is not None else Cause.TOKEN_REJECTED
            self._stop(operator_stop(cause, step.reason, self.service))
        elif step.outcome is Outcome.RATE_LIMITED:
            self._on_rate_limited(step, resolving)
        elif step.outcome is Outcome.TRANSIENT:
            kind = _failure_kind(step, resolving)
            if kind in (Failure.NO_ANSWER, Failure.SHORT_LINK) and not self._warned_no_answer:
                # Said once, before any stop: a run too short for a streak would otherwise
                # end without naming the URL it could not reach.
                self._warned_no_answer = True
                where = (
                    self.short_link_host if resolving else f"the upstream service at {self.service}"
                )
                log.warning("no answer from %s: %s; retrying", where, step.reason)
            if stop := self.watch.failed(work, kind, step.reason):
                self._stop(stop)

    def _on_rate_limited(self, step: _Step, resolving: bool) -> None:
        """One shared cool-down for every worker. Answers to requests that started before
        the last cool-down began are the same congestion: they may lengthen the pause (their
        Retry-After) but do not count again."""
        self.stats.rate_limited += 1
        fresh = self.limiter.slow_down(step.started_at)
        if fresh:
            where = self.short_link_host if resolving else f"the upstream service at {self.service}"
            if stop := self.watch.throttled(where):
                self._stop(stop)
                return
        streak = max(1, self.watch.throttle_streak)
        pause = min(self.policy.backoff_max_s, self.policy.backoff_base_s * 2**streak)
        if step.retry_after is not None:
            pause = max(pause, self.policy.cap_retry_after(step.retry_after))
        self.limiter.pause(pause)
        if fresh:
            log.warning(
                "%s (HTTP %s): all requests cool down %.1fs (%d in a row), rate now %.2f/s",
                step.reason,
                step.http_status,
                pause,
                streak,
                self.limiter.rate,
            )

    # -- one attempt --------------------------------------------------------------------------

    async def _fetch_once(self, link: ShareLink, aweme_id: int | None) -> _Step:
        path, params = self.contract.build_request(link, aweme_id)
        headers = {"Accept": "application/json"}
        if self._token is not None:
            headers["Authorization"] = f"Bearer {self._token.reveal()}"
        try:
            async with self._slots:
                started = await self._turn()
                # No redirect is followed: the token goes to --api-base and nowhere else.
                async with self._http().get(
                    self.api_base + path, params=params, headers=headers, allow_redirects=False
                ) as resp:
                    body = await self._read_capped(resp)
                    status, resp_headers = resp.status, resp.headers
        except (TimeoutError, aiohttp.ClientError) as exc:
            return _Step(Outcome.TRANSIENT, self._describe(exc))
        if body is None:
            problem = too_large(self.max_body_bytes)
            return _Step(Outcome.UNUSABLE, problem.reason, http_status=status, started_at=started)
        c = self.contract.classify(status, body, resp_headers)
        return _Step(
            c.outcome,
            c.reason,
            c.detail,
            c.aweme_id,
            status,
            c.retry_after,
            started,
            c.cause,
            c.payload,
        )

    async def _resolve_once(self, link: ShareLink) -> _Step:
        started: list[float] = []

        async def hop(method: str, url: str) -> tuple[int, Mapping[str, str]]:
            # Never sends the API token: these requests go to Douyin, not to our service.
            async with self._slots:
                started.append(await self._turn())
                async with self._http().request(method, url, allow_redirects=False) as resp:
                    return resp.status, resp.headers  # the body is never read

        try:
            r = await resolve_short_link(link.url, hop, resolve_base=self.resolve_base)
        except (TimeoutError, aiohttp.ClientError) as exc:
            return _Step(
                Outcome.TRANSIENT,
                f"short link lookup at {self.short_link_host}: " + self._describe(exc),
            )
        reason = r.reason
        if r.outcome.retryable:  # name the host: the upstream service was not asked
            reason = reason.replace(
                "short link lookup", f"short link lookup at {self.short_link_host}"
            )
        return _Step(
            r.outcome,
            reason,
            None,
            r.aweme_id,
            r.http_status,
            r.retry_after,
            started[-1] if started else None,
        )

    async def _turn(self) -> float:
        """Wait for the rate limiter's turn, or for a stop: a run stopped while throttled
        must not wait out every queued request's turn at the lowered rate first."""
        if (
            self.service_stop is None
            and isinstance(self.limiter, RateLimiter)
            and (granted := self.limiter.try_acquire()) is not None
        ):
            self.stats.request_started(granted)
            return granted  # sent right after this, with no await in between
        if self.service_stop is None:
            turn = asyncio.ensure_future(self.limiter.acquire())
            stopped = asyncio.ensure_future(self._stopped.wait())
            await asyncio.wait((turn, stopped), return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            if turn.done():
                started = turn.result()
            else:
                turn.cancel()
        if self.service_stop is not None:
            raise _Stopped
        if isinstance(self.limiter, RateLimiter):
            # The caller sends right after this, with no await in between: a turn granted
            # while other work held the loop counts from now, not from when it was granted.
            started = self.limiter.restamp(started)
        self.stats.request_started(started)
        return started

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("use `async with UpstreamClient(...)` before fetching")
        return self._session

    async def _read_capped(self, resp: aiohttp.ClientResponse) -> bytes | None:
        """The body, or None once it exceeds `max_body_bytes` (the rest is never buffered).

        A capped buffer then `json.loads` is simpler than streaming with ijson: bodies are a
        few hundred KB, the cap bounds memory, and classification needs the whole document.
        """
        # Content-Length counts the bytes on the wire: a compressed body can decompress to far
        # more, so the cap is checked on what is read, chunk by chunk, never trusted to it.
        if resp.content_length is not None and resp.content_length > self.max_body_bytes:
            return None
        body = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > self.max_body_bytes:
                return None
        return bytes(body)

    def _describe(self, exc: BaseException) -> str:
        # Type names only: exception text can carry request details (URLs, headers).
        if isinstance(exc, TimeoutError):
            return f"timed out after {self._timeout_s:g}s"
        return f"connection error ({type(exc).__name__})"

    # -- results ------------------------------------------------------------------------------

    def _stopped_step(self) -> _Step:
        """The result of a fetch the stop cut short: OPERATOR after an operator stop, else
        TRANSIENT (the run leaves such links pending either way)."""
        stop = self.service_stop
        assert stop is not None
        if stop.needs_operator:
            return _Step(Outcome.OPERATOR, f"stopped after an operator error: {stop.short}")
        return _Step(Outcome.TRANSIENT, f"not attempted: the run stopped ({stop.short})")

    def _stopped_result(self, aweme_id: int | None, attempts: int) -> FetchResult:
        step = self._stopped_step()
        return FetchResult(step.outcome, None, aweme_id, step.reason, attempts, None)

    @staticmethod
    def _result(step: _Step, asked: int | None, attempts: int) -> FetchResult:
        ok = step.outcome is Outcome.OK
        aweme_id = step.aweme_id if ok and asked is None else asked
        detail, payload = (step.detail, step.payload) if ok else (None, None)
        return FetchResult(
            step.outcome,
            detail,
            aweme_id,
            step.reason,
            attempts,
            step.http_status,
            payload=payload,
        )


def _failure_kind(step: _Step, resolving: bool) -> Failure:
    """What a transient failure is made of, for the service's failure streak."""
    if resolving:
        return Failure.SHORT_LINK
    if step.http_status is None:
        return Failure.NO_ANSWER
    if step.http_status == 200 and not step.reason.startswith("upstream response is"):
        return Failure.SERVICE  # a failure envelope: the service works, Douyin does not
    return Failure.HTTP_ERROR  # a 5xx, or a body cut off or not JSON


def _same_work(step: _Step, asked: int | None) -> _Step:
    """`step`, or an UNUSABLE one when its answer names another work than the one asked for."""
    if step.outcome not in (Outcome.OK, Outcome.GONE):
        return step
    if asked is None or step.aweme_id is None or step.aweme_id == asked:
        return step
    reason = f"service answered with a different work (asked {asked}, got {step.aweme_id})"
    return _Step(Outcome.UNUSABLE, reason, http_status=step.http_status)


def _replace_reason(step: _Step, reason: str) -> _Step:
    return _Step(
        step.outcome,
        reason,
        step.detail,
        step.aweme_id,
        step.http_status,
        step.retry_after,
        step.started_at,
    )
