"""How the fake upstream reads links: its own reversible short codes, and the work id in a
share link (what a seed-style service does with `url=`)."""

from __future__ import annotations

import base64
import re
from urllib.parse import parse_qs, urlsplit

from pipeline.testing import payloads

_LINK = re.compile(r"https?://[^\s\u4e00-\u9fff，。！]+")
_WORK_PATH = re.compile(r"/(?:share/)?(?:video|note|slides|article)/(\d{15,20})(?:/|$)")
_SHORT_CODE = re.compile(r"i[A-Za-z0-9_-]{11}")


def short_code(aweme_id: int, seed: int) -> str:
    """The fake's short-link code for a work: reversible, letters/digits/-/_ only."""
    if not 0 < aweme_id < 2**64:
        raise ValueError("aweme_id out of range")
    masked = aweme_id ^ payloads.hash64(seed, "short-link")
    return "i" + base64.urlsafe_b64encode(masked.to_bytes(8, "big")).decode().rstrip("=")


def decode_short_code(code: str, seed: int) -> int | None:
    """The work a code made by `short_code` names; None for any other code."""
    if not _SHORT_CODE.fullmatch(code):
        return None
    raw = base64.urlsafe_b64decode(code[1:] + "=")
    aweme_id = int.from_bytes(raw, "big") ^ payloads.hash64(seed, "short-link")
    return aweme_id if 10**14 <= aweme_id < 10**20 and short_code(aweme_id, seed) == code else None


def work_id_from_link(text: str, seed: int) -> int | None:
    """What the seed service does with `url=`: find the first link and the work it names."""
    match = _LINK.search(text)
    if not match:
        return None
    parts = urlsplit(match.group(0))
    host = (parts.hostname or "").lower()
    if not (host == "douyin.com" or host.endswith((".douyin.com", "iesdouyin.com"))):
        return None
    if host == "v.douyin.com":
        return decode_short_code(parts.path.strip("/"), seed)
    if found := _WORK_PATH.search(parts.path):
        return int(found.group(1))
    query = parse_qs(parts.query)
    for value in query.get("modal_id", []) + query.get("vid", []):
        if value.isdigit() and 15 <= len(value) <= 20:
            return int(value)
    return None
