"""Strict decoding of upstream JSON bodies: what the pipeline can store, or why not.

`decode_body(body)` returns the document or a `BodyProblem`, and never raises. A problem is
either *transient* (the service or a proxy sent something that is not a whole JSON document:
an HTML error page, an empty or cut-off body; asking again may help) or *permanent* (a
complete document the pipeline refuses to store; asking again returns the same bytes).

Refused, permanently:
- `NaN`, `Infinity`, `-Infinity` (not JSON; PostgreSQL's JSONB rejects them);
- numbers outside the double range (`1e400`) and integers outside 64 bits (signed or unsigned:
  a 5,000-digit integer) — nothing Douyin sends comes near either;
- nesting deeper than `MAX_DEPTH` containers (real payloads are 9 deep at most, measured on
  tests/fixtures/upstream; deep nesting is how a body makes recursive code fail);
- bytes that are not UTF-8 (e.g. GBK), and syntax errors before the end of the body.

Accepted on purpose: `\\u0000` and lone surrogate escapes (`"\\ud83d"`) inside strings, and raw
control characters in strings. orjson refuses the last two, so those bodies go through the
standard library instead; the loader cleans such text before PostgreSQL sees it. `read_body`
also says which way a body was read (`Reading`), which tells whether its received text can be
stored as it is (`pipeline.douyin.received_text`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

MAX_DEPTH = 64
_UTF8_BOM = b"\xef\xbb\xbf"
_INT_MIN = -(2**63)
_UINT_MAX = 2**64 - 1
_MAX_INT_DIGITS = len(str(_UINT_MAX))  # longer literals are refused before int() sees them
_WHITESPACE = b" \t\r\n"
INVALID = "upstream body is not valid JSON"


@dataclass(frozen=True, slots=True)
class BodyProblem:
    """Why a body cannot be used; `reason` is short, English and names no content."""

    reason: str
    permanent: bool


class _Refused(ValueError):
    """Raised from inside the standard library's parser hooks."""


def too_large(limit_bytes: int) -> BodyProblem:
    """The problem for a body over the size cap: permanent, the same work is as large again."""
    return BodyProblem(f"upstream body larger than {_size(limit_bytes)}", permanent=True)


class Reading(StrEnum):
    """How a body was read: what its text can be trusted with (`pipeline.douyin.received_text`).

    STRICT: orjson alone read it, so no string holds a raw control character or a lone
    surrogate, and it holds no float: its text says exactly what orjson would write again.
    FLOATS: the same, but it holds floats, whose spelling (`1E2`, `0.10`) may differ from
    orjson's and would store differently.
    LENIENT: the standard library read it (raw control characters, lone surrogates, a huge
    number): only the decoded value can be trusted."""

    STRICT = "strict"
    FLOATS = "floats"
    LENIENT = "lenient"


def decode_body(body: bytes) -> Any | BodyProblem:
    """The JSON document in `body`, or the `BodyProblem` that stops it from being stored."""
    return read_body(body)[0]


def read_body(body: bytes) -> tuple[Any | BodyProblem, Reading]:
    """`decode_body`, and how the body was read."""
    if body.startswith(_UTF8_BOM):
        body = body[len(_UTF8_BOM) :]
    start = body.lstrip(_WHITESPACE)[:1]
    if start not in (b"{", b"["):
        # An HTML error page, plain text or nothing: what a proxy or a failing service sends.
        what = "an empty body" if not start else "not JSON"
        return BodyProblem(f"upstream response is {what}", permanent=False), Reading.LENIENT
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        if message.startswith("unexpected end of data"):
            return _TRUNCATED, Reading.LENIENT
        if message.startswith("depth limit exceeded"):
            return _too_deep(), Reading.LENIENT
        # Everything else gets a second, slower opinion: either the body is fine by our rules
        # (lone surrogates, raw control characters) or the standard library names the problem.
        return _decode_with_stdlib(body), Reading.LENIENT
    return _check(doc, body)


_TRUNCATED = BodyProblem("upstream response is truncated", permanent=False)


def _too_deep() -> BodyProblem:
    return BodyProblem(f"{INVALID}: nested deeper than {MAX_DEPTH} levels", permanent=True)


def _size(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    return f"{n} bytes"


def _check(doc: Any, body: bytes) -> tuple[Any | BodyProblem, Reading]:
    """Rules a successful orjson parse does not enforce: depth, and 64-bit integers.

    orjson turns an integer literal beyond 64 bits into a float, so a float of that size is a
    suspect; only then is the body parsed again to see how the number was written.
    """
    floats: list[float] = []
    try:
        _scan(doc, 1, floats)
    except _TooDeep:
        return _too_deep(), Reading.LENIENT
    if any(not _FLOAT_LOW < f < _FLOAT_HIGH for f in floats):
        return _decode_with_stdlib(body), Reading.LENIENT
    return doc, Reading.FLOATS if floats else Reading.STRICT


class _TooDeep(Exception):
    """Raised from inside `_scan` to stop at the first container deeper than MAX_DEPTH."""


_FLOAT_LOW, _FLOAT_HIGH = -(2.0**63), 2.0**64


def _too_deep_doc(doc: Any) -> bool:
    try:
        _scan(doc, 1, [])
    except _TooDeep:
        return True
    return False


def _scan(container: Any, depth: int, floats: list[float]) -> None:
    """Collect every float below `container` (real payloads hold a few at most), visiting each
    value once by exact type (a decoded document holds only dict, list, str, int, float, bool
    and None): this runs on every payload, so it is kept to the few operations it needs.
    Recursion stops at MAX_DEPTH + 1 levels."""
    if type(container) is not dict and type(container) is not list:
        return
    if depth > MAX_DEPTH:
        raise _TooDeep
    for child in container.values() if type(container) is dict else container:
        kind = type(child)
        if kind is dict or kind is list:
            _scan(child, depth + 1, floats)
        elif kind is float:
            floats.append(child)


def _decode_with_stdlib(body: bytes) -> Any | BodyProblem:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.reason == "unexpected end of data" and exc.end == len(body):
            return _TRUNCATED  # cut off in the middle of a multi-byte character
        return BodyProblem(f"{INVALID}: not UTF-8 (byte {exc.start + 1})", permanent=True)
    try:
        doc = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_float=_float,
            parse_int=_int,
            strict=False,  # raw control characters in strings: kept, cleaned by the loader
        )
    except _Refused as exc:
        return BodyProblem(f"{INVALID}: {exc}", permanent=True)
    except RecursionError:
        return _too_deep()
    except json.JSONDecodeError as exc:
        if exc.msg.startswith("Unterminated string") or exc.pos >= len(text.rstrip()):
            return _TRUNCATED
        return BodyProblem(f"{INVALID}: {exc.msg} (character {exc.pos + 1})", permanent=True)
    return _too_deep() if _too_deep_doc(doc) else doc


def _refuse_constant(name: str) -> Any:
    raise _Refused(f"{name} is not allowed")


def _float(literal: str) -> float:
    value = float(literal)
    if value in (float("inf"), float("-inf")):
        raise _Refused(f"number out of range ({_preview(literal)})")
    return value


def _int(literal: str) -> int:
    digits = literal.lstrip("-")
    if len(digits) > _MAX_INT_DIGITS or not _INT_MIN <= int(literal) <= _UINT_MAX:
        raise _Refused(f"integer outside 64 bits ({_preview(literal)})")
    return int(literal)


def _preview(literal: str) -> str:
    return literal if len(literal) <= 24 else f"{literal[:12]}… ({len(literal)} characters)"


def loads_as_json(text: str | bytes) -> Any:
    """Exactly `json.loads(text)`'s value, at orjson's speed. orjson refuses some documents
    `json` reads (nesting deeper than 1024, NaN, lone surrogates) and reads integers beyond
    64 bits as floats: those go through `json` (a float outside the 64-bit range is the sign;
    real payloads have none). Raises what `json.loads` raises."""
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    return json.loads(text) if _huge_float(doc) else doc


def _huge_float(node: Any) -> bool:
    """Whether a float outside the 64-bit integer range is anywhere in the document (a walk
    by exact type: a decoded document holds only dict, list, str, int, float, bool, None)."""
    if type(node) is not dict and type(node) is not list:
        return type(node) is float and not _FLOAT_LOW < node < _FLOAT_HIGH
    stack = [node]
    while stack:
        container = stack.pop()
        for child in container.values() if type(container) is dict else container:
            kind = type(child)
            if kind is dict or kind is list:
                stack.append(child)
            elif kind is float and not _FLOAT_LOW < child < _FLOAT_HIGH:
                return True
    return False
