"""Reading input files: bytes -> `InputLine`s, streaming, in bounded memory, never raising on
content. Encodings (UTF-8 with or without BOM; UTF-16/UTF-32 with a BOM), line ends (LF, CRLF,
lone CR), over-long lines and undecodable lines are handled here; what a line *means* is
`pipeline.inputs.parse_line`'s job.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from typing import BinaryIO, Protocol

from pipeline.inputs import MAX_TEXT_CHARS, InputLine, parse_line, reject

MAX_LINE_BYTES = 64 * 1024
_BOM = b"\xef\xbb\xbf"
_PREVIEW_BYTES = MAX_TEXT_CHARS * 4  # enough UTF-8 bytes for the rejection text of a long line
_EOL = re.compile(rb"\r\n|\r|\n")
_TRANSCODE_CHUNK = 64 * 1024
# A byte-order mark names the encoding; UTF-32 first, its LE mark starts like UTF-16's.
_WIDE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


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
                yield InputLine(self.source, line_no, (), (reject(reason, preview),))
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                reason = f"not valid UTF-8 (byte {exc.start + 1} of the line)"
                preview = raw[:_PREVIEW_BYTES].decode("utf-8", "replace")
                yield InputLine(self.source, line_no, (), (reject(reason, preview),))
                continue
            if not (stripped := text.strip()) or stripped.startswith("#"):
                self.skipped += 1
                continue
            links, rejections = parse_line(text)
            if not links and raw.count(0) * 3 >= len(raw):
                # Every other byte NUL: UTF-16 text, read as UTF-8 because it has no BOM.
                reason = "no link found: the line looks like UTF-16 (save the file as UTF-8)"
                rejections = (reject(reason, text),)
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
