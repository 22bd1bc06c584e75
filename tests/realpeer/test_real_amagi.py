"""The real `ingest --api-style amagi` against the real @ikenxuan/amagi 5.8.0 server (npm, pinned),
whose Douyin requests a loopback stand-in answers with captured real Douyin bodies, the fake's
templates, or scripted situations (douyin_standin.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from douyin_standin import FIXTURES, REAL_ALBUM, REAL_DELETED, REAL_VIDEO, Douyin, DouyinStandIn
from peers import SEED, AmagiServer
from realpeer_helpers import empty_all_tables, http_get, ingest, query, snapshot

from helpers import ThreadedFake
from pipeline.testing.fake_upstream import FaultConfig
from pipeline.testing.payloads import ALBUM, VIDEO_DETAIL, sample_aweme_ids, template_kind
from pipeline.upstream.contracts import AmagiContract
from pipeline.upstream.outcomes import Outcome

pytestmark = pytest.mark.slow

ENVELOPES = FIXTURES / "amagi_5.8.0_http_envelopes"
# Works of the fake's payloads (seed SEED), a few per test: the stand-in's scripts are per work
# and live for the whole session, so no two tests share a work.
WORKS = sample_aweme_ids(40, seed=SEED)


def first_of_kind(kind: str, pool: list[int]) -> int:
    return next(i for i in pool if template_kind(i, seed=SEED) == kind)


def link(aweme_id: int) -> str:
    return f"https://www.douyin.com/video/{aweme_id}"


def envelope(body: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(body)
    if isinstance(doc.get("error"), dict):
        doc["error"].pop("requestUrl", None)  # signed, with a random msToken: differs per call
    return doc


# -- the recorded envelopes are what the pinned amagi answers ----------------------------------


@pytest.mark.parametrize(
    ("aweme_id", "situation", "fixture"),
    [
        (REAL_VIDEO, Douyin.BODY, "ok_video.http200.json"),
        (REAL_ALBUM, Douyin.BODY, "ok_album.http200.json"),
        (REAL_DELETED, Douyin.BODY, "deleted.http200.json"),
        (1000000000000000001, Douyin.EMPTY, "empty_body.http200.json"),
    ],
)
def test_the_recorded_envelopes_are_what_the_pinned_amagi_answers(
    amagi: AmagiServer, douyin: DouyinStandIn, aweme_id: int, situation: Douyin, fixture: str
) -> None:
    douyin.script(aweme_id, situation)
    answer = http_get(amagi.url, f"/api/douyin/fetch_one_work?aweme_id={aweme_id}")
    assert answer.status == 200
    assert envelope(answer.body) == envelope((ENVELOPES / fixture).read_bytes())
    [seen] = douyin.requests_for(aweme_id)
    assert (seen.host, seen.path) == ("www.douyin.com", "/aweme/v1/web/aweme/detail/")


def test_an_unreachable_douyin_gives_the_recorded_envelope(
    amagi_without_douyin: AmagiServer,
) -> None:
    path = "/api/douyin/fetch_one_work?aweme_id=1000000000000000007"
    answer = http_get(amagi_without_douyin.url, path)
    assert answer.status == 200
    assert envelope(answer.body) == envelope((ENVELOPES / "enotfound.http200.json").read_bytes())
    assert "ECONNREFUSED" in amagi_without_douyin.log_text()  # the cause is only in amagi's log


# -- real captured works, through the real amagi, into the database ----------------------------


def test_the_captured_video_album_and_deleted_work_land(
    amagi: AmagiServer, db_url: str, tmp_path: Path
) -> None:
    lines = [link(REAL_VIDEO), f"https://www.douyin.com/note/{REAL_ALBUM}", link(REAL_DELETED)]
    result = ingest(amagi.url, lines, tmp_path, db_url)
    assert result.returncode == 0, result.stderr

    works = dict(query(db_url, "SELECT aweme_id, kind FROM works"))
    assert works == {REAL_VIDEO: "video", REAL_ALBUM: "image_album"}
    # amagi rounds int64 numbers (music.id 7049808807056149285 → …150000): the string twin wins.
    music = query(db_url, "SELECT music_id FROM works WHERE aweme_id = :i", i=REAL_VIDEO)
    assert music == [(7049808807056149285,)]
    images = query(db_url, "SELECT count(*) FROM work_images WHERE aweme_id = :i", i=REAL_ALBUM)
    tags = query(db_url, "SELECT count(*) FROM work_hashtags WHERE aweme_id = :i", i=REAL_ALBUM)
    assert (images, tags) == ([(3,)], [(5,)])
    outcomes = query(db_url, "SELECT aweme_id, last_outcome, last_reason FROM share_links")
    assert sorted(outcomes) == [
        (REAL_VIDEO, "loaded", None),
        (REAL_DELETED, "gone", "gone: status_self_see"),
        (REAL_ALBUM, "loaded", None),
    ]


def test_a_video_an_album_and_a_deleted_work_land_as_from_the_fake(
    amagi: AmagiServer,
    douyin: DouyinStandIn,
    fake_server: Callable[..., ThreadedFake],
    db_url: str,
    tmp_path: Path,
) -> None:
    pool = WORKS[0:20]
    video, album = first_of_kind(VIDEO_DETAIL, pool), first_of_kind(ALBUM, pool)
    gone = next(i for i in pool if i not in (video, album))
    douyin.script(gone, Douyin.GONE)
    fake = fake_server(seed=SEED, faults=FaultConfig(gone_ids=frozenset({gone})))
    lines = [link(video), f"https://www.douyin.com/note/{album}", link(gone)]

    from_fake = ingest(fake.url, lines, tmp_path, db_url)
    assert from_fake.returncode == 0, from_fake.stderr
    expected = snapshot(db_url)
    empty_all_tables(db_url)
    from_amagi = ingest(amagi.url, lines, tmp_path, db_url)
    assert from_amagi.returncode == 0, from_amagi.stderr

    assert snapshot(db_url) == expected
    assert len(expected["works"]) == 2
    assert len(expected["share_links"]) == 3
    assert [r.answered for r in douyin.requests_for(gone)] == [Douyin.GONE]


# -- failures --------------------------------------------------------------------------------


def test_an_empty_douyin_body_is_an_expired_cookie(
    amagi: AmagiServer, douyin: DouyinStandIn, db_url: str, tmp_path: Path
) -> None:
    works = WORKS[20:26]
    for aweme_id in works:
        douyin.script(aweme_id, Douyin.EMPTY)
    result = ingest(amagi.url, [link(i) for i in works], tmp_path, db_url)
    assert result.returncode == 77, result.stderr  # README: operator action needed
    assert "cookie" in result.stderr
    assert query(db_url, "SELECT count(*) FROM works") == [(0,)]
    # An operator stop loses nothing: no link is recorded as failed for good.
    outcomes = query(db_url, "SELECT DISTINCT last_outcome FROM share_links")
    assert ("loaded",) not in outcomes
    assert ("gone",) not in outcomes
    assert ("invalid",) not in outcomes


@pytest.mark.parametrize(
    ("query_string", "problem"),
    [
        ("", "视频ID必须是字符串"),
        ("?aweme_id=", "视频ID不能为空"),
        ("?url=https://v.douyin.com/iMNpuGtC/", "视频ID必须是字符串"),
        ("?aweme_id=7071967230287744267&aweme_id=7071967230287744267", "视频ID必须是字符串"),
    ],
)
def test_a_bad_parameter_is_an_invalid_request(
    amagi: AmagiServer, query_string: str, problem: str
) -> None:
    """UPSTREAM.md §1.3: HTTP 400 is invalid input, recorded per link, never retried."""
    answer = http_get(amagi.url, f"/api/douyin/fetch_one_work{query_string}")
    assert answer.status == 400
    assert json.loads(answer.body)["errors"][0]["message"] == problem
    verdict = AmagiContract().classify(answer.status, answer.body, answer.headers)
    assert verdict.outcome is Outcome.INVALID
    assert verdict.reason == "upstream rejected the request (HTTP 400): 参数验证失败"


def test_the_seed_style_pointed_at_amagi_stops_with_a_hint(
    amagi: AmagiServer, db_url: str, tmp_path: Path
) -> None:
    """amagi has no seed route (HTML 404): the run stops at once, naming base URL and style."""
    works = WORKS[26:30]
    result = ingest(amagi.url, [link(i) for i in works], tmp_path, db_url, style="seed")
    assert result.returncode == 77, result.stderr
    assert "endpoint not found (HTTP 404)" in result.stderr
    assert "API style" in result.stderr
    assert query(db_url, "SELECT count(*) FROM works") == [(0,)]


def test_a_douyin_stall_past_amagis_timeout_is_retried(
    amagi: AmagiServer, douyin: DouyinStandIn, db_url: str, tmp_path: Path
) -> None:
    """amagi gives up on Douyin after its own 10 s and answers a bare failure: asked again, the
    work loads. (The client's own --timeout is longer, so the answer is amagi's, not a timeout.)"""
    stalled, other = WORKS[30], WORKS[31]
    douyin.script(stalled, Douyin.STALL, Douyin.BODY)
    result = ingest(amagi.url, [link(stalled), link(other)], tmp_path, db_url, "--timeout", "30")
    assert result.returncode == 0, result.stderr
    assert sorted(query(db_url, "SELECT aweme_id FROM works")) == sorted([(stalled,), (other,)])
    assert [r.answered for r in douyin.requests_for(stalled)] == [Douyin.STALL, Douyin.BODY]
    assert "timeout of 10000ms exceeded" in amagi.log_text()


def test_a_verification_page_reads_like_an_unreachable_douyin(
    amagi: AmagiServer, douyin: DouyinStandIn
) -> None:
    """amagi turns a non-JSON Douyin answer (a captcha page) into its bare failure envelope, the
    same one it sends when Douyin cannot be reached: a client cannot tell the two apart."""
    aweme_id = WORKS[32]
    douyin.script(aweme_id, Douyin.VERIFY)
    path = f"/api/douyin/fetch_one_work?aweme_id={aweme_id}"
    answer = http_get(amagi.url, path)
    assert answer.status == 200
    failed = {"success": False, "message": "抖音数据获取失败", "code": 500, "requestPath": path}
    assert json.loads(answer.body) == failed
