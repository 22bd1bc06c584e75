"""The fake upstream over real HTTP on 127.0.0.1: both contracts, faults, short links, counts."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from pipeline.testing import payloads
from pipeline.testing.fake_upstream import (
    AMAGI_PATH,
    SEED_PATH,
    FakeUpstream,
    FaultConfig,
    ServedRequest,
)
from pipeline.testing.links import decode_short_code, work_id_from_link

IDS = payloads.sample_aweme_ids(300, seed=7)
VIDEO_ID = 7071967230287744267  # the real video fixture's id


class Clock:
    """A request clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def fake(clock: Clock) -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream(seed=7, clock=clock) as upstream:
        await upstream.start()
        yield upstream


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


async def get(
    http: aiohttp.ClientSession, fake: FakeUpstream, path: str, **params: str
) -> tuple[int, bytes, dict[str, str]]:
    async with http.get(f"{fake.base_url}{path}", params=params, allow_redirects=False) as resp:
        return resp.status, await resp.read(), dict(resp.headers)


async def amagi(http: aiohttp.ClientSession, fake: FakeUpstream, aweme_id: int) -> Any:
    status, body, _ = await get(http, fake, AMAGI_PATH, aweme_id=str(aweme_id))
    assert status == 200
    return json.loads(body)


async def seed(http: aiohttp.ClientSession, fake: FakeUpstream, url: str) -> tuple[int, Any]:
    status, body, _ = await get(http, fake, SEED_PATH, url=url)
    return status, json.loads(body)


def envelope(fixtures_dir: Path, name: str) -> Any:
    return json.loads((fixtures_dir / "amagi_5.8.0_http_envelopes" / name).read_text("utf-8"))


def first(pred: Callable[[int], bool]) -> int:
    return next(i for i in IDS if pred(i))


def template_keys(kind: str) -> set[str]:
    item, _ = payloads._template(kind)
    return set(item)


# -- ok shapes -----------------------------------------------------------------------------


async def test_seed_ok_has_the_spec_envelope_and_a_real_template_key_set(fake, http):
    for kind in (payloads.ALBUM, payloads.VIDEO_DETAIL, payloads.VIDEO_POST):
        aweme_id = first(lambda i, k=kind: payloads.template_kind(i, seed=7) == k)
        status, body = await seed(http, fake, f"https://www.douyin.com/video/{aweme_id}")
        assert status == 200
        assert (body["code"], body["message"]) == (0, "success")
        assert list(body["data"]) == ["aweme_detail", "log_pb", "status_code"]
        detail = body["data"]["aweme_detail"]
        # A collection and a place are added or left out per work, in the album's real shapes.
        context = {"mix_info", "anchor_info"}
        assert set(detail) - context == template_keys(kind) - context
        assert detail == fake.aweme_detail(aweme_id)
        assert detail["aweme_id"] == detail["group_id"] == str(aweme_id)
        assert detail["statistics"]["play_count"] == 0
        assert (len(detail["images"] or []) > 0) == (kind == payloads.ALBUM)


async def test_amagi_ok_matches_the_real_envelope_and_rounds_int64s(fake, http, fixtures_dir):
    aweme_id = first(lambda i: payloads.make_aweme_detail(i, seed=7, sim_t=0)["music"] is not None)
    body = await amagi(http, fake, aweme_id)
    real = envelope(fixtures_dir, "ok_video.http200.json")
    assert list(body) == list(real)
    assert (body["success"], body["message"], body["code"]) == (True, "获取成功", 200)
    assert body["requestPath"] == f"{AMAGI_PATH}?aweme_id={aweme_id}"
    detail = body["data"]["aweme_detail"]
    assert detail["aweme_id"] == str(aweme_id)
    # Like amagi: numeric int64s lose precision, the string twins do not.
    assert detail["music"]["id"] != int(detail["music"]["id_str"])
    assert detail["music"]["id"] == payloads.js_number_view(int(detail["music"]["id_str"]))
    assert detail["comment_gid"] != aweme_id


def test_js_number_view_reproduces_amagis_rounding(fixtures_dir):
    raw = json.loads((fixtures_dir / "video_detail_7071967230287744267.json").read_text("utf-8"))
    assert payloads.js_number_view(raw) == envelope(fixtures_dir, "ok_video.http200.json")["data"]


# -- amagi parameter errors, deleted, null detail, cookie --------------------------------------


@pytest.mark.parametrize(
    ("params", "fixture"),
    [
        ({}, "missing_param.http400.json"),
        ({"aweme_id": ""}, "empty_param.http400.json"),
        ({"url": "https://v.douyin.com/iMNpuGtC/"}, "url_param.http400.json"),
    ],
)
async def test_amagi_bad_parameters_equal_the_real_400s(fake, http, fixtures_dir, params, fixture):
    status, body, _ = await get(http, fake, AMAGI_PATH, **params)
    assert status == 400
    got, real = json.loads(body), envelope(fixtures_dir, fixture)
    assert got.pop("requestPath").startswith(AMAGI_PATH)
    real.pop("requestPath")
    assert got == real


async def test_gone_in_both_styles_looks_like_the_real_deleted_work(fake, http, fixtures_dir):
    gone = IDS[0]
    fake.faults = FaultConfig(gone_ids=frozenset({gone}))
    body = await amagi(http, fake, gone)
    real = envelope(fixtures_dir, "deleted.http200.json")
    assert list(body) == list(real)
    assert list(body["error"]) == list(real["error"])
    assert body["error"]["errorDescription"] == real["error"]["errorDescription"]
    assert (body["success"], body["message"], body["code"]) == (False, "抖音数据获取失败", 500)
    assert f"aweme_id={gone}&" in body["error"]["requestUrl"]

    status, seeded = await seed(http, fake, f"https://www.douyin.com/note/{gone}")
    real_body = json.loads(
        (fixtures_dir / "deleted_filter_detail_7223326284024139065.json").read_text()
    )
    assert status == 200
    assert seeded["code"] == 0
    assert list(seeded["data"]) == list(real_body)
    assert seeded["data"]["aweme_detail"] is None
    assert seeded["data"]["filter_detail"]["filter_reason"] == "status_self_see"
    assert seeded["data"]["filter_detail"]["aweme_id"] == str(gone)
    assert [r.outcome for r in fake.served] == ["gone", "gone"]


async def test_null_detail_in_both_styles(fake, http, fixtures_dir):
    fake.faults = FaultConfig(null_detail_ids=frozenset({IDS[1]}))
    body = await amagi(http, fake, IDS[1])
    real = envelope(fixtures_dir, "null_detail.http200.json")
    assert {**body, "requestPath": ""} == {**real, "requestPath": ""}
    _, seeded = await seed(http, fake, f"https://www.douyin.com/video/{IDS[1]}")
    assert seeded == {"code": 0, "message": "success", "data": real["data"]}


async def test_cookie_expired_is_the_empty_body_failure(fake, http, fixtures_dir):
    fake.faults = FaultConfig(cookie_expired=True)
    body = await amagi(http, fake, IDS[2])
    real = envelope(fixtures_dir, "empty_body.http200.json")
    assert body["error"]["errorDescription"] == real["error"]["errorDescription"]
    assert (body["success"], body["code"]) == (False, 500)
    _, seeded = await seed(http, fake, f"https://www.douyin.com/video/{IDS[2]}")
    assert seeded["code"] == 503
    assert seeded["data"] is None
    assert "接口返回内容为空" in seeded["message"]


# -- token and rate limit ----------------------------------------------------------------------


async def test_require_token_answers_401_without_echoing_it(fake, http):
    fake.faults = FaultConfig(require_token="s3cret-token")
    url = f"{fake.base_url}{AMAGI_PATH}"
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret-token"}):
        async with http.get(url, params={"aweme_id": str(IDS[0])}, headers=headers) as resp:
            assert resp.status == 401
            assert "s3cret" not in await resp.text()
    headers = {"Authorization": "Bearer s3cret-token"}
    async with http.get(url, params={"aweme_id": str(IDS[0])}, headers=headers) as resp:
        assert resp.status == 200
    assert "s3cret" not in repr(fake.faults)
    # A short link is a public Douyin host: no token there.
    status, _, _ = await get(
        http, fake, fake.short_link(IDS[0]).removeprefix("https://v.douyin.com")
    )
    assert status == 302


async def test_rate_limit_answers_429_with_retry_after(fake, http, clock):
    fake.faults = FaultConfig(rate_limit=2, retry_after_s=3)
    statuses = [(await get(http, fake, AMAGI_PATH, aweme_id=str(i)))[0] for i in IDS[:3]]
    assert statuses == [200, 200, 429]
    _, body, headers = await get(http, fake, AMAGI_PATH, aweme_id=str(IDS[3]))
    assert headers["Retry-After"] == "3"
    assert json.loads(body)["code"] == 429
    clock.now += 0.999  # the first two are still inside the trailing second
    assert (await get(http, fake, AMAGI_PATH, aweme_id=str(IDS[3])))[0] == 429
    clock.now += 0.001
    assert (await get(http, fake, AMAGI_PATH, aweme_id=str(IDS[3])))[0] == 200
    assert [r.outcome for r in fake.served].count("rate_limited") == 3
    assert fake.max_requests_in_window(1.0) == 5  # what the client sent, 429s included


def test_max_requests_in_window_uses_half_open_windows():
    fake = FakeUpstream()
    fake.served = [
        ServedRequest(t, path, None, 200, "ok", "seed")
        for t, path in [(0.0, "/a"), (0.5, "/a"), (0.99, "/b"), (1.0, "/a"), (1.5, "/a"), (9, "/a")]
    ]
    assert fake.max_requests_in_window(1.0) == 3
    assert fake.max_requests_in_window(1.0, paths="/a") == 2  # 0.5 and 1.5 are 1.0 apart: no
    assert fake.max_requests_in_window(0.5, paths="/a") == 1
    assert fake.max_requests_in_window(10.0) == 6


# -- transient faults --------------------------------------------------------------------------


async def test_each_fault_kind_is_observable_then_clears(fake, http, fixtures_dir):
    cases: list[tuple[FaultConfig, Callable[[int, bytes, dict[str, str]], bool]]] = [
        (FaultConfig(error_5xx_rate=1), lambda s, b, h: s in (500, 502, 503)),
        (FaultConfig(truncated_rate=1), lambda s, b, h: s == 200 and not _is_json(b)),
        (FaultConfig(non_json_rate=1), lambda s, b, h: "text/html" in h["Content-Type"]),
    ]
    for aweme_id, (faults, seen) in zip(IDS[20:], cases, strict=False):
        fake.faults = faults  # a fresh work per case: faults hit a work's first attempts only
        assert seen(*await get(http, fake, AMAGI_PATH, aweme_id=str(aweme_id)))
        status, body, _ = await get(http, fake, AMAGI_PATH, aweme_id=str(aweme_id))
        assert status == 200
        assert json.loads(body)["success"] is True

    aweme_id = IDS[5]
    fake.faults = FaultConfig(soft_failure_rate=1, fail_attempts=2)
    soft = await amagi(http, fake, aweme_id)
    real = envelope(fixtures_dir, "enotfound.http200.json")
    assert {**soft, "requestPath": ""} == {**real, "requestPath": ""}
    _, seeded = await seed(http, fake, f"https://www.douyin.com/video/{aweme_id}")
    assert (seeded["code"], seeded["data"]) == (503, None)
    assert [r.outcome for r in fake.served][-2:] == ["soft_failure", "soft_failure"]


async def test_reset_and_hang_faults(fake, http):
    # aiohttp's client silently retries an idempotent request once after a disconnect, so two
    # faulty attempts are needed for the reset to reach the caller.
    fake.faults = FaultConfig(reset_rate=1, fail_attempts=2)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await get(http, fake, AMAGI_PATH, aweme_id=str(IDS[6]))
    assert [(r.status, r.outcome) for r in fake.served] == [(0, "reset")] * 2

    fake.faults = FaultConfig(timeout_rate=1, hang_s=5)
    with pytest.raises(asyncio.TimeoutError):
        async with http.get(
            f"{fake.base_url}{AMAGI_PATH}",
            params={"aweme_id": str(IDS[7])},
            timeout=aiohttp.ClientTimeout(total=0.2),
        ) as resp:
            await resp.read()
    assert fake.served[-1].outcome == "timeout"


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return False
    return True


async def test_fault_rates_are_deterministic_fractions_of_works(http):
    faults = FaultConfig(error_5xx_rate=0.3, non_json_rate=0.2)
    runs = []
    for _ in range(2):
        async with FakeUpstream(seed=3, faults=faults) as upstream:
            await upstream.start()
            first_try = [
                (await get(http, upstream, AMAGI_PATH, aweme_id=str(i)))[0] for i in IDS[:150]
            ]
            second = {
                (await get(http, upstream, AMAGI_PATH, aweme_id=str(i)))[0] for i in IDS[:150]
            }
            runs.append([r.outcome for r in upstream.served[:150]])
        assert second == {200}
        assert 0.2 < sum(s >= 500 for s in first_try) / 150 < 0.4
    assert runs[0] == runs[1]
    assert 0.1 < runs[0].count("non_json") / 150 < 0.3


# -- links -------------------------------------------------------------------------------------


async def test_short_link_redirects_to_the_real_share_url_shape(fake, http):
    aweme_id = first(lambda i: payloads.make_aweme_detail(i, seed=7, sim_t=0)["music"] is not None)
    link = fake.short_link(aweme_id)
    code = link.removeprefix("https://v.douyin.com/").rstrip("/")
    assert re.fullmatch(r"[A-Za-z0-9_-]+", code)
    for method in ("HEAD", "GET"):
        async with http.request(method, f"{fake.base_url}/{code}/", allow_redirects=False) as resp:
            assert resp.status == 302
            location = resp.headers["Location"]
    music_id = fake.aweme_detail(aweme_id)["music"]["id_str"]
    assert location.startswith(f"https://www.iesdouyin.com/share/video/{aweme_id}/?region=CN&mid=")
    assert f"mid={music_id}&" in location
    assert (await get(http, fake, "/iMNpuGtC/"))[0] == 404
    assert [r.style for r in fake.served] == ["short_link"] * 3
    assert decode_short_code(code, seed=8) != aweme_id


@pytest.mark.parametrize(
    "link",
    [
        "https://www.douyin.com/video/{id}",
        "https://www.douyin.com/note/{id}?previous_page=app_code_link",
        "https://www.iesdouyin.com/share/video/{id}/?region=CN&mid=7049808807056149285",
        "https://www.douyin.com/discover?modal_id={id}",
        "3.87 abc:/ 复制打开抖音，看看【作品】 {short}复制此链接，打开Dou音搜索，直接观看视频！",
    ],
)
async def test_seed_accepts_every_share_link_shape(fake, http, link):
    aweme_id = IDS[9]
    status, body = await seed(http, fake, link.format(id=aweme_id, short=fake.short_link(aweme_id)))
    assert status == 200
    assert body["data"]["aweme_detail"]["aweme_id"] == str(aweme_id)


@pytest.mark.parametrize(
    ("link", "outcome"),
    [("", "bad_request"), ("https://example.com/video/7071967230287744267", "invalid_link"),
     ("https://v.douyin.com/iMNpuGtC/", "invalid_link"), ("hello", "invalid_link")],
)  # fmt: skip
async def test_seed_rejects_unusable_links_with_400(fake, http, link, outcome):
    status, body = await seed(http, fake, link)
    assert status == 400
    assert body["code"] == 400
    assert body["data"] is None
    assert fake.served[-1].outcome == outcome


def test_work_id_from_link_ignores_mid():
    url = "https://www.iesdouyin.com/share/video/7232626237586312485/?mid=7203284398119225346"
    assert work_id_from_link(url, seed=0) == 7232626237586312485


# -- payloads ----------------------------------------------------------------------------------


def test_same_seed_same_payload_other_seed_other_payload():
    one = payloads.make_aweme_detail(IDS[10], seed=1, sim_t=0)
    assert one == payloads.make_aweme_detail(IDS[10], seed=1, sim_t=0)
    other = payloads.make_aweme_detail(IDS[10], seed=2, sim_t=0)
    assert (one["desc"], one["author"]["uid"]) != (other["desc"], other["author"]["uid"])


def test_generated_works_are_varied_and_internally_consistent():
    details = [payloads.make_aweme_detail(i, seed=7, sim_t=0) for i in IDS]
    for aweme_id, d in zip(IDS, details, strict=True):
        assert d["create_time"] == aweme_id >> 32
        assert payloads.MIN_CREATE_TIME <= d["create_time"] <= payloads.MAX_CREATE_TIME
        assert f"/share/video/{aweme_id}/" in d["share_url"]
        assert re.fullmatch(r"\d{11,16}", d["author"]["uid"])
        assert d["author"]["sec_uid"].startswith("MS4wLjABAAAA")
        units = d["desc"].encode("utf-16-le")
        for extra in d["text_extra"] or []:
            # Offsets count UTF-16 code units, as Douyin's do.
            span = units[2 * extra["start"] : 2 * extra["end"]].decode("utf-16-le")
            if extra["type"] == 1:
                assert span == "#" + extra["hashtag_name"]
                assert extra["hashtag_id"].isdigit()
            elif extra["type"] == 0:
                assert span.startswith("@")
                assert extra["user_id"].isdigit()
        if d["images"]:
            assert 1 <= len(d["images"]) <= 9
            assert all(im["uri"] and im["width"] and im["height"] for im in d["images"])
        if d["music"]:
            assert d["music"]["id"] == int(d["music"]["id_str"])
            assert len(d["music"]["id_str"]) == 19
    authors = {d["author"]["uid"] for d in details}
    assert 20 < len(authors) < len(details)  # authors repeat across works
    assert any(d["music"] is None for d in details)
    assert any(d["author"]["unique_id"] == "" for d in details)
    assert {t["type"] for d in details for t in d["text_extra"] or []} == {0, 1, 5}
    with pytest.raises(ValueError, match="2019"):
        payloads.make_aweme_id(1_000_000_000, 1)


async def test_counts_follow_the_simulated_hour_step_rule(fake, http):
    growing = first(lambda i: not payloads.is_frozen(i, seed=7))
    frozen = first(lambda i: payloads.is_frozen(i, seed=7))
    assert fake.counts_at(growing, 0) == fake.counts_at(growing, 3599.9)
    later = fake.counts_at(growing, 3600)
    assert later["digg_count"] > fake.counts_at(growing, 0)["digg_count"]
    assert later["play_count"] == 0
    assert fake.counts_at(frozen, 0) == fake.counts_at(frozen, 86_400 * 30)

    before = (await amagi(http, fake, growing))["data"]["aweme_detail"]["statistics"]
    fake.advance(3600)
    after = (await amagi(http, fake, growing))["data"]["aweme_detail"]["statistics"]
    assert before["digg_count"] == fake.counts_at(growing, 0)["digg_count"]
    assert after["digg_count"] == later["digg_count"]
    async with http.post(f"{fake.base_url}/_fake/advance", params={"seconds": "1800"}) as resp:
        assert (await resp.json())["sim_t"] == 5400


async def test_huge_body_is_valid_json_of_the_requested_size(fake, http):
    fake.faults = FaultConfig(huge_body_ids=frozenset({IDS[11]}), huge_body_bytes=300_000)
    status, body, _ = await get(http, fake, AMAGI_PATH, aweme_id=str(IDS[11]))
    assert status == 200
    assert len(body) > 300_000
    assert json.loads(body)["success"] is True


def test_fault_rates_must_sum_to_at_most_one():
    with pytest.raises(ValueError, match="sum"):
        FaultConfig(error_5xx_rate=0.6, reset_rate=0.6)


def test_cli_prints_its_base_url_and_serves():
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.testing.fake_upstream", "--port", "0", "--seed", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", base)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.mark.parametrize(("style", "other_path"), [("amagi", SEED_PATH), ("seed", AMAGI_PATH)])
async def test_a_fake_of_one_style_answers_only_its_own_route(style, other_path, http):
    """Like the real services: the other contract's route is Express's HTML 404, and short
    links live on a port of their own (Douyin's short-link host), not on the service's."""
    async with FakeUpstream(seed=7, style=style) as fake:
        base = await fake.start()
        assert fake.short_link_base not in (None, base)
        code = fake.short_link(IDS[0]).removeprefix("https://v.douyin.com")
        for path in (other_path, code):
            async with http.get(base + path, allow_redirects=False) as response:
                assert response.status == 404
                assert response.content_type == "text/html"
                assert f"Cannot GET {path}" in await response.text()
        async with http.get(fake.short_link_base + code, allow_redirects=False) as response:
            assert response.status == 302
