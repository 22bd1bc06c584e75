"""Run-level signals, pure parts: the scope and cause of every answer, and the streak rules."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.upstream.contracts import AmagiContract, SeedContract
from pipeline.upstream.outcomes import Cause, Outcome
from pipeline.upstream.signals import (
    OPERATOR_CAUSES,
    STREAK_MIN,
    THROTTLE_LIMIT,
    Failure,
    Scope,
    ServiceWatch,
    operator_stop,
    redact_url,
    scope_of,
)

ENVELOPES = Path(__file__).resolve().parent / "fixtures" / "upstream" / "amagi_5.8.0_http_envelopes"

# The scope of every real amagi envelope. "cannot reach Douyin" (enotfound) and a stall
# (timeout) are one attempt's failure each: only a streak of them concerns the service.
ENVELOPE_SCOPE = {
    "ok_video": (Scope.LINK, None),
    "ok_album": (Scope.LINK, None),
    "deleted": (Scope.LINK, None),
    "missing_param": (Scope.LINK, None),
    "url_param": (Scope.LINK, None),
    "empty_param": (Scope.LINK, None),
    "empty_body": (Scope.SERVICE, Cause.COOKIE),
    "status8": (Scope.ATTEMPT, None),
    "null_detail": (Scope.ATTEMPT, None),
    "timeout": (Scope.ATTEMPT, None),
    "enotfound": (Scope.ATTEMPT, None),
}


def _amagi_failure(message: str, description: str | None = None) -> bytes:
    """amagi's failure envelope: Douyin's status_msg relayed as `message`; an `error` object
    only when amagi built one (then with a signed requestUrl that must never be kept)."""
    doc: dict[str, object] = {"success": False, "message": message, "code": 500}
    if description is not None:
        doc["error"] = {
            "errorDescription": description,
            "requestType": "聚合解析",
            "requestUrl": "https://www.douyin.com/aweme/v1/web/aweme/detail/?a_bogus=SIGNED&msToken=x",
        }
    doc["requestPath"] = "/api/douyin/fetch_one_work?aweme_id=7071967230287744267"
    return json.dumps(doc, ensure_ascii=False).encode()


def _seed_failure(code: int, message: str) -> bytes:
    return json.dumps({"code": code, "message": message, "data": None}, ensure_ascii=False).encode()


@pytest.mark.parametrize("path", sorted(ENVELOPES.glob("*.json")), ids=lambda p: p.name)
def test_every_real_envelope_has_a_scope(path: Path) -> None:
    case, status = path.name.removesuffix(".json").split(".http")
    c = AmagiContract().classify(int(status), path.read_bytes(), {})
    assert (c.scope, c.cause) == ENVELOPE_SCOPE[case]


# The wording amagi itself uses for these situations (its Bilibili error-code map and its
# Douyin log lines; no captured Douyin answer shows them for the detail endpoint).
@pytest.mark.parametrize(
    ("message", "outcome", "cause"),
    [
        ("请求过于频繁，请稍后再试", Outcome.RATE_LIMITED, Cause.THROTTLED),
        ("访问频次异常，请勿频繁操作", Outcome.RATE_LIMITED, Cause.THROTTLED),
        ("验证码错误", Outcome.OPERATOR, Cause.VERIFICATION),
        ("请求被拦截 (客户端 ip 被服务端风控)", Outcome.OPERATOR, Cause.VERIFICATION),
        ("风控校验失败 (UA 或 wbi 参数不合法)", Outcome.OPERATOR, Cause.SIGNATURE),
        ("签名生成失败: boom", Outcome.OPERATOR, Cause.SIGNATURE),
        ("抖音数据获取失败", Outcome.TRANSIENT, None),
    ],
)
def test_service_wide_wording_in_both_styles(
    message: str, outcome: Outcome, cause: Cause | None
) -> None:
    for c in (
        AmagiContract().classify(200, _amagi_failure(message), {}),
        SeedContract().classify(200, _seed_failure(503, message), {}),
    ):
        assert (c.outcome, c.cause) == (outcome, cause)
        assert message.split(" ")[0] in c.reason  # the service's own words are kept
        expected = Scope.SERVICE if cause is not None else Scope.ATTEMPT
        assert scope_of(c.outcome, c.cause) is expected


def test_a_bad_parameter_is_not_a_verification_challenge() -> None:
    # 参数验证失败 ("parameter validation failed") contains 验证 but is one link's problem.
    body = (ENVELOPES / "missing_param.http400.json").read_bytes()
    c = AmagiContract().classify(400, body, {})
    assert (c.outcome, c.cause) == (Outcome.INVALID, None)


def test_the_error_description_survives_in_the_reason_without_the_signed_url() -> None:
    # amagi's own description for an error it could not name (its UNKNOWN_ERROR path).
    body = _amagi_failure("抖音数据获取失败", "未知错误")
    c = AmagiContract().classify(200, body, {})
    assert c.outcome is Outcome.TRANSIENT
    assert c.reason == "upstream reported a failure: 抖音数据获取失败 | 未知错误"
    assert not any(mark in c.reason for mark in ("requestUrl", "a_bogus", "msToken", "https://"))


def test_any_filter_reason_amagi_relays_is_gone() -> None:
    # amagi writes 原因：<filter_reason> for every Douyin filter_detail, not only status_*.
    body = _amagi_failure("抖音数据获取失败", "获取响应数据失败！原因：item_not_exist！")
    c = AmagiContract().classify(200, body, {})
    assert (c.outcome, c.reason) == (Outcome.GONE, "gone: item_not_exist")
    assert not any(mark in c.reason for mark in ("requestUrl", "a_bogus", "msToken", "https://"))


def test_http_status_answers_carry_their_cause() -> None:
    answers = ((401, Cause.TOKEN_REJECTED), (404, Cause.ENDPOINT), (429, Cause.THROTTLED))
    for status, cause in answers:
        for contract in (AmagiContract(), SeedContract()):
            assert contract.classify(status, b"", {}).cause is cause
    assert SeedContract().classify(502, b"", {}).cause is None  # one attempt's failure


def test_operator_causes_are_the_ones_that_need_a_person() -> None:
    assert {
        Cause.COOKIE,
        Cause.TOKEN_REJECTED,
        Cause.ENDPOINT,
        Cause.VERIFICATION,
        Cause.SIGNATURE,
    } == OPERATOR_CAUSES
    stop = operator_stop(Cause.COOKIE, "cookie gone", "http://127.0.0.1:4567")
    assert stop.needs_operator
    assert "http://127.0.0.1:4567" in stop.message
    assert "cookie" in stop.message


# -- the streak ---------------------------------------------------------------------------------


def _fail_works(watch: ServiceWatch, works: list[str], reason: str = "x") -> list[object]:
    return [watch.failed(w, Failure.SERVICE, reason) for w in works]


def test_the_same_failure_for_different_works_that_outlasts_a_retry_stops_the_run() -> None:
    watch = ServiceWatch("http://svc", "https://v.douyin.com")
    failure = "upstream reported a failure: 抖音数据获取失败"
    # A burst of 32 requests in flight failing together is not enough on its own...
    assert _fail_works(watch, [f"w{i}" for i in range(32)], failure) == [None] * 32
    # ...one of them failing again after its backoff is.
    stop = watch.failed("w3", Failure.SERVICE, failure)
    assert stop is not None
    assert stop.cause is Cause.DOUYIN_UNREACHABLE
    assert not stop.needs_operator
    assert "32 links in a row (33 requests)" in stop.message
    assert "抖音数据获取失败" in stop.message
    assert "http://svc" in stop.message
    assert "service's log" in stop.message


def test_retries_of_a_few_works_are_not_a_streak() -> None:
    watch = ServiceWatch("http://svc", "https://v.douyin.com")
    for _ in range(100):
        assert _fail_works(watch, [f"w{i}" for i in range(STREAK_MIN - 1)]) == [None] * 7
    assert watch.failed("w-last", Failure.SERVICE, "x") is not None  # the 8th work


def test_without_retries_twice_as_many_works_stand_in_for_the_retry() -> None:
    watch = ServiceWatch("http://svc", "https://v.douyin.com", retries=False)
    stops = _fail_works(watch, [f"w{i}" for i in range(2 * STREAK_MIN)])
    assert stops[:-1] == [None] * (2 * STREAK_MIN - 1)
    assert stops[-1] is not None


def test_a_success_or_another_failure_ends_the_streak() -> None:
    watch = ServiceWatch("http://svc", "https://v.douyin.com")
    works = [f"a{i}" for i in range(STREAK_MIN - 1)]
    assert _fail_works(watch, works + works[:1]) == [None] * STREAK_MIN
    watch.success()
    assert _fail_works(watch, [f"b{i}" for i in range(STREAK_MIN - 1)] + ["b0"]) == [None] * 8
    assert watch.failed("c", Failure.SERVICE, "y") is None  # another answer: a new streak
    assert _fail_works(watch, ["b1", "b2"]) == [None, None]


def test_no_answer_and_short_link_streaks_name_what_to_check() -> None:
    watch = ServiceWatch("http://svc:1", "http://127.0.0.1:9 (--resolve-base)", retries=False)
    stop = None
    for i in range(2 * STREAK_MIN):  # different transport errors are still "no answer"
        stop = watch.failed(f"w{i}", Failure.NO_ANSWER, f"connection error (E{i % 2})")
    assert stop is not None
    assert stop.cause is Cause.SERVICE_DOWN
    assert "did not answer" in stop.message
    assert "http://svc:1" in stop.message
    watch.success()
    for i in range(2 * STREAK_MIN):
        stop = watch.failed(f"s{i}", Failure.SHORT_LINK, "short link lookup failed (HTTP 503)")
    assert stop is not None
    assert stop.cause is Cause.SHORT_LINKS
    assert "--resolve-base" in stop.message
    assert "127.0.0.1:9" in stop.message
    assert "did not answer" not in stop.message


def test_the_same_5xx_for_many_works_is_a_failing_service_not_douyin() -> None:
    watch = ServiceWatch("http://svc", "https://v.douyin.com", retries=False)
    stops = [
        watch.failed(f"w{i}", Failure.HTTP_ERROR, "upstream error (HTTP 502)")
        for i in range(2 * STREAK_MIN)
    ]
    stop = stops[-1]
    assert stop is not None
    assert stop.cause is Cause.SERVICE_FAILING
    assert "HTTP 502" in stop.message
    assert "Douyin" not in stop.message


def test_throttling_stops_only_after_many_cool_downs_in_a_row() -> None:
    watch = ServiceWatch("http://svc", "https://v.douyin.com")
    for _ in range(THROTTLE_LIMIT - 1):
        assert watch.throttled("the service") is None
    watch.success()
    assert watch.throttle_streak == 0
    stops = [watch.throttled("the service") for _ in range(THROTTLE_LIMIT)]
    final = stops[-1]
    assert final is not None
    assert final.cause is Cause.THROTTLED
    assert not final.needs_operator


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://user:pw@127.0.0.1:4567/api/?token=x#f", "http://127.0.0.1:4567/api"),
        ("https://svc.example/", "https://svc.example"),
        ("http://[::1]:8000", "http://[::1]:8000"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown
