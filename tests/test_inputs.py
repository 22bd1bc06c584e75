"""Share-link parsing and the streaming input reader."""

from __future__ import annotations

import io
import json
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.input_files import MAX_LINE_BYTES, iter_input_lines
from pipeline.inputs import Deduplicator, InputLine, Rejection, ShareLink, parse_line

FIXTURES = Path(__file__).parent / "fixtures" / "upstream"
VIDEO_ID = 7071967230287744267
ALBUM_ID = 7232626237586312485
VIDEO_URL = f"https://www.douyin.com/video/{VIDEO_ID}"
ALBUM_URL = f"https://www.douyin.com/video/{ALBUM_ID}"
SHORT = "https://v.douyin.com/iMNpuGtC/"
SHARE_TEXT = (
    "0.76 hBG:/ 复制打开抖音，看看【某某的作品】其实早就和你表白过了  "
    "https://v.douyin.com/iMNpuGtC/ 复制此链接，打开Dou音搜索，直接观看视频！"
)
SEC_UID = "MS4wLjABAAAANwkJuWIRFOzg5uCpDRpMj4OX-QryoDgn-yYlXQnRwQQ"


def _fixture_share_url() -> str:
    body = json.loads((FIXTURES / "video_detail_7071967230287744267.json").read_text("utf-8"))
    url = body["aweme_detail"]["share_url"]
    assert isinstance(url, str)
    return url


def _work(aweme_id: int) -> ShareLink:
    return ShareLink(f"https://www.douyin.com/video/{aweme_id}", aweme_id, is_short=False)


def _short(code: str) -> ShareLink:
    return ShareLink(f"https://v.douyin.com/{code}/", None, is_short=True)


# (text, expected links) for lines that must yield links and no rejections.
ACCEPTED = [
    pytest.param(SHARE_TEXT, [_short("iMNpuGtC")], id="share-text-upstream-example"),
    pytest.param(SHORT, [_short("iMNpuGtC")], id="short-link"),
    pytest.param("https://v.douyin.com/iMNpuGtC", [_short("iMNpuGtC")], id="short-no-slash"),
    pytest.param(
        "https://v.douyin.com/iMNpuGtC/?utm_source=copy&u_code=x",
        [_short("iMNpuGtC")],
        id="short-tracking-query-stripped",
    ),
    pytest.param("http://v.douyin.com/a-B_9/", [_short("a-B_9")], id="short-http-upgraded"),
    pytest.param("HTTPS://V.DOUYIN.COM/AbC/", [_short("AbC")], id="short-upper-host-code-kept"),
    pytest.param(
        "https://v.douyin.com/iMNpuGtC/复制此链接", [_short("iMNpuGtC")], id="short-then-chinese"
    ),
    pytest.param(f"看看{VIDEO_URL}，真好看。", [_work(VIDEO_ID)], id="long-then-fullwidth-comma"),
    pytest.param(f"{VIDEO_URL}.", [_work(VIDEO_ID)], id="trailing-period"),
    pytest.param(f"({VIDEO_URL})", [_work(VIDEO_ID)], id="in-parentheses"),
    pytest.param(f"<{VIDEO_URL}>", [_work(VIDEO_ID)], id="in-angle-brackets"),
    pytest.param(f'"{VIDEO_URL}"', [_work(VIDEO_ID)], id="in-quotes"),
    pytest.param(VIDEO_URL, [_work(VIDEO_ID)], id="www-video"),
    pytest.param(f"{VIDEO_URL}/?previous_page=app", [_work(VIDEO_ID)], id="www-video-query"),
    pytest.param(f"http://www.douyin.com/video/{VIDEO_ID}", [_work(VIDEO_ID)], id="http-video"),
    pytest.param(f"https://douyin.com/video/{VIDEO_ID}", [_work(VIDEO_ID)], id="bare-domain"),
    pytest.param(f"https://m.douyin.com/video/{VIDEO_ID}", [_work(VIDEO_ID)], id="mobile-host"),
    pytest.param(f"https://www.douyin.com/note/{ALBUM_ID}", [_work(ALBUM_ID)], id="www-note"),
    pytest.param(f"https://www.douyin.com/article/{VIDEO_ID}", [_work(VIDEO_ID)], id="article"),
    pytest.param(
        f"https://www.douyin.com/share/slides/{ALBUM_ID}", [_work(ALBUM_ID)], id="share-slides"
    ),
    pytest.param(
        f"https://www.iesdouyin.com/share/video/{VIDEO_ID}/", [_work(VIDEO_ID)], id="ies-video"
    ),
    pytest.param(
        f"https://www.iesdouyin.com/share/note/{ALBUM_ID}/", [_work(ALBUM_ID)], id="ies-note"
    ),
    pytest.param(
        f"https://iesdouyin.com/share/video/{VIDEO_ID}/", [_work(VIDEO_ID)], id="ies-no-www"
    ),
    pytest.param(
        f"https://www.iesdouyin.com/share/video/{VIDEO_ID}/"
        "?region=CN&mid=7049808807056149285&u_code=-1",
        [_work(VIDEO_ID)],
        id="ies-mid-is-music-not-work",
    ),
    pytest.param(_fixture_share_url(), [_work(VIDEO_ID)], id="fixture-share-url"),
    pytest.param(
        f"https://www.douyin.com/discover?modal_id={VIDEO_ID}", [_work(VIDEO_ID)], id="discover"
    ),
    pytest.param(
        f"https://www.douyin.com/user/{SEC_UID}?from_tab_name=main&modal_id={VIDEO_ID}",
        [_work(VIDEO_ID)],
        id="user-modal-id",
    ),
    pytest.param(
        f"https://www.douyin.com/user/{SEC_UID}?vid={VIDEO_ID}", [_work(VIDEO_ID)], id="user-vid"
    ),
    pytest.param(
        f"https://www.douyin.com/search/%E7%8C%AB?mid=7049808807056149285&modal_id={VIDEO_ID}",
        [_work(VIDEO_ID)],
        id="search-modal-id-after-mid",
    ),
    pytest.param(str(VIDEO_ID), [_work(VIDEO_ID)], id="bare-id"),
    pytest.param(f"  {VIDEO_ID}\t", [_work(VIDEO_ID)], id="bare-id-padded"),
    pytest.param("123456789012345", [_work(123456789012345)], id="bare-id-15-digits"),
    pytest.param(f"作品 {VIDEO_ID} 好看", [_work(VIDEO_ID)], id="bare-id-token"),
    pytest.param(f"{SHORT} and {VIDEO_URL}", [_short("iMNpuGtC"), _work(VIDEO_ID)], id="two-links"),
    pytest.param(
        f"{VIDEO_URL}https://v.douyin.com/x/",
        [_work(VIDEO_ID), _short("x")],
        id="two-links-no-space",
    ),
    pytest.param(
        f"{ALBUM_ID} {SHORT}", [_work(ALBUM_ID), _short("iMNpuGtC")], id="bare-id-then-link"
    ),
    pytest.param(f"douyin.com/video/{VIDEO_ID}", [_work(VIDEO_ID)], id="no-scheme"),
    pytest.param(f"看看www.douyin.com/note/{VIDEO_ID} 好", [_work(VIDEO_ID)], id="no-scheme-cjk"),
    pytest.param("v.douyin.com/iMNpuGtC/", [_short("iMNpuGtC")], id="no-scheme-short"),
    pytest.param(
        f"www.douyin.com/video/{VIDEO_ID}https://v.douyin.com/x/",
        [_work(VIDEO_ID), _short("x")],
        id="no-scheme-then-glued-link",
    ),
    pytest.param(
        f"{VIDEO_URL}?from=https://v.douyin.com/x/",
        [_work(VIDEO_ID)],
        id="link-in-a-douyin-query-is-a-value",
    ),
    pytest.param("https://v.douyin.com/" + "a" * 64 + "/", [_short("a" * 64)], id="code-64"),
]


@pytest.mark.parametrize(("text", "expected"), ACCEPTED)
def test_accepted_shapes(text: str, expected: list[ShareLink]) -> None:
    links, rejections = parse_line(text)
    assert rejections == ()
    assert list(links) == expected


# (text, expected rejection reasons, expected rejected text) for lines with no usable link.
REJECTED = [
    pytest.param("https://example.com/video/1", "not a Douyin link: example.com", id="other-host"),
    pytest.param(
        f"https://douyin.com.evil.example/video/{VIDEO_ID}",
        "not a Douyin link: douyin.com.evil.example",
        id="lookalike-suffix",
    ),
    pytest.param(
        f"https://notdouyin.com/video/{VIDEO_ID}",
        "not a Douyin link: notdouyin.com",
        id="lookalike-prefix",
    ),
    pytest.param(
        f"https://www.douyin.com@evil.example/video/{VIDEO_ID}",
        "not a Douyin link: evil.example",
        id="userinfo-trick",
    ),
    pytest.param("ftp://v.douyin.com/abc/", "unsupported scheme: ftp", id="ftp"),
    pytest.param("javascript:alert(1)", "unsupported scheme: javascript", id="javascript"),
    pytest.param(
        f"https://www.douyin.com/user/{SEC_UID}",
        "Douyin link without a work id",
        id="profile-without-modal-id",
    ),
    pytest.param(
        f"https://www.douyin.com/discover?vid={VIDEO_ID}",
        "Douyin link without a work id",
        id="vid-only-on-user-pages",
    ),
    pytest.param(
        "https://www.iesdouyin.com/share/user/1?mid=7049808807056149285",
        "Douyin link without a work id",
        id="mid-alone-is-not-a-work",
    ),
    pytest.param("https://www.douyin.com/video/123", "not a valid work id: 123", id="short-id"),
    pytest.param(
        "https://www.douyin.com/video/99999999999999999999",
        "not a valid work id: 99999999999999999999",
        id="id-over-int64",
    ),
    pytest.param(
        "https://www.douyin.com/discover?modal_id=abc",
        "not a valid work id: abc",
        id="modal-id-not-digits",
    ),
    pytest.param(
        "https://v.douyin.com/", "Douyin short link without a code", id="short-without-code"
    ),
    pytest.param("https://", "link without a host", id="empty-link"),
    pytest.param("http://[::1/video", "malformed link", id="malformed-ipv6"),
    pytest.param("99999999999999999999", "not a valid work id: 99999999999999999999", id="big-n"),
    pytest.param("hello world", "no link found", id="garbage-text"),
    pytest.param("0.76 hBG:/ 复制打开抖音", "no link found", id="share-text-without-link"),
    pytest.param("12345 7071967230287744267x", "no link found", id="digits-not-an-id"),
    pytest.param("\x00\x01\x7f\ufffd", "no link found", id="binary-garbage"),
    pytest.param("\ud800 lone surrogate", "no link found", id="lone-surrogate"),
    pytest.param("Data: none", "no link found", id="word-before-colon-is-not-a-scheme"),
    pytest.param("data:text/html,x", "unsupported scheme: data", id="data-uri"),
    pytest.param(
        "https://v.douyin.com/" + "a" * 65 + "/",
        "Douyin short link code too long (65 characters, at most 64)",
        id="code-65",
    ),
    pytest.param(
        "https://v.douyin.com/a%20b/",
        "Douyin short link code has characters other than A-Z a-z 0-9 - _",
        id="code-odd-characters",
    ),
    pytest.param(
        "https://v.douyin.com/abc/def/",
        "Douyin short link with more than a code in its path",
        id="short-deeper-path",
    ),
    pytest.param(
        "https://evil.example/?u=https://v.douyin.com/abc/",
        "not a Douyin link: evil.example",
        id="short-link-in-another-sites-query",
    ),
    pytest.param(
        "https://evil.example/go/https://v.douyin.com/abc/",
        "not a Douyin link: evil.example",
        id="short-link-in-another-sites-path",
    ),
    pytest.param(
        f"evil.example/?u=douyin.com/video/{VIDEO_ID}",
        "no link found",
        id="no-scheme-in-a-query",
    ),
    pytest.param(f"notdouyin.com/video/{VIDEO_ID}", "no link found", id="no-scheme-lookalike"),
]


@pytest.mark.parametrize(("text", "reason"), REJECTED)
def test_rejected_shapes(text: str, reason: str) -> None:
    links, rejections = parse_line(text)
    assert links == ()
    assert [r.reason for r in rejections] == [reason]


def test_mixed_line_keeps_good_links_and_reports_bad_ones() -> None:
    links, rejections = parse_line(f"ftp://a.b/c {SHORT} https://example.com/x {VIDEO_ID}")
    assert links == (_short("iMNpuGtC"), _work(VIDEO_ID))
    assert rejections == (
        Rejection("unsupported scheme: ftp", "ftp://a.b/c"),
        Rejection("not a Douyin link: example.com", "https://example.com/x"),
    )


def test_rejection_text_is_cleaned_and_truncated() -> None:
    _, (rejection,) = parse_line("bad\x00\x1b[31m\u202e" + "x" * 1000)
    assert rejection.text == "bad[31m" + "x" * 293
    assert len(rejection.text) == 300


def test_same_work_from_every_shape_has_one_key() -> None:
    shapes = [
        VIDEO_URL,
        str(VIDEO_ID),
        _fixture_share_url(),
        f"https://www.douyin.com/note/{VIDEO_ID}",
        f"https://www.douyin.com/discover?modal_id={VIDEO_ID}",
        f"https://www.douyin.com/user/{SEC_UID}?vid={VIDEO_ID}",
    ]
    keys = {link.key for text in shapes for link in parse_line(text)[0]}
    assert keys == {f"aweme:{VIDEO_ID}"}
    assert _short("abc").key == "url:https://v.douyin.com/abc/"


def test_deduplicator() -> None:
    dedup = Deduplicator()
    assert not dedup.seen(_work(VIDEO_ID))
    assert dedup.seen(_work(VIDEO_ID))
    assert not dedup.seen(_short("abc"))
    assert dedup.seen(_short("abc"))
    assert not dedup.seen(_short("abC"))  # short codes are case-sensitive
    assert not dedup.seen(_work(ALBUM_ID))
    assert len(dedup) == 4


def test_deduplicator_memory_is_bounded() -> None:
    dedup = Deduplicator(capacity=4)  # two generations of two keys
    ids = [VIDEO_ID + n for n in range(10)]
    for aweme_id in ids:
        assert not dedup.seen(_work(aweme_id))
        assert len(dedup) <= 4
    assert dedup.seen(_work(ids[-1]))  # recent: remembered
    assert dedup.seen(_work(ids[-3]))  # previous generation: still remembered
    assert not dedup.seen(_work(ids[0]))  # long gone: left to the database check


class _TwoSets:
    """The de-duplication `Deduplicator` promises, kept in two plain sets (its former self)."""

    def __init__(self, capacity: int) -> None:
        self.half = capacity // 2
        self.recent: set[int | str] = set()
        self.older: set[int | str] = set()

    def seen(self, key: int | str) -> bool:
        if key in self.recent or key in self.older:
            return True
        if len(self.recent) >= self.half:
            self.older, self.recent = self.recent, set()
        self.recent.add(key)
        return False


_KEYS = st.one_of(
    st.integers(min_value=0, max_value=60),  # small pools: many repeats
    st.integers(min_value=10**18, max_value=10**18 + 40),
    st.integers(min_value=2**63 - 3, max_value=2**63 + 3),  # 64-bit edge: kept in the set
    st.sampled_from(["a", "b", "abC", "abc"]).map(lambda c: f"https://v.douyin.com/{c}/"),
)


@settings(max_examples=300, deadline=None)
@given(
    keys=st.lists(_KEYS, max_size=400),
    capacity=st.integers(min_value=2, max_value=80),
    buffer=st.integers(min_value=1, max_value=9),
)
def test_deduplicator_answers_as_two_sets_do(
    keys: list[int | str], capacity: int, buffer: int
) -> None:
    """Its runs of 8-byte ids, merged as they fill, answer exactly as two sets of keys."""
    dedup, model = Deduplicator(capacity, buffer=buffer), _TwoSets(capacity)
    for key in keys:
        link = _work(key) if isinstance(key, int) else ShareLink(key, None, True)
        assert dedup.seen(link) == model.seen(key), key
        assert len(dedup) == len(model.recent) + len(model.older)


def test_deduplicator_keeps_a_work_id_in_about_8_bytes() -> None:
    """Memory per remembered work id: Python's own allocations (tracemalloc), not RSS, so the
    machine's other jobs cannot move it. A set of ints took ~68 bytes per id."""
    dedup = Deduplicator(buffer=1_024)  # (the default buffer holds 65,536 ids in a set)
    tracemalloc.start()
    try:
        for n in range(60_000):
            dedup.seen(_work(VIDEO_ID + 7 * n))
        current, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(dedup) == 60_000
    assert current / 60_000 < 16, current


# --- the streaming reader -----------------------------------------------------------------


def _read(data: bytes) -> tuple[list[InputLine], int]:
    reader = iter_input_lines(io.BytesIO(data), "in.txt")
    lines = list(reader)
    return lines, reader.skipped


def test_reader_line_endings_bom_comments_and_line_numbers() -> None:
    data = (
        b"\xef\xbb\xbf" + str(VIDEO_ID).encode() + b"\r\n"  # 1: BOM + CRLF
        b"# a comment\n"  # 2
        b"\n"  # 3
        b"   \t\r\n"  # 4
        b"https://v.douyin.com/a/\r"  # 5: lone CR
        b"https://v.douyin.com/b/\r\r"  # 6, 7 (blank)
        b"bad \xff\xfe bytes\n"  # 8
        b"nul\x00" + str(ALBUM_ID).encode() + b"\n"  # 9
        b"  # indented comment\n"  # 10
        b"https://v.douyin.com/c/"  # 11: no final newline
    )
    lines, skipped = _read(data)
    assert [(line.source, line.line_no) for line in lines] == [
        ("in.txt", 1),
        ("in.txt", 5),
        ("in.txt", 6),
        ("in.txt", 8),
        ("in.txt", 9),
        ("in.txt", 11),
    ]
    assert skipped == 5
    assert lines[0].links == (_work(VIDEO_ID),)
    assert lines[1].links == (_short("a"),)
    assert lines[2].links == (_short("b"),)
    assert lines[3].links == ()
    assert lines[3].rejections[0].reason.startswith("not valid UTF-8")
    assert lines[3].rejections[0].text == "bad \ufffd\ufffd bytes"
    assert lines[4].rejections[0].reason == "no link found"  # NUL glues the id to a word
    assert "\x00" not in lines[4].rejections[0].text
    assert lines[5].links == (_short("c"),)


def test_bom_only_dropped_on_first_line() -> None:
    lines, _ = _read(b"x\n\xef\xbb\xbf" + str(VIDEO_ID).encode())
    assert lines[1].rejections[0].reason == "no link found"  # U+FEFF glued to the id


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_files_with_a_bom_read_like_utf8(encoding: str) -> None:
    bom = {
        "utf-16-le": b"\xff\xfe",
        "utf-16-be": b"\xfe\xff",
        "utf-32-le": b"\xff\xfe\x00\x00",
        "utf-32-be": b"\x00\x00\xfe\xff",
    }[encoding]
    text = f"{SHARE_TEXT}\r\n# comment\n\n{VIDEO_ID}\rhello\n"
    data = bom + text.encode(encoding)
    lines, skipped = _read(data)
    assert [line.line_no for line in lines] == [1, 4, 5]
    assert skipped == 2
    assert lines[0].links == (_short("iMNpuGtC"),)
    assert lines[1].links == (_work(VIDEO_ID),)
    assert lines[2].rejections[0].reason == "no link found"


def test_utf16_file_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "links.txt"
    path.write_text(f"{SHORT}\n{VIDEO_URL}\n", encoding="utf-16")  # BOM + native order
    with open(path, "rb") as stream:
        lines = list(iter_input_lines(stream, "links.txt"))
    assert [line.links for line in lines] == [(_short("iMNpuGtC"),), (_work(VIDEO_ID),)]


def test_utf16_without_a_bom_is_named() -> None:
    lines, _ = _read(f"{SHORT}\n".encode("utf-16-le"))
    assert lines[0].links == ()
    assert lines[0].rejections[0].reason == (
        "no link found: the line looks like UTF-16 (save the file as UTF-8)"
    )


def test_utf16_with_a_broken_code_unit_still_reads() -> None:
    data = b"\xff\xfe" + SHORT.encode("utf-16-le") + b"\x00\xd8" + "\n好".encode("utf-16-le")
    lines, _ = _read(data + b"\x41")  # a lone surrogate, then an odd last byte
    assert lines[0].links == (_short("iMNpuGtC"),)
    assert lines[1].rejections[0].reason == "no link found"


class _SpyStream(io.BytesIO):
    """Records every readline limit, to prove the reader never asks for an unbounded line."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.limits: list[int | None] = []

    def readline(self, size: int | None = -1, /) -> bytes:
        self.limits.append(size)
        return super().readline(size)


@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b"\r"], ids=["lf", "crlf", "cr"])
def test_one_megabyte_line_is_rejected_with_bounded_reads(ending: bytes) -> None:
    huge = b"https://v.douyin.com/" + b"a" * 1_000_000
    stream = _SpyStream(b"first" + ending + huge + ending + b"https://v.douyin.com/z/" + ending)
    reader = iter_input_lines(stream, "<stdin>")
    lines = list(reader)
    assert [line.line_no for line in lines] == [1, 2, 3]
    (rejection,) = lines[1].rejections
    assert rejection.reason == f"line too long (over {MAX_LINE_BYTES} bytes)"
    assert rejection.text.startswith("https://v.douyin.com/aaa")
    assert len(rejection.text) == 300
    assert lines[2].links == (_short("z"),)
    assert stream.limits
    assert all(limit is not None and 0 < limit <= MAX_LINE_BYTES for limit in stream.limits)


def test_huge_line_memory_stays_bounded() -> None:
    stream = io.BytesIO(b"x" * 8_000_000 + b"\n" + SHORT.encode())
    tracemalloc.start()
    try:
        lines = list(iter_input_lines(stream, "big"))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [line.line_no for line in lines] == [1, 2]
    assert peak < 8 * MAX_LINE_BYTES  # measured ~3 x MAX_LINE_BYTES; far below the 8 MB line


def test_line_at_the_limit_is_kept_and_one_byte_more_is_rejected() -> None:
    at_limit = (SHORT + " " * (MAX_LINE_BYTES - len(SHORT))).encode()
    lines, _ = _read(at_limit + b"\r\n" + at_limit + b"x\n")
    assert lines[0].links == (_short("iMNpuGtC"),)
    assert lines[1].rejections[0].reason.startswith("line too long")


def test_crlf_split_across_reads_is_one_line_end() -> None:
    # The CR is the last byte of one bounded read and the LF the first byte of the next.
    first = b"x" * (MAX_LINE_BYTES - 1) + b"\r"
    lines, skipped = _read(first + b"\n" + SHORT.encode() + b"\n")
    assert [line.line_no for line in lines] == [1, 2]
    assert skipped == 0


def test_empty_stream_yields_nothing() -> None:
    assert _read(b"") == ([], 0)


# --- properties ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_line_never_raises(text: str) -> None:
    links, rejections = parse_line(text)
    for link in links:
        assert link.url.startswith("https://")
        assert link.aweme_id is None or 0 < link.aweme_id < 2**63
    for rejection in rejections:
        assert len(rejection.text) <= 300


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["https://", "v.douyin.com/", "www.douyin.com/video/", str(VIDEO_ID)])
        | st.text(max_size=20),
    ).map("".join)
)
def test_parse_line_never_raises_on_link_like_text(text: str) -> None:
    parse_line(text)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_reader_never_raises_on_arbitrary_bytes(data: bytes) -> None:
    lines, skipped = _read(data)
    numbers = [line.line_no for line in lines]
    assert numbers == sorted(set(numbers))
    assert len(lines) + skipped <= data.count(b"\n") + data.count(b"\r") + 1


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=10**14, max_value=2**63 - 1))
def test_any_valid_id_round_trips_through_every_shape(aweme_id: int) -> None:
    for text in (
        str(aweme_id),
        f"https://www.iesdouyin.com/share/video/{aweme_id}/?mid=7049808807056149285",
        f"https://www.douyin.com/discover?modal_id={aweme_id}",
    ):
        assert parse_line(text) == ((_work(aweme_id),), ())
