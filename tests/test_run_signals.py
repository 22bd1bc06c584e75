"""Run-level signals against a real HTTP server on 127.0.0.1: answers that concern the whole
service act once for the run (a shared cool-down, or one early stop with one message), and the
links not attempted stay pending for the next run."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy import create_engine, text

from helpers import ThreadedFake, run_ingest
from pipeline.inputs import ShareLink, canonical_link
from pipeline.testing.payloads import sample_aweme_ids
from pipeline.upstream.client import UpstreamClient
from pipeline.upstream.outcomes import Cause, FetchResult, Outcome
from pipeline.upstream.signals import STREAK_MIN, THROTTLE_LIMIT

ENVELOPES = Path(__file__).resolve().parent / "fixtures" / "upstream" / "amagi_5.8.0_http_envelopes"
ROUTE = "/api/douyin/fetch_one_work"
# What real amagi 5.8.0 answers when it cannot reach Douyin (UPSTREAM.md §1.2).
CANNOT_REACH = (ENVELOPES / "enotfound.http200.json").read_bytes()
COOKIE_EXPIRED = (ENVELOPES / "empty_body.http200.json").read_bytes()
OK_TEMPLATE = json.loads((ENVELOPES / "ok_video.http200.json").read_text(encoding="utf-8"))


def relayed(message: str) -> bytes:
    """amagi relaying Douyin's status_msg: `message` verbatim, no `error` object."""
    doc = {"success": False, "message": message, "code": 500, "requestPath": ROUTE}
    return json.dumps(doc, ensure_ascii=False).encode()


THROTTLED = relayed("请求过于频繁，请稍后再试")
CAPTCHA = relayed("验证码错误")


def ok_body(aweme_id: int) -> bytes:
    doc = json.loads(json.dumps(OK_TEMPLATE))
    doc["data"]["aweme_detail"]["aweme_id"] = str(aweme_id)
    return json.dumps(doc, ensure_ascii=False).encode()


Answer = Callable[[int, int], bytes]  # (aweme_id, request number from 0) -> amagi body


@dataclass
class EnvelopeServer:
    """A small amagi-style server on 127.0.0.1, in its own thread (so the real command can
    run against it in a subprocess). Every request is logged with its arrival time."""

    answer: Answer
    served: list[tuple[float, int]] = field(default_factory=list)
    url: str = ""

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._runner: web.AppRunner | None = None
        self.url = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _handle(self, request: web.Request) -> web.Response:
        aweme_id = int(request.query.get("aweme_id", "0") or 0)
        n = len(self.served)
        self.served.append((time.monotonic(), aweme_id))
        body = self.answer(aweme_id, n)
        return web.Response(body=body, content_type="application/json")

    async def _start(self) -> str:
        app = web.Application()
        app.router.add_get(ROUTE, self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


@pytest.fixture
def envelope_server() -> Iterator[Callable[[Answer], EnvelopeServer]]:
    started: list[EnvelopeServer] = []

    def start(answer: Answer) -> EnvelopeServer:
        server = EnvelopeServer(answer)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()


def client(base: str, **kw: Any) -> UpstreamClient:
    options: dict[str, Any] = {
        "token": None, "rate": 1000.0, "concurrency": 4, "timeout_s": 5.0, "retries": 2,
        "backoff_base_s": 0.01, "backoff_max_s": 0.05,
    }  # fmt: skip
    options.update(kw)
    return UpstreamClient(base, "amagi", **options)


def free_port() -> int:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


IDS = sample_aweme_ids(200, seed=111)


async def fetch_all(c: UpstreamClient, links: list[ShareLink]) -> list[FetchResult]:
    """Fetch like a run does: `concurrency` workers, each taking the next link when done."""
    results: dict[int, FetchResult] = {}
    queue = list(enumerate(links))

    async def worker() -> None:
        while queue:
            n, link = queue.pop(0)
            results[n] = await c.fetch(link)

    await asyncio.gather(*(worker() for _ in range(c.concurrency)))
    return [results[n] for n in range(len(links))]


# -- the client: one signal, one action ----------------------------------------------------------


async def test_a_service_that_cannot_reach_douyin_stops_the_client(
    envelope_server: Callable[[Answer], EnvelopeServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = envelope_server(lambda aweme_id, n: CANNOT_REACH)
    with caplog.at_level(logging.ERROR, logger="pipeline"):
        async with client(server.url) as c:
            results = await fetch_all(c, [canonical_link(i) for i in IDS[:100]])
    stop = c.service_stop
    assert stop is not None
    assert stop.cause is Cause.DOUYIN_UNREACHABLE
    assert not stop.needs_operator
    assert "抖音数据获取失败" in stop.message
    assert server.url in stop.message
    assert "service's log" in stop.message
    # Stopped after one streak (the first 4 works retried, then 4 more), not after 100 links.
    assert len({aweme_id for _, aweme_id in server.served}) <= STREAK_MIN + 4
    assert len(server.served) <= (STREAK_MIN + 4) * 3
    assert sum(r.reason.startswith("not attempted") for r in results) >= 100 - STREAK_MIN - 4
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1  # one line per stop, not one per request in flight


async def test_relayed_rate_limiting_is_one_shared_cool_down(
    envelope_server: Callable[[Answer], EnvelopeServer],
) -> None:
    server = envelope_server(lambda aweme_id, n: THROTTLED if n < 3 else ok_body(aweme_id))
    async with client(server.url, backoff_base_s=0.1, backoff_max_s=1.0, retries=4) as c:
        results = await asyncio.gather(*(c.fetch(canonical_link(i)) for i in IDS[:6]))
    assert [r.outcome for r in results] == [Outcome.OK] * 6
    assert c.service_stop is None
    throttled = [t for t, _ in server.served[:3]]
    for t in throttled:
        # Requests in flight when the answer came arrived within milliseconds of it; after
        # it, every worker waits out the same cool-down (>= 0.2 s: 0.1 s doubled).
        later = [x for x, _ in server.served if x > t + 0.05]
        assert all(x >= t + 0.2 for x in later), (t, later)


async def test_persistent_throttling_stops_the_run_instead_of_each_link(
    envelope_server: Callable[[Answer], EnvelopeServer],
) -> None:
    server = envelope_server(lambda aweme_id, n: THROTTLED)
    # Retries enough for every link to hammer on its own: the run-level stop must come first.
    async with client(server.url, retries=50) as c:
        results = await asyncio.gather(*(c.fetch(canonical_link(i)) for i in IDS[:40]))
    stop = c.service_stop
    assert stop is not None
    assert stop.cause is Cause.THROTTLED
    assert "rate limiting" in stop.message
    assert "--rate" in stop.message
    assert len(server.served) <= THROTTLE_LIMIT * 4 + 4
    assert all(r.outcome is Outcome.TRANSIENT for r in results)
    assert all(r.reason.startswith("not attempted") for r in results)


async def test_a_captcha_stops_the_client_at_the_first_answer(
    envelope_server: Callable[[Answer], EnvelopeServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = envelope_server(lambda aweme_id, n: CAPTCHA)
    with caplog.at_level(logging.ERROR, logger="pipeline"):
        async with client(server.url, concurrency=1) as c:
            first = await c.fetch(canonical_link(IDS[0]))
            later = await asyncio.gather(*(c.fetch(canonical_link(i)) for i in IDS[1:20]))
    assert (first.outcome, first.attempts) == (Outcome.OPERATOR, 1)
    assert "验证码错误" in first.reason
    stop = c.service_stop
    assert stop is not None
    assert stop.cause is Cause.VERIFICATION
    assert stop.needs_operator
    assert len(server.served) == 1
    assert all(r.attempts == 0 for r in later)
    assert len([r for r in caplog.records if r.levelno >= logging.ERROR]) == 1


async def test_short_link_failures_name_the_short_link_host_not_the_service(
    envelope_server: Callable[[Answer], EnvelopeServer],
) -> None:
    server = envelope_server(lambda aweme_id, n: ok_body(aweme_id))
    resolve_base = f"http://127.0.0.1:{free_port()}"
    links = [ShareLink(f"https://v.douyin.com/iShort{i}/", None, is_short=True) for i in range(40)]
    async with client(server.url, resolve_base=resolve_base) as c:
        results = await asyncio.gather(*(c.fetch(link) for link in links))
    stop = c.service_stop
    assert stop is not None
    assert stop.cause is Cause.SHORT_LINKS
    assert resolve_base in stop.message
    assert "--resolve-base" in stop.message
    assert "did not answer" not in stop.message
    assert server.served == []  # the upstream service was never involved
    failed = [r for r in results if not r.reason.startswith("not attempted")]
    assert all("short link lookup at " + resolve_base in r.reason for r in failed)


# -- the real command ----------------------------------------------------------------------------


def _ids_file(tmp_path: Path, ids: list[int]) -> Path:
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"https://www.douyin.com/video/{i}\n" for i in ids))
    return path


def _share_links(db_url: str) -> int:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM share_links")).scalar_one())
    finally:
        engine.dispose()


def _not_attempted(stdout: str) -> int:
    found = re.search(r"not attempted: (\d+), re-run", stdout)
    assert found is not None, stdout
    return int(found.group(1))


def _log_messages(stderr: str) -> list[str]:
    """stderr lines without their time stamp (text format: `HH:MM:SS LEVEL message`)."""
    return [line.split(" ", 1)[-1] for line in stderr.splitlines() if line.strip()]


@pytest.mark.slow
def test_a_10000_link_run_stops_within_a_few_dozen_requests_and_a_rerun_finishes(
    db_url: str,
    envelope_server: Callable[[Answer], EnvelopeServer],
    fake_server: Callable[..., ThreadedFake],
    tmp_path: Path,
) -> None:
    ids = sample_aweme_ids(10_000, seed=112)
    path = _ids_file(tmp_path, ids)
    broken = envelope_server(lambda aweme_id, n: CANNOT_REACH)
    first = run_ingest(
        ["run", str(path), "--api-base", broken.url, "--api-style", "amagi", "--rate", "1000"],
        env={"DATABASE_URL": db_url},
    )
    assert first.returncode == 75, first.stderr
    assert len(broken.served) <= 40  # a few dozen: default concurrency 8 and 4 retries
    assert "Traceback" not in first.stderr
    errors = [m for m in _log_messages(first.stderr) if m.startswith("ERROR")]
    assert len(errors) == 1, first.stderr
    assert "抖音数据获取失败" in errors[0]
    assert broken.url in errors[0]
    recorded = _share_links(db_url)
    assert recorded + _not_attempted(first.stdout) == 10_000

    healthy = fake_server(seed=112)
    second = run_ingest(
        ["run", str(path), "--api-base", healthy.url, "--api-style", "amagi", "--rate", "2000",
         "--concurrency", "32", "--no-progress"],
        env={"DATABASE_URL": db_url},
        timeout=600,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert "not attempted" not in second.stdout
    engine = create_engine(db_url)
    with engine.connect() as conn:
        outcomes = dict(
            conn.execute(
                text("SELECT last_outcome, count(*) FROM share_links GROUP BY last_outcome")
            ).all()
        )
    engine.dispose()
    assert outcomes == {"loaded": 10_000}


@pytest.mark.slow
def test_twenty_early_stopped_runs_print_one_line_each_and_no_traceback(
    db_url: str, envelope_server: Callable[[Answer], EnvelopeServer], tmp_path: Path
) -> None:
    path = _ids_file(tmp_path, sample_aweme_ids(300, seed=113))
    cannot_reach = envelope_server(lambda aweme_id, n: CANNOT_REACH)
    cookie = envelope_server(lambda aweme_id, n: COOKIE_EXPIRED)
    captcha = envelope_server(lambda aweme_id, n: CAPTCHA)
    cases = [(cannot_reach, 75), (cookie, 77), (captcha, 77)]
    for run in range(20):
        server, code = cases[run % len(cases)]
        result = run_ingest(
            ["run", str(path), "--api-base", server.url, "--api-style", "amagi",
             "--rate", "1000", "--retries", "0", "--concurrency", "4", "--no-progress"],
            env={"DATABASE_URL": db_url},
        )  # fmt: skip
        assert result.returncode == code, result.stderr
        assert "Traceback" not in result.stderr, result.stderr
        assert "never retrieved" not in result.stderr, result.stderr
        messages = _log_messages(result.stderr)
        assert len(messages) == len(set(messages)), result.stderr  # no line twice
        assert len([m for m in messages if m.startswith("ERROR")]) == 1, result.stderr
        assert _not_attempted(result.stdout) > 0
        assert server.url in result.stdout  # the summary says where the trouble is


@pytest.mark.slow
def test_nothing_listening_at_the_base_url_is_named_on_stderr(db_url: str, tmp_path: Path) -> None:
    """Too few links for a streak: the run ends by itself (75), and stderr still says where."""
    base = f"http://127.0.0.1:{free_port()}"
    result = run_ingest(
        ["run", str(_ids_file(tmp_path, sample_aweme_ids(3, seed=114))), "--api-base", base,
         "--retries", "1", "--concurrency", "2", "--no-progress"],
        env={"DATABASE_URL": db_url},
    )  # fmt: skip
    assert result.returncode == 75, result.stderr
    named = [m for m in _log_messages(result.stderr) if base in m]
    assert len(named) == 1, result.stderr
    assert "no answer from the upstream service" in named[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_a_stop_while_reading_stdin_does_not_wait_for_its_end(
    db_url: str, envelope_server: Callable[[Answer], EnvelopeServer]
) -> None:
    captcha = envelope_server(lambda aweme_id, n: CAPTCHA)
    ids = sample_aweme_ids(20_000, seed=115)
    result = run_ingest(
        ["-", "--api-base", captcha.url, "--api-style", "amagi", "--no-progress"],
        env={"DATABASE_URL": db_url},
        stdin="".join(f"{i}\n" for i in ids),
    )
    assert result.returncode == 77, result.stderr
    assert "(and the rest of standard input), re-run the same command" in result.stdout
    assert _share_links(db_url) == 0


@pytest.mark.slow
def test_a_refresh_stops_the_same_way(
    db_url: str,
    envelope_server: Callable[[Answer], EnvelopeServer],
    fake_server: Callable[..., ThreadedFake],
    tmp_path: Path,
) -> None:
    healthy = fake_server(seed=116)
    path = _ids_file(tmp_path, sample_aweme_ids(60, seed=116))
    loaded = run_ingest(
        ["run", str(path), "--api-base", healthy.url, "--api-style", "amagi", "--no-progress"],
        env={"DATABASE_URL": db_url},
    )
    assert loaded.returncode == 0, loaded.stderr
    time.sleep(1.1)  # so that --stale-after 1s makes every work due
    broken = envelope_server(lambda aweme_id, n: CANNOT_REACH)
    result = run_ingest(
        ["refresh", "--stale-after", "1s", "--api-base", broken.url, "--api-style", "amagi",
         "--rate", "1000", "--no-progress"],
        env={"DATABASE_URL": db_url},
    )  # fmt: skip
    assert result.returncode == 75, result.stderr
    assert "Traceback" not in result.stderr
    errors = [m for m in _log_messages(result.stderr) if m.startswith("ERROR")]
    assert len(errors) == 1, result.stderr
    assert broken.url in errors[0]
    assert len(broken.served) <= 40
    assert _not_attempted(result.stdout) > 0
