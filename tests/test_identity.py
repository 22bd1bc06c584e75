"""The work in an answer must be the work asked for; a gone answer marks only that work; and
whatever a payload holds, `outcome_record` turns it into a recorded fate, never an exception."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import pipeline.run as run_module
from pipeline.inputs import ShareLink, canonical_link
from pipeline.run import gone_works, outcome_record
from pipeline.upstream.client import UpstreamClient
from pipeline.upstream.outcomes import FetchResult, Outcome

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upstream"
ENVELOPES = FIXTURES / "amagi_5.8.0_http_envelopes"
VIDEO_ID = 7071967230287744267  # the work every answer below is about
DELETED_ID = 7223326284024139065
ASKED = 7300000000000000001  # a different, valid id
NOW = datetime(2024, 1, 1, tzinfo=UTC)


def _seed(data: bytes) -> bytes:
    return b'{"code":200,"message":"success","data":' + data + b"}"


class Service:
    """Answers every request with one fixed body; serves v.douyin.com stand-ins under /s."""

    def __init__(self, seed_body: bytes, amagi_body: bytes) -> None:
        self.seed_body, self.amagi_body = seed_body, amagi_body
        self.app = web.Application()
        self.app.router.add_get("/douyin/fetch_one_work", self.seed)
        self.app.router.add_get("/api/douyin/fetch_one_work", self.amagi)
        self.app.router.add_route("*", "/s/{code}/", self.short)

    async def seed(self, request: web.Request) -> web.Response:
        return web.Response(body=self.seed_body)

    async def amagi(self, request: web.Request) -> web.Response:
        return web.Response(body=self.amagi_body)

    async def short(self, request: web.Request) -> web.Response:
        # Resolves every short link to ASKED.
        location = f"https://www.iesdouyin.com/share/video/{ASKED}/"
        return web.Response(status=302, headers={"Location": location})


async def _fetch(service: Service, style: str, link: ShareLink) -> FetchResult:
    runner = web.AppRunner(service.app, shutdown_timeout=0.2)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    try:
        async with UpstreamClient(
            base, style, token=None, rate=100, concurrency=1, timeout_s=2, retries=2,  # type: ignore[arg-type]
            resolve_base=base + "/s", backoff_base_s=0.01, backoff_max_s=0.02,
        ) as client:  # fmt: skip
            return await client.fetch(link)
    finally:
        await runner.cleanup()


@pytest.fixture
def video_service() -> Service:
    detail = (FIXTURES / f"video_detail_{VIDEO_ID}.json").read_bytes()
    return Service(_seed(detail), (ENVELOPES / "ok_video.http200.json").read_bytes())


@pytest.fixture
def deleted_service() -> Service:
    deleted = (FIXTURES / f"deleted_filter_detail_{DELETED_ID}.json").read_bytes()
    return Service(_seed(deleted), (ENVELOPES / "deleted.http200.json").read_bytes())


SEED_SHORT = ShareLink("https://v.douyin.com/abc/", None, is_short=True)
DIFFERENT = f"service answered with a different work (asked {ASKED}, got {VIDEO_ID})"


@pytest.mark.parametrize(
    ("style", "link"),
    [
        ("seed", canonical_link(ASKED)),
        ("amagi", canonical_link(ASKED)),
        ("amagi", SEED_SHORT),  # resolved locally to ASKED, answered with VIDEO_ID
    ],
)
async def test_an_answer_about_another_work_is_unusable(
    video_service: Service, style: str, link: ShareLink
) -> None:
    result = await _fetch(video_service, style, link)
    assert result.outcome is Outcome.UNUSABLE
    assert result.reason == DIFFERENT
    assert result.aweme_id == ASKED
    assert result.aweme_detail is None
    record = outcome_record(link, "in.txt", result, NOW)
    assert (record.record.outcome, record.record.aweme_id) == ("failed", ASKED)
    assert record.work is None  # nothing is loaded
    assert not record.temporary  # permanent: exit 2, no retry in the next run


async def test_a_seed_short_link_takes_the_answers_id(video_service: Service) -> None:
    # The seed service resolves short links itself: its answer names the work.
    result = await _fetch(video_service, "seed", SEED_SHORT)
    assert result.outcome is Outcome.OK
    assert result.aweme_id == VIDEO_ID
    record = outcome_record(SEED_SHORT, "in.txt", result, NOW)
    assert record.record.outcome == "loaded"
    assert record.work is not None
    assert record.record.aweme_id == VIDEO_ID


async def test_the_right_work_loads(video_service: Service) -> None:
    result = await _fetch(video_service, "amagi", canonical_link(VIDEO_ID))
    assert (result.outcome, result.aweme_id) == (Outcome.OK, VIDEO_ID)


async def test_a_gone_answer_naming_another_work_marks_nothing(deleted_service: Service) -> None:
    # seed: the raw Douyin body names DELETED_ID while ASKED was asked for.
    result = await _fetch(deleted_service, "seed", canonical_link(ASKED))
    assert result.outcome is Outcome.UNUSABLE
    assert (
        result.reason == f"service answered with a different work (asked {ASKED}, got {DELETED_ID})"
    )
    record = outcome_record(canonical_link(ASKED), "in.txt", result, NOW)
    assert gone_works([record]) == []


async def test_a_gone_answer_without_an_id_marks_the_asked_work(deleted_service: Service) -> None:
    # amagi's failure envelope names no work: it is about the one asked for.
    result = await _fetch(deleted_service, "amagi", canonical_link(ASKED))
    assert (result.outcome, result.aweme_id) == (Outcome.GONE, ASKED)
    record = outcome_record(canonical_link(ASKED), "in.txt", result, NOW)
    assert gone_works([record]) == [(ASKED, "gone: status_self_see")]


async def test_a_gone_answer_to_a_seed_short_link_marks_no_work(deleted_service: Service) -> None:
    """The answer's id is not trusted to say which work is gone: the link is recorded gone,
    without an id, and no known work is marked."""
    result = await _fetch(deleted_service, "seed", SEED_SHORT)
    assert (result.outcome, result.aweme_id) == (Outcome.GONE, None)
    record = outcome_record(SEED_SHORT, "in.txt", result, NOW)
    assert record.record.outcome == "gone"
    assert gone_works([record]) == []


# -- outcome_record on its own ----------------------------------------------------------------


def _ok(detail: dict[str, Any], aweme_id: int | None) -> FetchResult:
    return FetchResult(Outcome.OK, detail, aweme_id, "", 1, 200)


def _video_detail() -> dict[str, Any]:
    detail = json.loads((FIXTURES / f"video_detail_{VIDEO_ID}.json").read_bytes())
    assert isinstance(detail["aweme_detail"], dict)
    return detail["aweme_detail"]


def test_a_flattened_id_other_than_the_asked_one_is_not_loaded() -> None:
    # The answer names no id in `aweme_id` the client could check; flatten finds another.
    detail = _video_detail()
    detail["aweme_id"] = None
    result = _ok(detail, ASKED)
    record = outcome_record(canonical_link(ASKED), "in.txt", result, NOW)
    assert record.record.outcome == "failed"
    assert record.record.reason == DIFFERENT
    assert record.work is None
    assert not record.temporary


@pytest.mark.parametrize("error", [RecursionError, TypeError, KeyError, RuntimeError])
def test_any_flatten_error_is_a_permanent_failure(
    monkeypatch: pytest.MonkeyPatch, error: type[Exception]
) -> None:
    def broken(detail: Any, now: Any) -> Any:
        raise error("payload said something odd")

    monkeypatch.setattr(run_module, "flatten", broken)
    record = outcome_record(canonical_link(VIDEO_ID), "in.txt", _ok({}, VIDEO_ID), NOW)
    assert record.record.outcome == "failed"
    assert record.record.reason == f"upstream payload could not be read: {error.__name__}"
    assert not record.temporary


def test_unusable_is_a_permanent_failure() -> None:
    result = FetchResult(Outcome.UNUSABLE, None, ASKED, "upstream body larger than 20 MiB", 1, 200)
    record = outcome_record(canonical_link(ASKED), "in.txt", result, NOW)
    assert (record.record.outcome, record.record.reason) == (
        "failed",
        "upstream body larger than 20 MiB",
    )
    assert not record.temporary
    transient = FetchResult(Outcome.TRANSIENT, None, ASKED, "upstream error (HTTP 502)", 3, 502)
    assert outcome_record(canonical_link(ASKED), "in.txt", transient, NOW).temporary
