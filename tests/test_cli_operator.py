"""The command line an operator meets (issue 12): one test (or a few) per defect found by using
the tool as a new user would. Each runs the real command unless the defect is in a function."""

from __future__ import annotations

import inspect
import json
import logging
import os
import sys
import textwrap
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

from helpers import ThreadedFake, run_ingest
from pipeline.cli.app import cli
from pipeline.cli.db import role_from_psql_args
from pipeline.db.engine import _start_failure, error_reason
from pipeline.progress import LogReporter
from pipeline.testing.fake_upstream import FaultConfig
from pipeline.testing.payloads import sample_aweme_ids

PASSWORD = "reader-Pa55"


def _urls(tmp_path: Path, lines: list[str], name: str = "urls.txt") -> Path:
    path = tmp_path / name
    path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
    return path


def _fetch(fake: ThreadedFake) -> list[str]:
    return ["--api-base", fake.url, "--rate", "500", "--no-progress"]


# -- 1. `ingest db psql -U ROLE` connects as that role, never as the owner --------------------


def test_psql_role_arguments_are_taken_out_of_psql_args() -> None:
    assert role_from_psql_args(["-U", "a", "-c", "x"]) == ("a", ["-c", "x"])
    assert role_from_psql_args(["-Ua", "--username=b", "-c", "x"]) == ("b", ["-c", "x"])
    assert role_from_psql_args(["--", "-U", "a"]) == (None, ["--", "-U", "a"])


def test_psql_as_a_read_only_role_cannot_write_and_needs_its_password(pg_data_dir: Path) -> None:
    data = ["--data-dir", str(pg_data_dir)]
    granted = run_ingest(
        ["db", "grant-readonly", "reader", "--password-env", "RO_PW", *data],
        env={"RO_PW": PASSWORD},
        timeout=180,
    )
    assert granted.returncode == 0, granted.stderr

    def psql(password: str, *args: str) -> tuple[int, str]:
        result = run_ingest(["db", "psql", *data, *args], env={"PGPASSWORD": password})
        return result.returncode, result.stdout + result.stderr

    code, out = psql(PASSWORD, "-U", "reader", "-c", "delete from works")
    assert code != 0, out
    assert "permission denied" in out
    code, out = psql(PASSWORD, "--role", "reader", "-tA", "-c", "select current_user")
    assert (code, out.strip()) == (0, "reader"), out
    code, out = psql("wrong", "-U", "reader", "-c", "select 1")
    assert code != 0, out
    assert "password authentication failed" in out
    # The owner still gets in without a password.
    code, out = psql("", "-tA", "-c", "select count(*) from works")
    assert (code, out.strip()) == (0, "0"), out


# -- 2. a short or common password does not garble database errors ----------------------------


def test_masking_the_password_keeps_the_message_readable() -> None:
    refused = Exception('connection to server at "127.0.0.1", port 1 failed: Connection refused')
    assert error_reason(refused, "p") == str(refused)
    as_user = Exception('password authentication failed for user "postgres"')
    assert error_reason(as_user, "postgres", public=["postgres"]) == str(as_user)
    assert error_reason(Exception("echoed hunter2 back"), "hunter2") == "echoed *** back"


def test_a_refused_connection_reads_as_the_driver_wrote_it() -> None:
    result = run_ingest(["runs", "--database-url", "postgresql://u:p@127.0.0.1:1/db"])
    assert result.returncode == 3, result.stderr
    assert "port 1 failed" in result.stderr, result.stderr
    assert "***" not in result.stderr


# -- 3. no tracebacks -------------------------------------------------------------------------


def test_an_unwritable_export_file_is_a_usage_error(db_url: str) -> None:
    result = run_ingest(
        ["failures", "--export", "/nonexistent/dir/x.txt"], env={"DATABASE_URL": db_url}
    )
    assert result.returncode == 1, result.stderr
    assert "cannot write '/nonexistent/dir/x.txt'" in result.stderr
    assert "Traceback" not in result.stderr


def test_ctrl_c_while_the_program_starts_is_an_interruption(tmp_path: Path) -> None:
    # A Ctrl-C that lands while the heavy libraries load: simulated by an import hook, so the
    # moment is exact.
    (tmp_path / "sitecustomize.py").write_text(
        textwrap.dedent(
            """
            import sys

            class Interrupt:
                def find_spec(self, name, path=None, target=None):
                    if name == "sqlalchemy":
                        raise KeyboardInterrupt
                    return None

            sys.meta_path.insert(0, Interrupt())
            """
        )
    )
    env = {"PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    result = run_ingest(["runs"], env=env)
    assert result.returncode == 130, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip() == "ingest: interrupted"


# -- 4. invalid means invalid -----------------------------------------------------------------


def test_links_rejected_as_invalid_are_remembered_and_not_exported_by_default(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    ids = sample_aweme_ids(3, seed=61)
    fake = fake_server(seed=61, faults=FaultConfig(error_5xx_rate=1.0, fail_attempts=9))
    good = [f"https://www.douyin.com/video/{i}" for i in ids]
    path = _urls(tmp_path, [*good, "https://v.douyin.com/nosuchcode/", "junk line"])
    env = {"DATABASE_URL": db_url}
    args = ["run", str(path), *_fetch(fake), "--retries", "0"]
    first = run_ingest(args, env=env)
    assert first.returncode == 75, first.stderr  # 5xx everywhere: temporary failures
    engine = create_engine(db_url)
    with engine.connect() as conn:
        rows = dict(
            conn.execute(
                text("SELECT url, last_outcome || ':' || retryable FROM share_links")
            ).all()
        )
    engine.dispose()
    assert rows["https://v.douyin.com/nosuchcode/"] == "invalid:false", rows
    assert all(rows[u] == "failed:true" for u in good), rows

    export = tmp_path / "retry.txt"
    exported = run_ingest(["failures", "--export", str(export)], env=env)
    assert exported.returncode == 0, exported.stderr
    assert sorted(export.read_text().splitlines()) == sorted(good)
    everything = tmp_path / "all.txt"
    assert run_ingest(["failures", "--export", str(everything), "--all"], env=env).returncode == 0
    assert sorted(everything.read_text().splitlines()) == sorted(
        [*good, "https://v.douyin.com/nosuchcode/"]
    )

    # The service recovers. The invalid short link is not asked again, the junk line is no
    # new problem: exit 0.
    fake.fake.faults = FaultConfig()

    def asked_invalid() -> int:
        return sum(1 for r in fake.fake.served if r.outcome == "invalid_link")

    assert asked_invalid() == 1
    second = run_ingest(args, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    assert asked_invalid() == 1  # not asked again
    assert "rejected as invalid before" in second.stdout
    forced = run_ingest([*args, "--force"], env=env)
    assert asked_invalid() == 2
    # --force asks again; rejected again, it is still no new problem.
    assert forced.returncode == 0, forced.stdout + forced.stderr


# -- 5. scriptable output ---------------------------------------------------------------------


def test_json_logs_make_stdout_one_object_and_stderr_json_lines(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    fake = fake_server(seed=62)
    ids = sample_aweme_ids(5, seed=62)
    path = _urls(tmp_path, [*(str(i) for i in ids), "junk"])
    env = {"DATABASE_URL": db_url}
    result = run_ingest(
        ["--log-format", "json", str(path), *_fetch(fake), "-v", "--progress"], env=env
    )
    assert result.returncode == 2, result.stderr
    summary = json.loads(result.stdout)
    assert summary["exit_code"] == 2
    assert summary["status"] == "partial"
    assert summary["counts"]["loaded"] == 5
    assert summary["counts"]["invalid"] == 1
    lines = [json.loads(line) for line in result.stderr.splitlines()]
    outcomes = [entry for entry in lines if entry["logger"] == "pipeline.links"]
    # Ids as strings: 19 digits do not survive a JSON number read as a double (jq, JS).
    loaded = sorted(e["aweme_id"] for e in outcomes if e["outcome"] == "loaded")
    assert loaded == sorted(str(i) for i in ids)

    def json_lines(args: list[str]) -> list[dict[str, object]]:
        return [json.loads(line) for line in run_ingest(args, env=env).stdout.splitlines()]

    runs = json_lines(["runs", "--json"])
    assert runs[0]["run_id"] == summary["run_id"]
    assert runs[0]["counts"]["loaded"] == 5
    failures = json_lines(["failures", "--json"])
    assert [f["link"] for f in failures] == ["junk"]
    current = run_ingest(["db", "current", "--json"], env=env)
    assert json.loads(current.stdout)["up_to_date"] is True

    # An error is JSON too, on both streams.
    bad = run_ingest(["--log-format", "json", str(tmp_path / "missing.txt")], env=env)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["exit_code"] == 1
    assert "cannot read input file" in json.loads(bad.stderr)["message"]


def test_piped_tables_never_wrap_a_link(db_url: str, tmp_path: Path) -> None:
    link = "https://www.example.com/" + "x" * 200
    path = _urls(tmp_path, [link])
    env = {"DATABASE_URL": db_url}
    assert run_ingest(["run", str(path), "--no-progress"], env=env).returncode == 2
    listing = run_ingest(["failures"], env=env)
    assert any(link in line for line in listing.stdout.splitlines()), listing.stdout


# -- 6. verbosity matches its help ------------------------------------------------------------


def test_v_logs_one_line_per_link_and_vv_every_attempt_without_library_noise(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    fake = fake_server(seed=63)
    ids = sample_aweme_ids(3, seed=63)
    path = _urls(tmp_path, [str(i) for i in ids])
    env = {"DATABASE_URL": db_url}
    v = run_ingest(["run", str(path), *_fetch(fake), "-v"], env=env)
    assert v.returncode == 0, v.stderr
    link_lines = [line for line in v.stderr.splitlines() if " link https://" in line]
    assert len(link_lines) == 3, v.stderr
    for i in ids:
        assert any(f"id {i}: loaded, 1 attempts" in line for line in link_lines)
    assert "upstream attempt" not in v.stderr

    vv = run_ingest(["run", str(path), *_fetch(fake), "-vv", "--force"], env=env)
    assert vv.returncode == 0, vv.stderr
    assert vv.stderr.count("upstream attempt") == 3
    assert "Using selector" not in vv.stderr  # asyncio's own debug line: only with --debug


# -- 7. the demo has a database of its own ----------------------------------------------------


def test_the_demo_never_touches_the_default_database(pg_data_dir: Path) -> None:
    pg_data_dir.mkdir()
    # A DATABASE_URL in the environment is not the demo's either.
    env = {"XDG_DATA_HOME": str(pg_data_dir), "DATABASE_URL": "postgresql://x@127.0.0.1:1/x"}
    for args in (["demo"], ["demo", "--api-style", "amagi"]):
        result = run_ingest(args, env=env, timeout=180)
        assert result.returncode == 0, result.stderr
        assert "already loaded" not in result.stdout
        loaded = [line for line in result.stdout.splitlines() if "│ loaded" in line]
        assert loaded, result.stdout
        assert loaded[0].split("│")[1].strip() == "10", result.stdout
        assert "rejected on purpose" in result.stdout
    assert (pg_data_dir / "douyin-ingest-demo" / "pg").is_dir()
    assert not (pg_data_dir / "douyin-ingest").exists()  # the default database: never made


def test_the_demo_refuses_a_directory_it_did_not_create(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("real data")
    result = run_ingest(["demo", "--data-dir", str(tmp_path)])
    assert result.returncode == 1
    assert "was not created by `ingest demo`" in result.stderr


# -- 8. smaller things ------------------------------------------------------------------------


def test_the_start_error_names_a_log_only_when_there_is_one(tmp_path: Path) -> None:
    pgdata = tmp_path / "pg"
    assert "see" not in _start_failure(pgdata, PermissionError("Permission denied"))
    pgdata.mkdir()
    (pgdata / "log").write_text("FATAL: …")
    assert f"see {pgdata / 'log'}" in _start_failure(pgdata, RuntimeError("x"))


def test_an_unusable_data_dir_is_one_line_not_a_traceback() -> None:
    result = run_ingest(["runs", "--data-dir", "/dev/null/sub"])
    assert result.returncode == 3, result.stderr
    assert "Traceback" not in result.stderr
    assert "/log" not in result.stderr


def test_db_current_exits_3_when_the_database_is_behind(db_url: str) -> None:
    from alembic import command

    from pipeline.db.migrate import alembic_config

    engine = create_engine(db_url)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0006")
    engine.dispose()
    result = run_ingest(["db", "current"], env={"DATABASE_URL": db_url})
    assert "behind" in result.stdout
    assert result.returncode == 3


def test_a_401_without_a_token_says_no_token_was_set(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    fake = fake_server(seed=64, faults=FaultConfig(require_token="sesame"))
    path = _urls(tmp_path, [str(i) for i in sample_aweme_ids(2, seed=64)])
    result = run_ingest(["run", str(path), *_fetch(fake)], env={"DATABASE_URL": db_url})
    assert result.returncode == 77, result.stderr
    assert "No API token was set" in result.stdout


def test_a_work_link_pasted_without_its_scheme_is_fetched(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    fake = fake_server(seed=65)
    (aweme_id,) = sample_aweme_ids(1, seed=65)
    path = _urls(tmp_path, [f"douyin.com/video/{aweme_id}"])
    result = run_ingest(["run", str(path), *_fetch(fake)], env={"DATABASE_URL": db_url})
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r.aweme_id for r in fake.fake.served] == [aweme_id]


def test_the_refresh_progress_line_counts_due_works(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pipeline.progress")
    LogReporter(interval_s=0, total="due").update(Counter(due=3, loaded=1))
    assert "3 works due" in caplog.text
    assert "read 0 links" not in caplog.text


def test_an_unknown_run_is_a_usage_error(db_url: str) -> None:
    result = run_ingest(["failures", "--run", "9999"], env={"DATABASE_URL": db_url})
    assert result.returncode == 1
    assert "there is no run 9999" in result.stderr


def test_an_empty_input_file_is_reported(db_url: str, tmp_path: Path) -> None:
    path = _urls(tmp_path, ["# only a comment", ""])
    result = run_ingest(["run", str(path), "--no-progress"], env={"DATABASE_URL": db_url})
    assert result.returncode == 0
    assert f"{path}: no links to read" in result.stderr


def test_top_level_help_shows_every_command_description_whole() -> None:
    result = CliRunner().invoke(cli, ["--help"], terminal_width=80)
    commands = result.output.split("Commands:")[1]
    assert "..." not in commands
    for name, command in cli.commands.items():
        assert command.get_short_help_str(limit=1000) in commands, name


# -- 9. test data directories survive a second pytest ------------------------------------------


def test_embedded_data_dirs_are_outside_pytests_temp_root(
    pg_data_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    base = tmp_path_factory.getbasetemp().resolve().parent  # pytest-of-<user>
    assert not pg_data_dir.resolve().is_relative_to(base)
    assert pg_data_dir.parent.stat().st_mode & 0o005 == 0o005  # others may enter and read


def test_no_test_gives_an_embedded_server_a_directory_under_tmp_path() -> None:
    here = Path(__file__).resolve().parent
    offenders = [
        p.name
        for p in here.rglob("*.py")
        if "--data-dir" in (src := p.read_text(encoding="utf-8"))
        and any("--data-dir" in line and "tmp_path" in line for line in src.splitlines())
        and p.name != Path(__file__).name
    ]
    assert offenders == []


# -- 10. layout: typed commands, registered in one place ----------------------------------------


def _all_commands(group: click.Group) -> list[click.Command]:
    found: list[click.Command] = []
    for command in group.commands.values():
        found.append(command)
        if isinstance(command, click.Group):
            found.extend(_all_commands(command))
    return found


def test_no_command_takes_an_untyped_bag_of_params() -> None:
    for command in _all_commands(cli):
        assert command.callback is not None
        params = inspect.signature(inspect.unwrap(command.callback)).parameters.values()
        assert all(p.kind is not p.VAR_KEYWORD for p in params), command.name
