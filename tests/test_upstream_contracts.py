"""Contract classification: every real amagi envelope, and seed shapes built from real bodies."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest

from pipeline.upstream.contracts import AmagiContract, SeedContract
from pipeline.upstream.outcomes import Outcome
from pipeline.upstream.resolve import aweme_id_from_url, is_douyin_host, request_url
from pipeline.upstream.retry import RetryPolicy, parse_retry_after

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upstream"
ENVELOPES = FIXTURES / "amagi_5.8.0_http_envelopes"
VIDEO_ID = 7071967230287744267
ALBUM_ID = 7232626237586312485
DELETED_ID = 7223326284024139065

# Every envelope file must be listed: a new fixture fails here until someone decides its class.
AMAGI_EXPECTED: dict[str, tuple[Outcome, str, int | None]] = {
    "ok_video": (Outcome.OK, "", VIDEO_ID),
    "ok_album": (Outcome.OK, "", ALBUM_ID),
    "deleted": (Outcome.GONE, "gone: status_self_see", None),
    "empty_body": (Outcome.OPERATOR, "cookie is missing or expired", None),
    "status8": (Outcome.TRANSIENT, "mock status 8", None),
    "null_detail": (Outcome.TRANSIENT, "upstream returned no detail", None),
    "timeout": (Outcome.TRANSIENT, "upstream reported a failure", None),
    "enotfound": (Outcome.TRANSIENT, "upstream reported a failure", None),
    "missing_param": (Outcome.INVALID, "HTTP 400", None),
    "url_param": (Outcome.INVALID, "HTTP 400", None),
    "empty_param": (Outcome.INVALID, "HTTP 400", None),
}
SECRET_MARKS = ("requestUrl", "msToken", "a_bogus", "verifyFp", "http://", "https://")


def _load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def _dump(doc: object) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


def test_every_envelope_fixture_is_listed() -> None:
    names = {p.name.split(".http")[0] for p in ENVELOPES.glob("*.json")}
    assert names == set(AMAGI_EXPECTED)


@pytest.mark.parametrize("path", sorted(ENVELOPES.glob("*.json")), ids=lambda p: p.name)
def test_amagi_envelopes(path: Path) -> None:
    case, status = path.name.removesuffix(".json").split(".http")
    outcome, reason_part, aweme_id = AMAGI_EXPECTED[case]
    c = AmagiContract().classify(int(status), path.read_bytes(), {})
    assert c.outcome is outcome
    assert reason_part in c.reason
    assert (c.reason == "") is (outcome is Outcome.OK)
    assert not any(mark in c.reason for mark in SECRET_MARKS)
    if outcome is Outcome.OK:
        assert c.detail is not None
        assert c.detail["aweme_id"] == str(aweme_id)
        assert c.aweme_id == aweme_id
    else:
        assert c.detail is None


def _seed_cases() -> list[tuple[str, int, bytes, Outcome, str, int | None]]:
    video = _load(f"video_detail_{VIDEO_ID}.json")
    deleted = _load(f"deleted_filter_detail_{DELETED_ID}.json")
    album_item = _load(f"album_postlist_{ALBUM_ID}.json")["aweme_list"][0]
    album = {"aweme_detail": album_item, "log_pb": {}, "status_code": 0}

    def env(code: int, data: object, message: str = "success") -> bytes:
        return _dump({"code": code, "message": message, "data": data})

    ok_body = env(200, video)
    return [
        ("ok code 200", 200, ok_body, Outcome.OK, "", VIDEO_ID),
        ("ok code 0", 200, env(0, video), Outcome.OK, "", VIDEO_ID),
        ("ok album", 200, env(0, album), Outcome.OK, "", ALBUM_ID),
        ("deleted", 200, env(200, deleted), Outcome.GONE, "gone: status_self_see", DELETED_ID),
        (
            "code 503 data null",
            200,
            env(503, None, "服务繁忙"),
            Outcome.TRANSIENT,
            "code 503",
            None,
        ),
        ("data null", 200, env(200, None), Outcome.TRANSIENT, "no detail", None),
        (
            "null detail",
            200,
            env(200, {"aweme_detail": None, "status_code": 0}),
            Outcome.TRANSIENT,
            "no detail",
            None,
        ),
        (
            "cookie empty",
            200,
            env(500, None, "获取响应数据失败！接口返回内容为空，你的抖音ck可能已经失效！"),
            Outcome.OPERATOR,
            "cookie",
            None,
        ),
        (
            "cookie english",
            200,
            env(400, None, "Cookie expired, please update it"),
            Outcome.OPERATOR,
            "cookie",
            None,
        ),
        ("code 429", 200, env(429, None, "too many"), Outcome.RATE_LIMITED, "rate limited", None),
        ("code 401", 200, env(401, None), Outcome.OPERATOR, "token", None),
        ("code 400", 200, env(400, None, "bad url"), Outcome.INVALID, "bad url", None),
        ("http 400", 400, env(400, None, "invalid url"), Outcome.INVALID, "HTTP 400", None),
        (
            "http 401",
            401,
            b"",
            Outcome.OPERATOR,
            "upstream rejected the API token (HTTP 401)",
            None,
        ),
        ("http 403", 403, b"{}", Outcome.OPERATOR, "(HTTP 403)", None),
        ("http 404", 404, b"Not Found", Outcome.OPERATOR, "endpoint not found", None),
        ("http 429", 429, b"", Outcome.RATE_LIMITED, "HTTP 429", None),
        ("http 500", 500, b"<html>", Outcome.TRANSIENT, "HTTP 500", None),
        ("http 502", 502, ok_body, Outcome.TRANSIENT, "HTTP 502", None),
        ("truncated", 200, ok_body[: len(ok_body) // 2], Outcome.TRANSIENT, "truncated", None),
        ("non-json", 200, b"<html>oops</html>", Outcome.TRANSIENT, "is not JSON", None),
        ("empty", 200, b"", Outcome.TRANSIENT, "empty body", None),
        ("json list", 200, b"[1, 2]", Outcome.TRANSIENT, "malformed JSON", None),
    ]


@pytest.mark.parametrize(
    ("status", "body", "outcome", "reason_part", "aweme_id"),
    [case[1:] for case in _seed_cases()],
    ids=[case[0] for case in _seed_cases()],
)
def test_seed_shapes(
    status: int, body: bytes, outcome: Outcome, reason_part: str, aweme_id: int | None
) -> None:
    c = SeedContract().classify(status, body, {})
    assert c.outcome is outcome
    assert reason_part in c.reason
    assert (c.detail is not None) is (outcome is Outcome.OK)
    assert c.aweme_id == aweme_id


def test_amagi_decides_on_success_not_status() -> None:
    ok = (ENVELOPES / "ok_video.http200.json").read_bytes()
    assert AmagiContract().classify(500, ok, {}).outcome is Outcome.OK
    gone = (ENVELOPES / "deleted.http200.json").read_bytes()
    assert AmagiContract().classify(500, gone, {}).outcome is Outcome.GONE
    # A bare HTTP 500 (the service itself threw) is transient; 429 is honoured on any body.
    assert AmagiContract().classify(500, b"Internal", {}).outcome is Outcome.TRANSIENT
    limited = AmagiContract().classify(429, ok, {"Retry-After": "3"})
    assert (limited.outcome, limited.retry_after) == (Outcome.RATE_LIMITED, 3.0)


def test_amagi_gone_from_success_true_with_filter_detail() -> None:
    deleted = _load(f"deleted_filter_detail_{DELETED_ID}.json")
    body = _dump({"success": True, "data": deleted, "message": "获取成功", "code": 200})
    c = AmagiContract().classify(200, body, {})
    assert (c.outcome, c.reason, c.aweme_id) == (Outcome.GONE, "gone: status_self_see", DELETED_ID)


def test_retry_after_seconds_and_http_date() -> None:
    assert SeedContract().classify(429, b"", {"Retry-After": "7"}).retry_after == 7.0
    now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    header = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after(header, now) == pytest.approx(30.0)
    assert parse_retry_after(format_datetime(now - timedelta(seconds=5), usegmt=True), now) == 0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert RetryPolicy(max_retry_after_s=60).cap_retry_after(3600) == 60


def test_backoff_is_capped_full_jitter() -> None:
    import random

    policy = RetryPolicy(retries=9, backoff_base_s=0.5, backoff_max_s=4.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)]:
        samples = [policy.backoff(attempt, rng) for _ in range(200)]
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > 0.8 * ceiling  # jitter spans the range, not a fixed delay
    with pytest.raises(ValueError, match="retries"):
        RetryPolicy(retries=-1)


def test_amagi_needs_an_id() -> None:
    class Link:
        url = "https://v.douyin.com/abc/"
        aweme_id = None

    with pytest.raises(ValueError, match="aweme_id"):
        AmagiContract().build_request(Link(), None)  # type: ignore[arg-type]
    assert AmagiContract().build_request(Link(), 7) == (  # type: ignore[arg-type]
        "/api/douyin/fetch_one_work",
        {"aweme_id": "7"},
    )
    assert SeedContract().build_request(Link(), None) == (  # type: ignore[arg-type]
        "/douyin/fetch_one_work",
        {"url": "https://v.douyin.com/abc/"},
    )


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            f"https://www.iesdouyin.com/share/video/{VIDEO_ID}/?region=CN&mid=7049808807056149285",
            VIDEO_ID,
        ),
        ("https://www.iesdouyin.com/share/video/?region=CN&mid=7049808807056149285", None),
        (f"https://www.douyin.com/video/{VIDEO_ID}", VIDEO_ID),
        (f"https://www.douyin.com/note/{ALBUM_ID}", ALBUM_ID),
        (f"https://www.iesdouyin.com/share/slides/{ALBUM_ID}/", ALBUM_ID),
        (f"https://www.douyin.com/discover?modal_id={VIDEO_ID}", VIDEO_ID),
        (f"https://www.douyin.com/user/MS4wLjABAAAA?vid={VIDEO_ID}", VIDEO_ID),
        ("https://v.douyin.com/iMNpuGtC/", None),
    ],
)
def test_aweme_id_from_url(url: str, expected: int | None) -> None:
    assert aweme_id_from_url(url) == expected


def test_douyin_hosts_and_request_urls() -> None:
    assert is_douyin_host("v.douyin.com")
    assert is_douyin_host("www.iesdouyin.com")
    assert is_douyin_host("douyin.com")
    assert not is_douyin_host("douyin.com.evil.example")
    assert not is_douyin_host("notdouyin.com")
    assert not is_douyin_host(None)
    base = "http://127.0.0.1:9/"
    assert request_url("https://v.douyin.com/abc/", base) == "http://127.0.0.1:9/abc/"
    assert request_url("https://v.douyin.com/abc/", None) == "https://v.douyin.com/abc/"
    # Douyin's other hosts are never requested: a Location there is only read for its id.
    assert request_url("https://www.douyin.com/video/1", base) is None
    assert request_url("https://www.iesdouyin.com/share/video/1/", None) is None
