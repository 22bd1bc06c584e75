"""Spoiled JSON documents for `pipeline.testing.hostile`: the work asked for, built from the
real templates of `payloads` in the contract's own envelope, then spoiled in one way.

Values JSON cannot carry as Python objects (`NaN`, `1e400`, a 5,000-digit integer, 10,000
brackets, a lone surrogate escape) are spliced into the serialised text in place of a marker.
Every function is pure: same context, same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.testing import payloads

NESTING_DEPTH = 10_000
MODERATE_NESTING_DEPTH = 600  # parses in Python; deeper than the audit's ~500-level wedge
LONG_INT_DIGITS = 5_000
MARK = "__HOSTILE__"


@dataclass(frozen=True)
class Context:
    """The request a hostile answer is for, and what it needs to build one."""

    style: str  # "seed" or "amagi"
    aweme_id: int  # the work asked for
    seed: int
    sim_t: float
    author_pool: int
    path: str  # raw path + query, echoed by amagi as `requestPath`
    redirect_target: str | None  # base URL of a listener that must never be reached


def other_work_id(aweme_id: int, *, seed: int) -> int:
    """The work a hostile answer for `aweme_id` names instead (deterministic, never equal)."""
    span = payloads.MAX_CREATE_TIME - payloads.MIN_CREATE_TIME
    h = payloads.hash64(seed, aweme_id, "hostile-other")
    other = payloads.make_aweme_id(payloads.MIN_CREATE_TIME + h % span, (h >> 32) % 2**32)
    return other if other != aweme_id else other + 1


def data(ctx: Context, aweme_id: int | None = None) -> dict[str, Any]:
    """The raw Douyin body for a work, as the real templates give it."""
    return payloads.make_detail_data(
        aweme_id or ctx.aweme_id, seed=ctx.seed, sim_t=ctx.sim_t, author_pool=ctx.author_pool
    )


def envelope(ctx: Context, raw: Any) -> dict[str, Any]:
    if ctx.style == "amagi":
        return {
            "success": True, "data": payloads.js_number_view(raw), "message": "获取成功",
            "code": 200, "requestPath": ctx.path,
        }  # fmt: skip
    return {"code": 0, "message": "success", "data": raw}


def dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def ok(ctx: Context, raw: dict[str, Any]) -> bytes:
    return dumps(envelope(ctx, raw)).encode()


def _spliced(ctx: Context, spoil: Callable[[dict[str, Any]], None], literal: str) -> bytes:
    """The work with `spoil` putting the marker somewhere, then the quoted marker replaced by
    `literal`, verbatim."""
    raw = data(ctx)
    spoil(raw["aweme_detail"])
    text = dumps(envelope(ctx, raw))
    if f'"{MARK}"' not in text:
        raise AssertionError("hostile marker lost")  # a template change moved the target
    return text.replace(f'"{MARK}"', literal).encode()


def nan(ctx: Context) -> bytes:
    return _spliced(ctx, lambda d: d["statistics"].update(digg_count=MARK), "NaN")


def infinity(ctx: Context) -> bytes:
    return _spliced(ctx, lambda d: d.update(duration=MARK), "Infinity")


def huge_float(ctx: Context) -> bytes:
    return _spliced(ctx, lambda d: d["statistics"].update(share_count=MARK), "1e400")


def nesting(ctx: Context, depth: int) -> bytes:
    return _spliced(ctx, lambda d: d.update(video_tag=MARK), "[" * depth + "]" * depth)


def long_int(ctx: Context) -> bytes:
    digits = "9" * LONG_INT_DIGITS
    return _spliced(ctx, lambda d: d["statistics"].update(digg_count=MARK), digits)


def gbk(ctx: Context) -> bytes:
    """The work encoded in GBK. Its texts are set to ones GBK can hold (emoji it cannot)."""
    raw = data(ctx)
    raw["aweme_detail"].update(desc="今天的晚霞好美", text_extra=[])
    return dumps(envelope(ctx, raw)).encode("gbk", errors="replace")


def detail_list(ctx: Context) -> bytes:
    raw = data(ctx)
    raw["aweme_detail"] = [raw["aweme_detail"]]
    return ok(ctx, raw)


def detail_string(ctx: Context) -> bytes:
    raw = data(ctx)
    raw["aweme_detail"] = dumps(raw["aweme_detail"])
    return ok(ctx, raw)


def wrong_part_types(ctx: Context) -> bytes:
    raw = data(ctx)
    detail = raw["aweme_detail"]
    digg = detail["statistics"].get("digg_count", 0)
    detail.update(
        statistics=str(digg), author=int(detail["author"]["uid"]), music=[detail["music"]],
        text_extra="#not a list", images={"0": "not a list"}, video="not an object",
        status=7, desc=["not", "a", "string"], create_time="yesterday",
    )  # fmt: skip
    return ok(ctx, raw)


def degraded(ctx: Context) -> bytes:
    """The work without its core parts: author and music null, desc and hashtags missing (what
    the audit's `--force` run got, and what blanked known content)."""
    raw = data(ctx)
    detail = raw["aweme_detail"]
    detail.update(author=None, music=None, text_extra=None)
    detail.pop("desc", None)
    return ok(ctx, raw)


def huge_ints(ctx: Context) -> bytes:
    raw = data(ctx)
    detail = raw["aweme_detail"]
    detail["statistics"].update(digg_count=10**30, comment_count=2**64, share_count=2**63)
    detail.update(duration=10**25, create_time=10**20, aweme_type=2**40)
    return ok(ctx, raw)


def negative_ints(ctx: Context) -> bytes:
    # Within 32 bits: amagi's JavaScript rounding would push -(2**63) itself out of range.
    raw = data(ctx)
    detail = raw["aweme_detail"]
    detail["statistics"].update(digg_count=-5, comment_count=-(2**31), share_count=-1)
    detail.update(duration=-1000, create_time=-86400)
    if isinstance(detail.get("video"), dict):
        detail["video"].update(width=-1, height=-(2**31))
    return ok(ctx, raw)


def _texts_with(detail: dict[str, Any], bad: str) -> None:
    """Put `bad` inside every text the pipeline stores: desc, nickname, hashtags, music title."""
    detail["desc"] = f"坏{bad}字符 {detail['desc']}"
    detail["author"]["nickname"] = f"{detail['author']['nickname']}{bad}"
    for entry in detail.get("text_extra") or []:
        if entry.get("type") == 1:
            entry["hashtag_name"] = f"{entry['hashtag_name']}{bad}"
    if isinstance(detail.get("music"), dict):
        detail["music"]["title"] = f"{bad}{detail['music']['title']}"


def texts_with(ctx: Context, bad: str) -> bytes:
    """NUL and control characters: json.dumps writes them as escapes (`\\u0000`)."""
    raw = data(ctx)
    _texts_with(raw["aweme_detail"], bad)
    return ok(ctx, raw)


def lone_surrogates(ctx: Context) -> bytes:
    raw = data(ctx)
    _texts_with(raw["aweme_detail"], MARK)
    return dumps(envelope(ctx, raw)).replace(MARK, "\\ud83d").encode()  # inside the strings


def other_work(ctx: Context) -> bytes:
    return ok(ctx, data(ctx, other_work_id(ctx.aweme_id, seed=ctx.seed)))


def gone_other_work(ctx: Context) -> bytes:
    gone = payloads.make_deleted_data(other_work_id(ctx.aweme_id, seed=ctx.seed))
    if ctx.style == "amagi":  # amagi's gone answer carries no id; its data shape does
        return ok(ctx, gone)
    return dumps({"code": 0, "message": "success", "data": gone}).encode()


def huge_parts(ctx: Context) -> tuple[bytes, bytes]:
    """(prefix, suffix): the work's body around its desc, which the caller pads to any size."""
    raw = data(ctx)
    raw["aweme_detail"]["desc"] = MARK
    prefix, suffix = dumps(envelope(ctx, raw)).encode().split(MARK.encode())
    return prefix, suffix
