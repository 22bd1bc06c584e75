"""The hostile answers of the fake upstream are what they claim to be, on the wire: the
reliability tests prove nothing if a "gzip bomb" is small or a "NaN" body is clean JSON."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from pipeline.testing import hostile
from pipeline.testing.fake_upstream import AMAGI_PATH, SEED_PATH, FakeUpstream, FaultConfig
from pipeline.testing.hostile import Hostile, other_work_id
from pipeline.testing.payloads import sample_aweme_ids

SEED = 21
IDS = sample_aweme_ids(len(Hostile) + 1, seed=SEED)
KIND_ID = dict(zip(Hostile, IDS, strict=False))
GOOD_ID = IDS[-1]
LISTENER = "http://127.0.0.1:9"
API_KINDS = [k for k in Hostile if not k.on_short_link]


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    faults = FaultConfig(hostile={i: k for k, i in KIND_ID.items()}, redirect_target=LISTENER)
    async with FakeUpstream(seed=SEED, faults=faults) as upstream:
        await upstream.start()
        yield upstream


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as session:
        yield session


def _strict(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


async def _ask(
    http: aiohttp.ClientSession, fake: FakeUpstream, style: str, aweme_id: int
) -> tuple[int, dict[str, str], bytes]:
    if style == "amagi":
        path, params = AMAGI_PATH, {"aweme_id": str(aweme_id)}
    else:
        path, params = SEED_PATH, {"url": f"https://www.douyin.com/video/{aweme_id}"}
    url = f"{fake.base_url}{path}"
    async with http.get(url, params=params, allow_redirects=False) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def _detail(style: str, body: bytes) -> Any:
    doc = json.loads(body)
    assert (doc["success"] is True) if style == "amagi" else (doc["code"] == 0)
    return doc["data"]["aweme_detail"]


def _raw_texts(detail: dict[str, Any]) -> list[str]:
    tags = [e["hashtag_name"] for e in detail.get("text_extra") or [] if e.get("type") == 1]
    music = detail["music"]["title"] if detail.get("music") else ""
    return [detail["desc"], detail["author"]["nickname"], music, *tags]


# What each API kind looks like once received: (status, headers, body, asked id) -> None.
def _check_not_json(token: str) -> Callable[[str, dict[str, str], bytes, int], None]:
    def check(style: str, headers: dict[str, str], body: bytes, aweme_id: int) -> None:
        text = body.decode()
        assert token in text
        assert str(aweme_id) in text  # the right work, spoiled
        with pytest.raises(ValueError, match="not JSON"):
            _strict(text)

    return check


def _check_huge_float(style: str, headers: dict[str, str], body: bytes, aweme_id: int) -> None:
    assert b"1e400" in body
    assert _detail(style, body)["statistics"]["share_count"] == float("inf")


def _check_deep(style: str, headers: dict[str, str], body: bytes, aweme_id: int) -> None:
    assert b"[" * hostile.NESTING_DEPTH + b"]" in body
    with pytest.raises(RecursionError):
        json.loads(body)


def _check_moderate(style: str, headers: dict[str, str], body: bytes, aweme_id: int) -> None:
    depth = hostile.MODERATE_NESTING_DEPTH
    assert b"[" * depth + b"]" in body
    assert _detail(style, body)["video_tag"] == json.loads("[" * depth + "]" * depth)


def _check_long_int(style: str, headers: dict[str, str], body: bytes, aweme_id: int) -> None:
    assert b"9" * hostile.LONG_INT_DIGITS in body
    with pytest.raises(ValueError, match="digits"):
        json.loads(body)  # Python's own int-string limit (4,300 digits)


def _check_huge(style: str, headers: dict[str, str], body: bytes, aweme_id: int) -> None:
    assert len(body) >= hostile.HUGE_BODY_BYTES - 3
    assert _detail(style, body)["aweme_id"] == str(aweme_id)


def _check_gzip(style: str, headers: dict[str, str], body: bytes, aweme_id: int) -> None:
    assert headers["Content-Encoding"] == "gzip"
    assert len(body) < 2 * 1024 * 1024
    unpacked = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(body, 64 * 1024 * 1024)
    assert len(unpacked) == 64 * 1024 * 1024  # and more where that came from
    assert unpacked.startswith(b'{"code":0,"message":"   ')


def _check_gbk(style: str, headers: dict[str, str], body: bytes, aweme_id: int) -> None:
    with pytest.raises(UnicodeDecodeError):
        body.decode("utf-8")
    assert json.loads(body.decode("gbk"))["data"]["aweme_detail"]["aweme_id"] == str(aweme_id)


def _check_types(
    check: Callable[[Any], bool],
) -> Callable[[str, dict[str, str], bytes, int], None]:
    def inner(style: str, headers: dict[str, str], body: bytes, aweme_id: int) -> None:
        assert check(_detail(style, body))

    return inner


def _check_texts(bad: str) -> Callable[[str, dict[str, str], bytes, int], None]:
    def inner(style: str, headers: dict[str, str], body: bytes, aweme_id: int) -> None:
        texts = _raw_texts(_detail(style, body))
        assert all(bad in t for t in texts if t), texts

    return inner


def _check_other(style: str, headers: dict[str, str], body: bytes, aweme_id: int) -> None:
    other = str(other_work_id(aweme_id, seed=SEED))
    assert _detail(style, body)["aweme_id"] == other != str(aweme_id)


def _check_gone_other(style: str, headers: dict[str, str], body: bytes, aweme_id: int) -> None:
    data = json.loads(body)["data"]
    assert data["aweme_detail"] is None
    assert data["filter_detail"]["aweme_id"] == str(other_work_id(aweme_id, seed=SEED))


def _check_location(
    expected: Callable[[str, int], str],
) -> Callable[[str, dict[str, str], bytes, int], None]:
    def inner(style: str, headers: dict[str, str], body: bytes, aweme_id: int) -> None:
        assert headers["Location"] == expected(style, aweme_id)

    return inner


def _other_api(style: str, aweme_id: int) -> str:
    other = other_work_id(aweme_id, seed=SEED)
    if style == "amagi":
        return f"{AMAGI_PATH}?aweme_id={other}"
    return f"{SEED_PATH}?url=https://www.douyin.com/video/{other}"


def _off_host(style: str, aweme_id: int) -> str:
    if style == "amagi":
        return f"{LISTENER}{AMAGI_PATH}?aweme_id={aweme_id}"
    return f"{LISTENER}{SEED_PATH}?url=https://www.douyin.com/video/{aweme_id}"


_STATUS = {
    Hostile.REDIRECT_OTHER_WORK: 302,
    Hostile.REDIRECT_OFF_HOST: 302,
    Hostile.REDIRECT_FILE: 302,
}
CHECKS: dict[Hostile, Callable[[str, dict[str, str], bytes, int], None]] = {
    Hostile.NAN: _check_not_json("NaN"),
    Hostile.INFINITY: _check_not_json("Infinity"),
    Hostile.HUGE_FLOAT: _check_huge_float,
    Hostile.DEEP_NESTING: _check_deep,
    Hostile.MODERATE_NESTING: _check_moderate,
    Hostile.HUGE_BODY: _check_huge,
    Hostile.HUGE_BODY_CHUNKED: _check_huge,
    Hostile.GZIP_BOMB: _check_gzip,
    Hostile.UNDECODABLE: _check_gbk,
    Hostile.LONG_INT: _check_long_int,
    Hostile.DETAIL_LIST: _check_types(lambda d: isinstance(d, list) and isinstance(d[0], dict)),
    Hostile.DETAIL_STRING: _check_types(lambda d: isinstance(json.loads(d), dict)),
    Hostile.WRONG_PART_TYPES: _check_types(
        lambda d: (
            isinstance(d["statistics"], str)
            and isinstance(d["author"], int)
            and isinstance(d["text_extra"], str)
            and isinstance(d["video"], str)
        )
    ),
    Hostile.DEGRADED: _check_types(
        lambda d: d["author"] is None and d["music"] is None and "desc" not in d
    ),
    Hostile.HUGE_INTS: _check_types(lambda d: d["statistics"]["digg_count"] >= 10**30),
    Hostile.NEGATIVE_INTS: _check_types(
        lambda d: d["statistics"]["digg_count"] < 0 > d["duration"]
    ),
    Hostile.NUL_CHARS: _check_texts("\x00"),
    Hostile.LONE_SURROGATES: _check_texts("\ud83d"),
    Hostile.CONTROL_CHARS: _check_texts("\x1b"),
    Hostile.OTHER_WORK: _check_other,
    Hostile.GONE_OTHER_WORK: _check_gone_other,
    Hostile.REDIRECT_OTHER_WORK: _check_location(_other_api),
    Hostile.REDIRECT_OFF_HOST: _check_location(_off_host),
    Hostile.REDIRECT_FILE: _check_location(lambda style, i: "file:///etc/passwd"),
}


@pytest.mark.parametrize("style", ["seed", "amagi"])
@pytest.mark.parametrize("kind", [k for k in API_KINDS if k is not Hostile.SLOW_DRIP])
async def test_each_api_kind_is_hostile_on_the_wire(
    fake: FakeUpstream, http: aiohttp.ClientSession, style: str, kind: Hostile
) -> None:
    aweme_id = KIND_ID[kind]
    status, headers, body = await _ask(http, fake, style, aweme_id)
    assert status == _STATUS.get(kind, 200)
    CHECKS[kind](style, headers, body, aweme_id)
    assert [r.outcome for r in fake.served] == [kind.value]


async def test_a_good_work_among_hostile_ones_is_answered_normally(
    fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    status, _, body = await _ask(http, fake, "seed", GOOD_ID)
    assert status == 200
    assert _strict(body.decode())["data"]["aweme_detail"]["aweme_id"] == str(GOOD_ID)


async def test_slow_drip_sends_headers_then_trickles_past_a_timeout(fake: FakeUpstream) -> None:
    url = f"{fake.base_url}{AMAGI_PATH}?aweme_id={KIND_ID[Hostile.SLOW_DRIP]}"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert (resp.content_length or 0) > 1000
        got = bytearray()

        async def read_all() -> None:
            while chunk := await resp.content.read(1024):
                got.extend(chunk)

        with pytest.raises(TimeoutError):
            await asyncio.wait_for(read_all(), 1.0)
        assert 0 < len(got) < 100  # a few bytes, never the body


async def test_short_link_kinds_redirect_where_they_claim(
    fake: FakeUpstream, http: aiohttp.ClientSession
) -> None:
    off_host = KIND_ID[Hostile.SHORT_LINK_OFF_HOST]
    expected = {
        Hostile.SHORT_LINK_OFF_HOST: f"{LISTENER}/share/video/{off_host}/",
        Hostile.SHORT_LINK_DOT_SEGMENTS: "https://v.douyin.com/%2e%2e/escaped/",
    }
    for kind, location in expected.items():
        code = fake.short_link(KIND_ID[kind]).rsplit("/", 2)[1]
        for path in (f"/{code}/", f"/sl/{code}/"):
            async with http.get(fake.base_url + path, allow_redirects=False) as resp:
                assert (resp.status, resp.headers["Location"]) == (302, location)
    # and the API answers them normally: the kind belongs to the short link only
    status, _, body = await _ask(http, fake, "amagi", KIND_ID[Hostile.SHORT_LINK_OFF_HOST])
    assert status == 200
    assert _strict(body.decode())["success"] is True


def test_other_work_id_is_stable_and_never_the_work_itself() -> None:
    for aweme_id in IDS:
        other = other_work_id(aweme_id, seed=SEED)
        assert other != aweme_id
        assert other == other_work_id(aweme_id, seed=SEED)
