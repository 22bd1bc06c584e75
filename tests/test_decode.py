"""Strict decoding of upstream bodies: real payloads pass, hostile ones are refused with a reason
(permanent when the same bytes would come back, transient when the body is plainly cut off or
not JSON at all). Every hostile body is a real fixture with one thing changed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.flatten import flatten
from pipeline.upstream.contracts import AmagiContract, SeedContract
from pipeline.upstream.decode import MAX_DEPTH, BodyProblem, decode_body, too_large
from pipeline.upstream.outcomes import Outcome

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upstream"
VIDEO_ID = 7071967230287744267
VIDEO_BODY = (FIXTURES / f"video_detail_{VIDEO_ID}.json").read_bytes()
OK_AMAGI = (FIXTURES / "amagi_5.8.0_http_envelopes" / "ok_video.http200.json").read_bytes()
# A value inside the real body that we can swap for a hostile literal.
DIGG = b'"digg_count":'


def _with_value(body: bytes, literal: bytes) -> bytes:
    """The real body with the first `digg_count` value replaced by `literal`."""
    start = body.index(DIGG) + len(DIGG)
    while body[start : start + 1] == b" ":
        start += 1
    end = start
    while body[end : end + 1] not in (b",", b"}"):
        end += 1
    return body[:start] + literal + body[end:]


def _depth(doc: Any) -> int:
    if isinstance(doc, dict):
        return 1 + max((_depth(v) for v in doc.values()), default=0)
    if isinstance(doc, list):
        return 1 + max((_depth(v) for v in doc), default=0)
    return 0


def _seed_envelope(detail_body: bytes) -> bytes:
    return b'{"code":200,"message":"success","data":' + detail_body + b"}"


def test_every_real_fixture_decodes_exactly_like_the_standard_library() -> None:
    paths = sorted(FIXTURES.rglob("*.json"))
    assert len(paths) >= 10
    for path in paths:
        body = path.read_bytes()
        assert decode_body(body) == json.loads(body), path.name
        # The documented depth bound leaves room: real payloads, in the seed envelope, are 9.
        assert _depth(json.loads(_seed_envelope(body))) <= 9 < MAX_DEPTH


PERMANENT = [
    pytest.param(b"NaN", "NaN is not allowed", id="nan"),
    pytest.param(b"Infinity", "Infinity is not allowed", id="infinity"),
    pytest.param(b"-Infinity", "-Infinity is not allowed", id="minus-infinity"),
    pytest.param(b"1e400", "number out of range (1e400)", id="float-overflow"),
    pytest.param(b"-1e400", "number out of range (-1e400)", id="negative-float-overflow"),
    pytest.param(b"9" * 5000, "integer outside 64 bits", id="5000-digit-int"),
    pytest.param(b"18446744073709551616", "integer outside 64 bits", id="uint64-max-plus-1"),
    pytest.param(b"-9223372036854775809", "integer outside 64 bits", id="int64-min-minus-1"),
    pytest.param(b"[" * 65 + b"]" * 65, f"nested deeper than {MAX_DEPTH} levels", id="depth-65"),
    pytest.param(b"[" * 10_000 + b"]" * 10_000, "nested deeper than", id="depth-10k"),
    pytest.param(b"1 oops", "not valid JSON: Expecting", id="syntax-error-mid-body"),
]


@pytest.mark.parametrize(("literal", "reason"), PERMANENT)
def test_hostile_values_are_permanent_problems(literal: bytes, reason: str) -> None:
    problem = decode_body(_with_value(VIDEO_BODY, literal))
    assert isinstance(problem, BodyProblem)
    assert problem.permanent
    assert problem.reason.startswith("upstream body is not valid JSON: ")
    assert reason in problem.reason
    assert len(problem.reason) < 120


def test_64_bit_edges_and_tiny_floats_are_kept() -> None:
    for literal, value in (
        (b"18446744073709551615", 2**64 - 1),
        (b"-9223372036854775808", -(2**63)),
        (b"1.9e19", 1.9e19),  # a float this large is fine; only integer literals are bounded
        (b"1e-400", 0.0),
    ):
        doc = decode_body(_with_value(VIDEO_BODY, literal))
        assert not isinstance(doc, BodyProblem), literal
        assert doc["aweme_detail"]["statistics"]["digg_count"] == value


def test_depth_at_the_bound_is_kept() -> None:
    doc = decode_body(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH)
    assert not isinstance(doc, BodyProblem)


def test_gbk_body_is_permanent() -> None:
    text = VIDEO_BODY.decode("utf-8")
    # The real body has characters GBK cannot encode (emoji): keep the ones it can.
    gbk = text.encode("gbk", errors="ignore")
    problem = decode_body(gbk)
    assert isinstance(problem, BodyProblem)
    assert problem.permanent
    assert "not UTF-8 (byte " in problem.reason


TRANSIENT = [
    pytest.param(VIDEO_BODY[: len(VIDEO_BODY) // 2], "truncated", id="cut-in-half"),
    pytest.param(VIDEO_BODY[:-1], "truncated", id="last-brace-missing"),
    pytest.param(b"<html><body>502 Bad Gateway</body></html>", "not JSON", id="html-page"),
    pytest.param(b"Internal Server Error", "not JSON", id="plain-text"),
    pytest.param(b"", "empty body", id="empty"),
    pytest.param(b"  \r\n", "empty body", id="whitespace"),
]


@pytest.mark.parametrize(("body", "reason"), TRANSIENT)
def test_cut_off_or_non_json_bodies_stay_transient(body: bytes, reason: str) -> None:
    problem = decode_body(body)
    assert isinstance(problem, BodyProblem)
    assert not problem.permanent
    assert reason in problem.reason


def test_cut_inside_a_multibyte_character_is_truncation_not_bad_utf8() -> None:
    cut = VIDEO_BODY.index("的".encode()) + 1  # one byte into a 3-byte character
    problem = decode_body(VIDEO_BODY[:cut])
    assert problem == BodyProblem("upstream response is truncated", permanent=False)


def test_nul_and_lone_surrogates_are_kept_and_cleaned_by_flatten() -> None:
    """orjson refuses lone surrogate escapes; these bodies must still load."""
    doc = json.loads(VIDEO_BODY)
    desc = doc["aweme_detail"]["desc"]
    body = VIDEO_BODY.replace(
        json.dumps(desc, ensure_ascii=False).encode(),
        b'"nul\\u0000 lone\\ud83d low\\ude00 raw\x01tab ' + desc.encode() + b'"',
        1,
    )
    decoded = decode_body(body)
    assert not isinstance(decoded, BodyProblem)
    text = decoded["aweme_detail"]["desc"]
    assert text.startswith("nul\x00 lone\ud83d low\ude00 raw\x01tab ")
    work = flatten(decoded["aweme_detail"], datetime.now(UTC))
    assert work.work.aweme_id == VIDEO_ID
    assert work.work.description is not None
    assert "\x00" not in work.work.description
    work.work.description.encode("utf-8")  # no lone surrogate left: PostgreSQL can store it


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(_JSON_VALUES)
def test_any_storable_document_decodes_like_the_standard_library(value: Any) -> None:
    """Every JSON document within the rules round-trips (text includes lone surrogates)."""
    body = json.dumps({"v": value}).encode()
    assert decode_body(body) == json.loads(body)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_decode_never_raises(body: bytes) -> None:
    decode_body(b"{" + body)


def test_utf8_bom_is_ignored() -> None:
    assert decode_body(b"\xef\xbb\xbf" + VIDEO_BODY) == json.loads(VIDEO_BODY)


def test_too_large_reason() -> None:
    assert too_large(20 * 1024 * 1024) == BodyProblem("upstream body larger than 20 MiB", True)
    assert too_large(1000).reason == "upstream body larger than 1000 bytes"


# -- through the contracts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("style", "body"),
    [
        ("seed", _seed_envelope(_with_value(VIDEO_BODY, b"NaN"))),
        ("amagi", _with_value(OK_AMAGI, b"NaN")),
    ],
)
def test_contracts_classify_hostile_bodies_as_unusable(style: str, body: bytes) -> None:
    contract = SeedContract() if style == "seed" else AmagiContract()
    c = contract.classify(200, body, {})
    assert c.outcome is Outcome.UNUSABLE
    assert not c.outcome.retryable
    assert c.reason == "upstream body is not valid JSON: NaN is not allowed"
    assert c.detail is None


@pytest.mark.parametrize("style", ["seed", "amagi"])
def test_a_5xx_with_a_hostile_body_is_still_a_5xx(style: str) -> None:
    contract = SeedContract() if style == "seed" else AmagiContract()
    c = contract.classify(503, b'{"success": NaN}', {})
    assert c.outcome is Outcome.TRANSIENT
    assert "HTTP 503" in c.reason


@pytest.mark.parametrize("style", ["seed", "amagi"])
@pytest.mark.parametrize(
    ("location", "shown"),
    [
        ("http://u:pw@127.0.0.1:9/secret/path?token=abc", "to http://127.0.0.1:9;"),
        ("file:///etc/passwd", "to file:;"),
        ("/elsewhere?x=1", "to a path on the same host;"),
        ("//127.0.0.1:9/elsewhere", "to //127.0.0.1:9;"),
        (None, "without a Location;"),
    ],
)
def test_redirects_are_unusable_and_name_only_the_origin(
    style: str, location: str | None, shown: str
) -> None:
    contract = SeedContract() if style == "seed" else AmagiContract()
    headers = {"Location": location} if location else {}
    c = contract.classify(302, OK_AMAGI, headers)  # even with a usable body
    assert c.outcome is Outcome.UNUSABLE
    assert c.reason.startswith("upstream redirected (HTTP 302) ")
    assert shown in c.reason
    for secret in ("pw", "secret", "token", "passwd", "elsewhere"):
        assert secret not in c.reason
