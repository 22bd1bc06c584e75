"""Input classes the audit of issue 10 (point 9, and the usage half of point 8) found handled
badly, end to end through the real `ingest` command: each ends with a clear message or a
per-line reason, never a traceback, and never a request to a work the input did not name."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hostile_corpus import fetch_args, query

from helpers import ThreadedFake, run_ingest
from pipeline.testing.payloads import sample_aweme_ids

pytestmark = pytest.mark.slow


def test_a_utf16_file_is_read_or_named_not_mistaken_for_no_links(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    """Windows editors save UTF-16 with a BOM. Either the links load, or the message says the
    file is UTF-16: never "no link found" next to a valid-looking link."""
    ids = sample_aweme_ids(2, seed=51)
    fake = fake_server(seed=51)
    path = tmp_path / "urls-utf16.txt"
    text = "".join(f"看看 https://www.douyin.com/video/{i} 复制此链接\r\n" for i in ids)
    path.write_bytes(text.encode("utf-16"))  # with BOM, native (little-endian) order

    result = run_ingest(["run", str(path), *fetch_args(fake, "seed")], env={"DATABASE_URL": db_url})
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    reasons = [r.last_reason or "" for r in query(db_url, "SELECT last_reason FROM share_links")]
    assert not any("no link found" in r for r in reasons), reasons
    loaded = query(db_url, "SELECT aweme_id FROM works ORDER BY aweme_id")
    if loaded:  # decoded: both links load
        assert [r.aweme_id for r in loaded] == sorted(ids)
        assert result.returncode == 0, output
    else:  # refused: with a message that names the encoding
        assert "utf-16" in (output + " ".join(reasons)).lower()
        assert result.returncode in (1, 2), output


def test_an_overlong_short_code_is_named_as_such_and_not_fetched(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    fake = fake_server(seed=52)
    code = "iA" + "x" * 70
    path = tmp_path / "urls.txt"
    path.write_text(f"https://v.douyin.com/{code}/\n")

    args = ["run", str(path), *fetch_args(fake, "amagi")]
    result = run_ingest(args, env={"DATABASE_URL": db_url})
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr
    (row,) = query(db_url, "SELECT last_outcome, last_reason FROM share_links")
    assert row.last_outcome == "invalid"
    assert "without a code" not in row.last_reason
    assert "long" in row.last_reason.lower()
    assert fake.fake.served == []


def test_a_douyin_link_inside_another_sites_query_string_is_not_fetched(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    """`https://example.com/jump?to=https://v.douyin.com/...` is a link to example.com: the
    Douyin link in its query is not something the user pasted on its own."""
    fake = fake_server(seed=53)
    aweme_id, control = sample_aweme_ids(2, seed=53)
    short = fake.fake.short_link(aweme_id)
    path = tmp_path / "urls.txt"
    path.write_text(
        f"https://example.com/jump?to={short}\n"
        f"https://www.google.com/url?q=https://www.douyin.com/video/{aweme_id}&sa=D\n"
        f"https://www.douyin.com/video/{control}\n"
    )

    for style in ("seed", "amagi"):
        result = run_ingest(
            ["run", str(path), *fetch_args(fake, style)], env={"DATABASE_URL": db_url}
        )
        assert "Traceback" not in result.stderr
        assert result.returncode == 2, result.stderr
        assert {r.aweme_id for r in fake.fake.served} <= {control}
        rows = query(db_url, "SELECT last_outcome, aweme_id FROM share_links ORDER BY link_key")
        assert sorted(r.last_outcome for r in rows) == ["invalid", "invalid", "loaded"]
        assert query(db_url, "SELECT 1 FROM works WHERE aweme_id = :i", i=aweme_id) == []


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://ingest@127.0.0.1:notaport/ingest",
        "postgresql://ingest:hunter2-pw@127.0.0.1:notaport/ingest",
    ],
)
def test_a_database_url_with_a_bad_port_is_a_usage_error(tmp_path: Path, url: str) -> None:
    path = tmp_path / "urls.txt"
    path.write_text("https://www.douyin.com/video/7071967230287744267\n")
    result = run_ingest(["run", str(path), "--database-url", url, "--no-progress"])
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert result.returncode == 1, output
    assert "port" in output.lower()
    assert "hunter2-pw" not in output
    assert len(output.strip().splitlines()) <= 3, output


def test_credentials_in_the_api_base_together_with_a_token_are_a_usage_error(
    fake_server: Callable[..., ThreadedFake], tmp_path: Path, db_url: str
) -> None:
    """Audit point 8: every link failed with `internal error: ValueError` (exit 75) and no
    request was sent. Two ways to authenticate at once is a mistake to name up front."""
    fake = fake_server(seed=54)
    path = tmp_path / "urls.txt"
    path.write_text("https://www.douyin.com/video/7071967230287744267\n")
    base = fake.url.replace("http://", "http://someone:pa55word-x@")
    args = ["run", str(path), "--api-base", base, "--no-progress", "--api-token", "tok-abc-123"]
    result = run_ingest(args, env={"DATABASE_URL": db_url})
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    assert result.returncode == 1, output
    assert "pa55word-x" not in output
    assert "tok-abc-123" not in output
    assert fake.fake.served == []
