"""Facts about Douyin data that more than one stage needs (UPSTREAM.md §3): text cleaning,
UTF-16 offsets, the publish time hidden in an aweme_id, and the gone-reason vocabulary.

Imported by the flattener, the loader and the state writers, so each fact has one home.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

from pipeline.rows import Utf8Text
from pipeline.upstream.decode import Reading

# --- text -------------------------------------------------------------------------------------


def clean_text(text: str) -> str:
    """Text as PostgreSQL can store it: NUL replaced by U+FFFD, lone UTF-16 surrogates (from a
    "\\udxxx" JSON escape) by "?". Everything else, newlines and emoji included, is kept. Each
    replacement is one character for one, so `text_extra` offsets keep their meaning, and the
    stored raw payload (cleaned the same way) flattens to the same rows again."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def clean_label(text: str) -> str:
    """A one-line name (hashtag, nickname, title): `clean_text`, without control characters
    (ESC, DEL, C1, line breaks) nor U+FFFD, stripped of surrounding white space. A NUL is
    dropped like any control character; the stored raw payload holds U+FFFD in its place
    (PostgreSQL cannot store a NUL), so U+FFFD is dropped too: a reprocess reads from that
    payload the name the first load stored."""
    if not text.isprintable():
        text = "".join(c for c in text if unicodedata.category(c) != "Cc")
    if "\ufffd" in text:
        text = text.replace("\ufffd", "")
    return clean_text(text).strip()


def utf16_to_index(text: str, units: int) -> int | None:
    """The code-point index in `text` of a UTF-16 code-unit offset (what Douyin's `text_extra`
    start/end count, as Android and iOS do), or None when it lies outside the text or inside a
    surrogate pair. PostgreSQL's `substring` counts code points, so this is what is stored."""
    if units < 0:
        return None
    table = _unit_table(text)
    if table is None:  # no character beyond the BMP: one unit per code point
        return units if units <= len(text) else None
    return table.get(units)


@lru_cache(maxsize=16)
def _unit_table(text: str) -> dict[int, int] | None:
    """UTF-16 offset -> code-point index for a text with characters beyond the BMP (emoji),
    built once per caption (every hashtag and mention of a work has two offsets into it)."""
    if not _ASTRAL.search(text):
        return None
    table: dict[int, int] = {}
    seen = 0
    for index, char in enumerate(text):
        table[seen] = index
        seen += 2 if ord(char) > 0xFFFF else 1
    table[seen] = len(text)
    return table


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


# --- ids and times ----------------------------------------------------------------------------

EARLIEST_CREATE_TIME = 1451606400  # 2016-01-01T00:00:00Z: Douyin launched in 2016
LATEST_CREATE_TIME = 2**31 - 1  # the top 32 bits of an int64 aweme_id


def time_from_aweme_id(aweme_id: int) -> datetime | None:
    """The publish time an aweme_id carries in its top 32 bits (Unix seconds). On every real
    payload it lies 1–630 s before `create_time`: an estimate, for payloads without one."""
    seconds = aweme_id >> 32
    if EARLIEST_CREATE_TIME <= seconds <= LATEST_CREATE_TIME:
        return datetime.fromtimestamp(seconds, tz=UTC)
    return None


# --- gone reasons -----------------------------------------------------------------------------

# The canonical vocabulary of works.gone_reason: Douyin's own filter_reason token (known ones:
# status_self_see = private, status_deleted, status_audit_self_see = under review,
# item_not_exist; others are kept as Douyin names them), or UNKNOWN_GONE_REASON when the
# answer named none.
UNKNOWN_GONE_REASON = "unknown"
GONE_REASON_PATTERN = r"^[a-z][a-z0-9_]*$"
_STATUS_TOKEN = re.compile(r"status_[a-z0-9_]+")
_GONE_PREFIXED = re.compile(r"^gone: ([a-z][a-z0-9_]{0,39})$")


def canonical_gone_reason(reason: str | None) -> str:
    """'gone: status_self_see', 'status_self_see' and '原因：status_self_see' all become
    'status_self_see'; 'gone: item_not_exist' becomes 'item_not_exist'; anything without a
    token becomes 'unknown'."""
    text = (reason or "").strip()
    if match := _STATUS_TOKEN.search(text):
        return match.group(0)
    if match := _GONE_PREFIXED.match(text):
        return match.group(1)
    return UNKNOWN_GONE_REASON


def clean_json(value: Any) -> Any:
    """A decoded JSON value with every string (keys included) passed through `clean_text`, for
    JSONB columns, which refuse NUL and lone surrogates just as TEXT does."""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping):
        return {clean_text(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    return value


# How orjson writes a NUL character. The same bytes also appear where a text holds a backslash
# followed by "u0000" (written `\\u0000`): such a rare text merely takes the slow path below.
_NUL_ESCAPE = b"\\u0000"


# --- received bodies --------------------------------------------------------------------------

_UTF8_BOM = b"\xef\xbb\xbf"
# Escapes that matter to PostgreSQL, found left to right with escaped backslashes consumed
# first, so `\\u0000` (a backslash, then "u0000") is never mistaken for a NUL: a NUL, a high
# surrogate with its low one (a pair: kept) or without (lone), a lone low surrogate.
_ESCAPE = re.compile(
    rb"\\\\|\\u0000|\\u[dD][89abAB][0-9a-fA-F]{2}(?:\\u[dD][c-fC-F][0-9a-fA-F]{2})?"
    rb"|\\u[dD][c-fC-F][0-9a-fA-F]{2}"
)
_PAIR = len(b"\\ud83d\\ude00")
# Where one of those may be (or a backslash then "u0000"): a regex with a literal prefix is
# scanned at memchr speed, ~10x faster than three `in` tests (measured on real bodies).
_SUSPECT = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")


def _escape(match: re.Match[bytes]) -> bytes:
    found = match.group()
    if found == b"\\u0000":
        return b"\\ufffd"  # NUL -> U+FFFD, as `clean_text`
    if found == b"\\\\" or len(found) == _PAIR:
        return found
    return b"?"  # a lone surrogate -> "?", as `clean_text`


def received_text(body: bytes, reading: Reading) -> Utf8Text | None:
    """The body's JSON text as received, cleaned as `clean_json` cleans the decoded value, or
    None when only the decoded value can be stored faithfully (then `json_text` encodes it).

    PostgreSQL turns this text into exactly the JSONB that `json_text` of the decoded value
    gives, without Python encoding it again. Only escapes need cleaning: `decode` refuses
    invalid UTF-8, orjson refuses raw control characters and lone surrogates (LENIENT bodies
    go the decoded way), so a NUL or a lone surrogate can only be a `\\u` escape. Numbers: an
    integer's text is what orjson writes again, but JSONB keeps a float's spelling (`1E2`,
    `0.10`), which orjson may write otherwise; telling them apart needs a scan of the text
    that costs more than encoding the value again, so a body with floats (FLOATS) goes the
    decoded way too."""
    if reading is not Reading.STRICT:
        return None
    if body.startswith(_UTF8_BOM):
        body = body[len(_UTF8_BOM) :]
    if b"\\" in body and _SUSPECT.search(body) is not None:
        body = _ESCAPE.sub(_escape, body)
    return Utf8Text(body)  # valid UTF-8: orjson read it


def json_text(value: Any) -> str | Utf8Text:
    """A decoded JSON value as JSON text for a JSONB parameter, cleaned as `clean_json` cleans
    it (the same JSONB value as `json.dumps(clean_json(value))`, numbers included).

    The common payload holds neither NUL nor lone surrogates, so it is encoded once by orjson
    and never walked: orjson refuses lone surrogates (the tree is then cleaned first), and a
    NUL can only be in its output as the escape `\\u0000`, looked for in the bytes."""
    try:
        encoded = orjson.dumps(value)
    except (TypeError, ValueError):  # orjson.JSONEncodeError: a lone surrogate, an odd type
        return json.dumps(clean_json(value))
    if _NUL_ESCAPE in encoded:
        return Utf8Text(orjson.dumps(clean_json(value)))
    return Utf8Text(encoded)  # sent as the UTF-8 bytes they are (see `Utf8Text`)
