"""Option values that cannot work are usage errors (exit 1) with a message saying what to fix,
before any request is sent, and never echoing a password."""

from __future__ import annotations

import pytest

from helpers import run_ingest
from pipeline.config import check_api_credentials, check_base_url
from pipeline.db.engine import normalize_url
from pipeline.errors import UsageError


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("127.0.0.1:8000", "the scheme is missing"),
        ("localhost:8000/api", "the scheme is missing"),
        ("ftp://example.com", "only http:// and https://"),
        ("file:///etc/passwd", "only http:// and https://"),
        ("http://", "the host is missing"),
        ("http://host:notaport", "not a valid URL"),
        ("http://[::1", "not a valid URL"),
        ("http://host/?token=x", "must not have a query"),
        ("http://host/#frag", "must not have a query"),
    ],
)
def test_bad_base_urls(url: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        check_base_url(url, "--api-base")
    assert str(info.value).startswith("--api-base: ")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("url", "kept"),
    [
        ("http://127.0.0.1:8000/", "http://127.0.0.1:8000"),
        ("https://parse.example.com/prefix/", "https://parse.example.com/prefix"),
        ("HTTP://Host", "HTTP://Host"),
        ("http://u:p@host:8000", "http://u:p@host:8000"),  # credentials alone are fine
    ],
)
def test_good_base_urls(url: str, kept: str) -> None:
    assert check_base_url(url, "--api-base") == kept


def test_url_credentials_and_a_token_are_refused() -> None:
    check_api_credentials("http://u:p@host", None)
    check_api_credentials("http://host", "token")
    with pytest.raises(UsageError, match="use one of them"):
        check_api_credentials("http://u:p@host", "token")
    with pytest.raises(UsageError, match="use one of them"):
        check_api_credentials("http://u@host", "token")


def test_database_url_with_a_bad_port() -> None:
    with pytest.raises(UsageError, match="invalid port") as info:
        normalize_url("postgresql://user:hunter2@localhost:notaport/db")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            [
                "run",
                "--dry-run",
                "--api-base",
                "http://user:hunter2@127.0.0.1:9",
                "--api-token",
                "tok",
            ],
            "--api-base carries a user:password and --api-token is set too: use one of them",
        ),
        (["run", "--dry-run", "--api-base", "127.0.0.1:8000"], "the scheme is missing"),
        (["run", "--dry-run", "--resolve-base", "ftp://x"], "--resolve-base: only http://"),
        (
            ["runs", "--database-url", "postgresql://user:hunter2@localhost:notaport/db"],
            "database URL has an invalid port",
        ),
    ],
)
def test_the_command_exits_1_with_one_line(args: list[str], message: str) -> None:
    result = run_ingest([*args, "-"] if args[0] == "run" else args, stdin="")
    assert result.returncode == 1, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "hunter2" not in result.stderr + result.stdout
