"""Input stage: pasted share text -> Douyin share links (pure, streaming, never raises on input).

Canonical form: every link whose work id is known becomes `https://www.douyin.com/video/<id>`,
whatever its shape (note, slides, article, iesdouyin share page, modal_id, vid, bare id). The
iesdouyin share page uses `/share/video/` for albums too, so the path cannot tell a video from
an album reliably; one form per id keeps `ShareLink.key` and `url` stable (upstream services
read the id from the path, not the kind).
"""

from __future__ import annotations

import codecs
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol
from urllib.parse import parse_qsl, urlsplit

MAX_LINE_BYTES = 64 * 1024
MAX_TEXT_CHARS = 300
_INT64_MAX = 2**63 - 1
_BOM = b"\xef\xbb\xbf"
_PREVIEW_BYTES = MAX_TEXT_CHARS * 4  # enough UTF-8 bytes for the rejection text of a long line

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
# A byte-order mark names the encoding; UTF-32 first, its LE mark starts like UTF-16's.
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
_TRANSCODE_CHUNK = 64 * 1024
_EOL = re.compile(rb"\r\n|\r|\n")
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


def _reject(reason: str, text: str) -> Rejection:
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
        return _reject("malformed link", url)
    if not host:
        return _reject("link without a host", url)
    if not _is_douyin(host):
        return _reject(f"not a Douyin link: {host[:100]}", url)
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
        return _reject("Douyin link without a work id", url)
    if not digits.isascii() or not digits.isdigit():
        return _reject(f"not a valid work id: {digits[:40]}", url)
    aweme_id = _work_id(digits)
    if isinstance(aweme_id, str):
        return _reject(aweme_id, url)
    return canonical_link(aweme_id)


def _short_link(path: str, url: str) -> ShareLink | Rejection:
    short = _SHORT_PATH.fullmatch(path or "/")
    if short is None:
        return _reject("Douyin short link with more than a code in its path", url)
    code = short.group(1)
    if not code:
        return _reject("Douyin short link without a code", url)
    if not _SHORT_CODE.fullmatch(code):
        return _reject("Douyin short link code has characters other than A-Z a-z 0-9 - _", url)
    if len(code) > MAX_SHORT_CODE:
        return _reject(
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
            found.append((start.start(), _reject(f"unsupported scheme: {scheme[:20]}", url)))
    for number in _BARE_NUMBER.finditer(text):
        aweme_id = _work_id(number.group())
        if isinstance(aweme_id, int):
            found.append((number.start(), canonical_link(aweme_id)))
        else:
            found.append((number.start(), _reject(aweme_id, number.group())))
    found.sort(key=lambda pair: pair[0])
    links = tuple(item for _, item in found if isinstance(item, ShareLink))
    rejections = tuple(item for _, item in found if isinstance(item, Rejection))
    if not found and text.strip():
        rejections = (_reject("no link found", text.strip()),)
    return links, rejections


class InputReader:
    """Iterator of `InputLine`s from a binary stream; see `iter_input_lines`.

    `skipped` counts blank and `#` comment lines read so far (final once iteration ends);
    `lines_read` counts every physical line, skipped or not.
    """

    def __init__(self, stream: BinaryIO, source: str) -> None:
        self.source = source
        self.skipped = 0
        self.lines_read = 0
        self._lines = self._parse(_as_utf8(stream))

    def __iter__(self) -> InputReader:
        return self

    def __next__(self) -> InputLine:
        return next(self._lines)

    def _parse(self, stream: _LineSource) -> Iterator[InputLine]:
        for raw, too_long in _split_lines(stream):
            self.lines_read += 1
            if self.lines_read == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
            line_no = self.lines_read
            if too_long:
                reason = f"line too long (over {MAX_LINE_BYTES} bytes)"
                preview = raw[:_PREVIEW_BYTES].decode("utf-8", "replace")
                yield InputLine(self.source, line_no, (), (_reject(reason, preview),))
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                reason = f"not valid UTF-8 (byte {exc.start + 1} of the line)"
                preview = raw[:_PREVIEW_BYTES].decode("utf-8", "replace")
                yield InputLine(self.source, line_no, (), (_reject(reason, preview),))
                continue
            if not (stripped := text.strip()) or stripped.startswith("#"):
                self.skipped += 1
                continue
            links, rejections = parse_line(text)
            if not links and raw.count(0) * 3 >= len(raw):
                # Every other byte NUL: UTF-16 text, read as UTF-8 because it has no BOM.
                reason = "no link found: the line looks like UTF-16 (save the file as UTF-8)"
                rejections = (_reject(reason, text),)
            yield InputLine(self.source, line_no, links, rejections)


def iter_input_lines(stream: BinaryIO, source: str) -> InputReader:
    """Stream `InputLine`s from `stream` (named `source` in messages); memory stays bounded.

    Lines end at LF, CRLF or a lone CR; a UTF-8 BOM on the first line is dropped. Lines longer
    than `MAX_LINE_BYTES` and lines that are not UTF-8 come back as one rejection each. Blank and
    comment lines are not yielded: read `.skipped` on the returned reader after iterating.
    """
    return InputReader(stream, source)


class _LineSource(Protocol):
    def readline(self, size: int = -1, /) -> bytes: ...


class _Transcoded:
    """A UTF-16 or UTF-32 stream (with a byte-order mark) read as UTF-8 bytes, in bounded
    pieces; `_split_lines` accepts pieces that end anywhere, not only at line ends."""

    def __init__(self, stream: BinaryIO, encoding: str) -> None:
        self._stream = stream
        # Undecodable code units (a lone surrogate, an odd last byte) become U+FFFD.
        self._decoder = codecs.getincrementaldecoder(encoding)("replace")
        self._pending = b""
        self._eof = False

    def readline(self, size: int = -1, /) -> bytes:
        while not self._pending and not self._eof:
            chunk = self._stream.read(_TRANSCODE_CHUNK)
            self._eof = not chunk
            self._pending = self._decoder.decode(chunk, final=self._eof).encode("utf-8")
        limit = size if size > 0 else len(self._pending)
        piece, self._pending = self._pending[:limit], self._pending[limit:]
        return piece


def _as_utf8(stream: BinaryIO) -> _LineSource:
    """`stream` itself, or a UTF-8 view of it when it starts with a UTF-16/32 byte-order mark
    (files saved as "Unicode" on Windows), so such a file reads like any other."""
    head = _peek(stream, 4)
    for bom, encoding in _WIDE_BOMS:
        if head.startswith(bom):
            return _Transcoded(stream, encoding)
    return stream


def _peek(stream: BinaryIO, n: int) -> bytes:
    """The first `n` bytes of `stream`, left unread (b"" when the stream cannot tell)."""
    peek = getattr(stream, "peek", None)
    if callable(peek):
        data = peek(n)
        return bytes(data[:n]) if isinstance(data, bytes | bytearray) else b""
    if stream.seekable():
        position = stream.tell()
        data = stream.read(n)
        stream.seek(position)
        return data
    return b""


def _split_lines(stream: _LineSource) -> Iterator[tuple[bytes, bool]]:
    """Yield (line without terminator, too_long); holds at most ~2 × MAX_LINE_BYTES at once.

    Reads with a bounded `readline` so one huge line (or a file with no LF at all) never lands
    in memory whole; a lone CR inside a read also ends a line (old Mac line endings).
    """
    buf = bytearray()
    too_long = False
    after_cr = False  # last read ended in CR: a leading LF in the next read belongs to it
    while chunk := stream.readline(MAX_LINE_BYTES):
        if after_cr and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        after_cr = chunk.endswith(b"\r")
        *complete, rest = _EOL.split(chunk)
        for piece in complete:
            buf += piece
            too_long = too_long or len(buf) > MAX_LINE_BYTES
            yield bytes(buf[:_PREVIEW_BYTES] if too_long else buf), too_long
            buf.clear()
            too_long = False
        buf += rest
        if len(buf) > MAX_LINE_BYTES:
            too_long = True  # keep a preview only; the rest of the line is discarded
            del buf[_PREVIEW_BYTES:]
    if buf or too_long:
        yield bytes(buf), too_long


class Deduplicator:
    """Remembers which links this run has seen, by `ShareLink.key`, in bounded memory.

    Keys are work ids (ints) or short-link URLs (strs): the same equivalence as `key`, with less
    memory (~70-110 bytes each). Two generations of at most `capacity // 2` keys each are kept;
    when the newer one fills up the older one is dropped. So memory stays bounded (~200 MB at the
    default) on any input, and a repeat farther back than ~`capacity // 2` distinct links is not
    caught here: the database check catches it instead (the first copy is loaded by then), or at
    worst the work is fetched once more, which changes nothing (loads are idempotent).
    """

    def __init__(self, capacity: int = 2_000_000) -> None:
        if capacity < 2:
            raise ValueError("capacity must be at least 2")
        self._half = capacity // 2
        self._recent: set[int | str] = set()
        self._older: set[int | str] = set()

    def seen(self, link: ShareLink) -> bool:
        """True if an equal link was seen recently in this run; records it otherwise."""
        key: int | str = link.aweme_id if link.aweme_id is not None else link.url
        if key in self._recent or key in self._older:
            return True
        if len(self._recent) >= self._half:
            self._older, self._recent = self._recent, set()
        self._recent.add(key)
        return False

    def __len__(self) -> int:
        return len(self._recent) + len(self._older)
