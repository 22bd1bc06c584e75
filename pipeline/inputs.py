"""Input stage: pasted share text -> Douyin share links (pure, never raises on input).

Canonical form: every link whose work id is known becomes `https://www.douyin.com/video/<id>`,
whatever its shape (note, slides, article, iesdouyin share page, modal_id, vid, bare id). The
iesdouyin share page uses `/share/video/` for albums too, so the path cannot tell a video from
an album reliably; one form per id keeps `ShareLink.key` and `url` stable (upstream services
read the id from the path, not the kind).
"""

from __future__ import annotations

import heapq
import re
import unicodedata
from array import array
from bisect import bisect_left
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

MAX_TEXT_CHARS = 300
_INT64_MAX = 2**63 - 1

# Characters RFC 3986 allows in a URL, minus the quote (share text quotes links). Anything else
# (whitespace, CJK, full-width punctuation, <>"`) ends the link: pasted text has no spaces.
_URL_CHARS = r"[A-Za-z0-9\-._~:/?#\[\]@!$&()*+,;=%]"
_LINK_START = re.compile(
    r"(?<![A-Za-z0-9+.\-])(?:([A-Za-z][A-Za-z0-9+.\-]*)://|(?:javascript|vbscript|data):(?=\S))",
    re.IGNORECASE | re.ASCII,
)
_NEXT_HTTP = re.compile(r"https?://", re.IGNORECASE | re.ASCII)
# `douyin.com/video/…` pasted without a scheme; never inside another URL or a parameter value.
_SCHEMELESS_DOUYIN = re.compile(
    r"(?<![A-Za-z0-9+.\-/@:=?&#%_~])(?:[A-Za-z0-9-]+\.)*(?:ies)?douyin\.com/",
    re.IGNORECASE | re.ASCII,
)
_URL_TAIL = re.compile(_URL_CHARS + "*", re.ASCII)
_TRAILING_PUNCT = ".,;:!?)]}'\""
_OPENERS = {")": "(", "]": "[", "}": "{"}
_BARE_NUMBER = re.compile(r"(?<!\S)[0-9]{15,}(?!\S)")
_WORK_PATH = re.compile(r"/(?:share/)?(?:video|note|slides|article)/([0-9]+)(?:/|$)", re.ASCII)
_SHORT_PATH = re.compile(r"/([^/]*)/?")
_SHORT_CODE = re.compile(r"[A-Za-z0-9_-]+", re.ASCII)
MAX_SHORT_CODE = 64
_DOUYIN_DOMAINS = ("douyin.com", "iesdouyin.com")
_SHORT_HOST = "v.douyin.com"
_ID_PARAMS_ANYWHERE = ("modal_id",)
_ID_PARAMS_ON_USER_PAGES = ("vid",)  # never `mid`: that is the music id


@dataclass(frozen=True, slots=True)
class ShareLink:
    """One Douyin link to fetch: a work id, or a short link that must be resolved first."""

    url: str
    aweme_id: int | None
    is_short: bool

    @property
    def key(self) -> str:
        """De-duplication key and `share_links.link_key`."""
        return f"aweme:{self.aweme_id}" if self.aweme_id is not None else f"url:{self.url}"


@dataclass(frozen=True, slots=True)
class Rejection:
    """Input that cannot become a link; `reason` is short and secret-free."""

    reason: str
    text: str


@dataclass(frozen=True, slots=True)
class InputLine:
    """The links and rejections found on one non-blank, non-comment input line."""

    source: str
    line_no: int
    links: tuple[ShareLink, ...]
    rejections: tuple[Rejection, ...]


def canonical_link(aweme_id: int) -> ShareLink:
    """The one normalized link for a known work id."""
    return ShareLink(f"https://www.douyin.com/video/{aweme_id}", aweme_id, is_short=False)


def clean_text(text: str) -> str:
    """Drop control/format/surrogate characters (unsafe in terminals and Postgres), cap length."""
    kept = "".join(ch for ch in text if unicodedata.category(ch) not in ("Cc", "Cf", "Cs"))
    return kept[:MAX_TEXT_CHARS]


def reject(reason: str, text: str) -> Rejection:
    return Rejection(reason, clean_text(text))


def _work_id(digits: str) -> int | str:
    """The id as an int, or the reason it is not one (15–20 digits, fits a signed BIGINT)."""
    if not (15 <= len(digits) <= 20) or digits.startswith("0") or int(digits) > _INT64_MAX:
        return f"not a valid work id: {digits[:40]}"
    return int(digits)


def _is_douyin(host: str) -> bool:
    return any(host == d or host.endswith("." + d) for d in _DOUYIN_DOMAINS)


def _parse_url(url: str) -> ShareLink | Rejection:
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
    except ValueError:
        return reject("malformed link", url)
    if not host:
        return reject("link without a host", url)
    if not _is_douyin(host):
        return reject(f"not a Douyin link: {host[:100]}", url)
    if host == _SHORT_HOST:
        return _short_link(parts.path, url)
    digits = None
    if path_id := _WORK_PATH.match(parts.path):
        digits = path_id.group(1)
    else:
        names: tuple[str, ...] = _ID_PARAMS_ANYWHERE
        if parts.path.startswith("/user/"):
            names += _ID_PARAMS_ON_USER_PAGES
        for name, value in parse_qsl(parts.query):
            if name in names:
                digits = value
                break
    if digits is None:
        return reject("Douyin link without a work id", url)
    if not digits.isascii() or not digits.isdigit():
        return reject(f"not a valid work id: {digits[:40]}", url)
    aweme_id = _work_id(digits)
    if isinstance(aweme_id, str):
        return reject(aweme_id, url)
    return canonical_link(aweme_id)


def _short_link(path: str, url: str) -> ShareLink | Rejection:
    short = _SHORT_PATH.fullmatch(path or "/")
    if short is None:
        return reject("Douyin short link with more than a code in its path", url)
    code = short.group(1)
    if not code:
        return reject("Douyin short link without a code", url)
    if not _SHORT_CODE.fullmatch(code):
        return reject("Douyin short link code has characters other than A-Z a-z 0-9 - _", url)
    if len(code) > MAX_SHORT_CODE:
        return reject(
            f"Douyin short link code too long ({len(code)} characters, at most {MAX_SHORT_CODE})",
            url,
        )
    # Short links carry only tracking parameters in their query: the code alone names it.
    return ShareLink(f"https://{_SHORT_HOST}/{code}/", None, is_short=True)


def _splits_here(first: str) -> bool:
    """Whether an `http(s)://` right after `first` (inside one run of URL characters) begins a
    second link pasted back to back. Not when the first link is another site's (a Douyin link
    in its query or path is part of that site's URL, never fetched) nor when it is a
    parameter's value (`?u=https://…`)."""
    if first.endswith("="):
        return False
    try:
        host = (urlsplit(first).hostname or "").rstrip(".")
    except ValueError:
        return False
    return _is_douyin(host)


def _next_link_start(text: str, pos: int, glued: bool) -> tuple[re.Match[str], bool] | None:
    """The next link's start and whether it lacks a scheme (`douyin.com/…`)."""
    if glued:
        start = _NEXT_HTTP.match(text, pos)
        return (start, False) if start else None
    start = _LINK_START.search(text, pos)
    bare = _SCHEMELESS_DOUYIN.search(text, pos)
    if bare is not None and (start is None or bare.start() < start.start()):
        return bare, True
    return (start, False) if start else None


def _strip_trailing_punct(url: str) -> str:
    """Drop sentence punctuation after a link; keep a closing bracket the link itself opened."""
    while url and url[-1] in _TRAILING_PUNCT:
        closer = url[-1]
        opener = _OPENERS.get(closer)
        if opener is not None and url.count(opener) >= url.count(closer):
            break
        url = url[:-1]
    return url


def parse_line(text: str) -> tuple[tuple[ShareLink, ...], tuple[Rejection, ...]]:
    """Every link and bare work id in one line of pasted text, in order, plus what was rejected.

    A non-empty line with nothing link-like yields one "no link found" rejection.
    """
    found: list[tuple[int, ShareLink | Rejection]] = []
    pos, glued = 0, False
    while (found_start := _next_link_start(text, pos, glued)) is not None:
        start, schemeless = found_start
        prefix = "https://" if schemeless else ""
        tail_from = start.start() if schemeless else start.end()
        tail = _URL_TAIL.match(text, tail_from)
        end = tail.end() if tail else tail_from
        # Links pasted back to back (".../video/1https://v.douyin.com/x/") are two links.
        next_link = _NEXT_HTTP.search(text, start.end(), end)
        if next_link and not _splits_here(prefix + text[start.start() : next_link.start()]):
            next_link = None
        glued = next_link is not None
        end = next_link.start() if next_link else end
        url = prefix + _strip_trailing_punct(text[start.start() : end])
        pos = end
        scheme = "https" if schemeless else start.group().split(":", 1)[0].lower()
        if scheme in ("http", "https"):
            found.append((start.start(), _parse_url(url)))
        else:
            found.append((start.start(), reject(f"unsupported scheme: {scheme[:20]}", url)))
    for number in _BARE_NUMBER.finditer(text):
        aweme_id = _work_id(number.group())
        if isinstance(aweme_id, int):
            found.append((number.start(), canonical_link(aweme_id)))
        else:
            found.append((number.start(), reject(aweme_id, number.group())))
    found.sort(key=lambda pair: pair[0])
    links = tuple(item for _, item in found if isinstance(item, ShareLink))
    rejections = tuple(item for _, item in found if isinstance(item, Rejection))
    if not found and text.strip():
        rejections = (reject("no link found", text.strip()),)
    return links, rejections


class Deduplicator:
    """Remembers which links this run has seen, by `ShareLink.key`, in bounded memory.

    Keys are work ids (ints) or short-link URLs (strs): the same equivalence as `key`. Two
    generations of at most `capacity // 2` keys each are kept; when the newer one fills up the
    older one is dropped. So memory stays bounded on any input, and a repeat farther back than
    ~`capacity // 2` distinct links is not caught here: the database check catches it instead
    (the first copy is loaded by then), or at worst the work is fetched once more, which
    changes nothing (loads are idempotent). A work id costs 8 bytes once it leaves the small
    buffer of recent ones (`_Generation`); a short link ~80-110 bytes. At the default, ~20 MB
    for two million work ids, where a set of them took ~140 MB.
    """

    def __init__(self, capacity: int = 2_000_000, buffer: int = 65_536) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self._half = capacity // 2
        self._buffer = buffer
        self._recent = _Generation(buffer)
        self._older = _Generation(buffer)

    def seen(self, link: ShareLink) -> bool:
        """True if an equal link was seen recently in this run; records it otherwise."""
        key: int | str = link.aweme_id if link.aweme_id is not None else link.url
        if key in self._recent or key in self._older:
            return True
        if len(self._recent) >= self._half:
            self._older, self._recent = self._recent, _Generation(self._buffer)
        self._recent.add(key)
        return False

    def __len__(self) -> int:
        return len(self._recent) + len(self._older)


_INT64 = range(-(2**63), 2**63)


class _Generation:
    """A set of keys in little memory: work ids in sorted runs of 8-byte integers (`array`,
    looked up by bisection), after a set of the latest `buffer` of them; any other key (a
    short link, an id beyond 64 bits) in a set.

    Runs are merged as a binary counter merges its bits (a new run merges with the last while
    that one is no longer), so there are at most ~log2(n / buffer) + 1 of them and each id is
    copied ~log2(n / buffer) times in all: a merge of a million ids takes ~0.2 s. A look-up
    is a set probe and a bisection per run (~1 us each)."""

    def __init__(self, buffer: int) -> None:
        self._buffer_size = max(1, buffer)
        self._buffer: set[int] = set()
        self._runs: list[array[int]] = []
        self._others: set[int | str] = set()
        self._size = 0

    def __contains__(self, key: int | str) -> bool:
        if key in self._buffer or key in self._others:
            return True
        if not isinstance(key, int):
            return False
        for run in self._runs:
            i = bisect_left(run, key)
            if i < len(run) and run[i] == key:
                return True
        return False

    def add(self, key: int | str) -> None:
        """Record a key not yet in the set."""
        self._size += 1
        if not isinstance(key, int) or key not in _INT64:
            self._others.add(key)
            return
        self._buffer.add(key)
        if len(self._buffer) >= self._buffer_size:
            run = array("q", sorted(self._buffer))
            self._buffer = set()
            while self._runs and len(self._runs[-1]) <= len(run):
                run = array("q", heapq.merge(self._runs.pop(), run))
            self._runs.append(run)

    def __len__(self) -> int:
        return self._size
