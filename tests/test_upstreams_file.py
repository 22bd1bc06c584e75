"""The pool file (`--upstreams FILE`): the documented shape works as written, and every
mistake is one clear line (exit 1) before anything starts, never echoing a token."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from helpers import run_ingest
from pipeline.config import Secret
from pipeline.errors import UsageError
from pipeline.upstream.services import load_upstreams, parse_upstreams

# The example of issue 13 and docs/upstreams.md, verbatim.
EXAMPLE = """
[[upstream]]
name = "home-cookie"
base = "http://127.0.0.1:8000"
style = "seed"          # or "amagi"
rate = 5                # requests per second, this service only
concurrency = 4
token_env = "HOME_TOKEN"   # optional: the token is read from this env var, never inline
shared = false             # optional: true = several hosts use this service (limit kept in PostgreSQL)
"""  # noqa: E501

SECOND = """
[[upstream]]
name = "vps"
base = "https://parse.example.com/prefix/"
style = "amagi"
rate = 0.5
resolve_base = "http://127.0.0.1:9000"
timeout = 5
retries = 1
park_seconds = 10
park_max_seconds = 60
"""


def without(key: str) -> str:
    return "\n".join(ln for ln in EXAMPLE.splitlines() if not ln.startswith(f"{key} "))


def parse(doc: str, env: dict[str, str] | None = None) -> tuple[object, ...]:
    return parse_upstreams(tomllib.loads(doc), "pool.toml", env or {"HOME_TOKEN": "s3cret"})


def test_the_documented_example_works_as_written() -> None:
    home, vps = parse_upstreams(
        tomllib.loads(EXAMPLE + SECOND), "pool.toml", {"HOME_TOKEN": "s3cret"}, retries=3
    )
    assert (home.name, home.base, home.style, home.rate, home.concurrency) == (
        "home-cookie", "http://127.0.0.1:8000", "seed", 5.0, 4,
    )  # fmt: skip
    assert home.token == Secret("s3cret")
    assert home.token_env == "HOME_TOKEN"
    assert (home.shared, home.retries, home.timeout_s) == (False, 3, 20.0)
    assert "s3cret" not in repr(home)
    assert "s3cret" not in str(home.public())
    assert (vps.base, vps.style, vps.rate, vps.concurrency) == (
        "https://parse.example.com/prefix", "amagi", 0.5, 8,
    )  # fmt: skip
    assert (vps.token, vps.resolve_base, vps.timeout_s, vps.retries) == (
        None, "http://127.0.0.1:9000", 5.0, 1,
    )  # fmt: skip
    assert (vps.park_s, vps.park_max_s) == (10.0, 60.0)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (EXAMPLE.replace("concurrency", "concurency"), "unknown key 'concurency'"),
        (EXAMPLE + EXAMPLE, "two upstreams are named 'home-cookie'"),
        (EXAMPLE.replace('"seed"', '"amagi2"'), '`style` must be "seed" or "amagi"'),
        (EXAMPLE.replace("rate = 5", "rate = 0"), "`rate` must be a positive number"),
        (EXAMPLE.replace("rate = 5", "rate = -2"), "`rate` must be a positive number"),
        (EXAMPLE.replace("rate = 5", 'rate = "5"'), "`rate` must be a number"),
        (EXAMPLE.replace("rate = 5", "rate = true"), "`rate` must be a number"),
        (EXAMPLE.replace("rate = 5", "rate = inf"), "`rate` must be a positive number"),
        (without("rate"), "`rate` is missing"),
        (without("base"), "`base` is missing"),
        (EXAMPLE.replace("concurrency = 4", "concurrency = 0"), "`concurrency` must be between"),
        (EXAMPLE.replace("HOME_TOKEN", "NOT_SET_ANYWHERE"), "NOT_SET_ANYWHERE, which is not set"),
        (EXAMPLE.replace("shared = false", "shared = 1"), "`shared` must be true or false"),
        (EXAMPLE.replace("127.0.0.1:8000", "127.0.0.1:x"), "base: not a valid URL"),
        (EXAMPLE.replace('name = "home-cookie"', 'name = "a b"'), "`name` must be"),
        (EXAMPLE + "oops = 1\n", "unknown key 'oops'"),
        ("[other]\nx = 1\n", "unknown top-level key 'other'"),
        ("", "no [[upstream]] table"),
    ],
)
def test_mistakes_are_one_clear_line(doc: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse(doc)
    assert message in str(info.value)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("pool.toml")


def test_an_inline_token_is_refused_and_never_repeated() -> None:
    doc = EXAMPLE.replace('token_env = "HOME_TOKEN"', 'token = "hunter2"')
    with pytest.raises(UsageError, match="inline `token` is not allowed") as info:
        parse(doc)
    assert "hunter2" not in str(info.value)


def test_shared_true_is_refused_until_the_shared_limiter_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pipeline.upstream import services

    doc = EXAMPLE.replace("shared = false", "shared = true")
    monkeypatch.setattr(services, "SHARED_LIMITER_AVAILABLE", False)
    with pytest.raises(UsageError, match="shared = true"):
        parse(doc)
    monkeypatch.setattr(services, "SHARED_LIMITER_AVAILABLE", True)
    (service,) = parse(doc)
    assert service.shared  # type: ignore[attr-defined]


def test_a_file_that_is_not_toml(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text("[[upstream]\nname = ", encoding="utf-8")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_upstreams(path)
    with pytest.raises(UsageError, match="cannot read the upstreams file"):
        load_upstreams(tmp_path / "missing.toml")


def test_cli_usage_errors_exit_1_without_a_traceback(tmp_path: Path) -> None:
    links = tmp_path / "links.txt"
    links.write_text("https://www.douyin.com/video/7223326284024139065\n", encoding="utf-8")
    pool = tmp_path / "pool.toml"
    pool.write_text(EXAMPLE.replace("HOME_TOKEN", "POOL_TEST_TOKEN"), encoding="utf-8")

    missing = run_ingest(["run", str(links), "--upstreams", str(pool)])
    assert missing.returncode == 1
    assert missing.stderr.count("\n") == 1
    assert "Traceback" not in missing.stderr
    assert "POOL_TEST_TOKEN, which is not set" in missing.stderr

    both = run_ingest(
        ["refresh", "--upstreams", str(pool), "--api-base", "http://127.0.0.1:1"],
        env={"POOL_TEST_TOKEN": "t"},
    )
    assert both.returncode == 1
    assert "--api-base and --upstreams are two ways" in both.stderr

    by_env = run_ingest(["run", str(links)], env={"INGEST_UPSTREAMS": str(tmp_path / "none")})
    assert by_env.returncode == 1
    assert "cannot read the upstreams file" in by_env.stderr


def test_a_pool_from_the_environment_gives_way_to_a_typed_single_service_option(
    tmp_path: Path,
) -> None:
    """INGEST_UPSTREAMS names a pool whose token variable is unset (using it would be exit 1);
    with --api-base typed on the command line the pool is not read at all: a dry run works."""
    links = tmp_path / "links.txt"
    links.write_text("https://www.douyin.com/video/7223326284024139065\n", encoding="utf-8")
    pool = tmp_path / "pool.toml"
    pool.write_text(EXAMPLE.replace("HOME_TOKEN", "POOL_TEST_UNSET"), encoding="utf-8")
    env = {"INGEST_UPSTREAMS": str(pool)}

    with_pool = run_ingest(["run", str(links), "--dry-run"], env=env)
    assert with_pool.returncode == 1
    assert "POOL_TEST_UNSET, which is not set" in with_pool.stderr

    one_off = run_ingest(
        ["run", str(links), "--dry-run", "--api-base", "http://127.0.0.1:1"], env=env
    )
    assert one_off.returncode == 0, one_off.stderr
