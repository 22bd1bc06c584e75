"""The real `ingest` command in a subprocess, against the fake upstream on 127.0.0.1 and a real
PostgreSQL database: accounting of every line, exit codes, idempotence, kill -9 and resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from helpers import ThreadedFake, ingest_command, run_ingest
from pipeline.testing.fake_upstream import FaultConfig
from pipeline.testing.payloads import is_frozen, sample_aweme_ids

pytestmark = pytest.mark.slow

GONE = 7223326284024139065


def shapes(aweme_id: int, fake: ThreadedFake, rng: random.Random) -> str:
    """One input line for a work, in one of the shapes people paste."""
    short = fake.fake.short_link(aweme_id)
    return rng.choice(
        [
            f"7.43 hBG:/ 复制打开抖音，看看【作品】好看 {short} 复制此链接，打开Dou音搜索！",
            short,
            f"{short}复制此链接",
            f"https://www.douyin.com/video/{aweme_id}",
            f"https://www.douyin.com/note/{aweme_id}",
            f"https://www.iesdouyin.com/share/video/{aweme_id}/?region=CN&mid=7049808807056149285",
            f"https://www.douyin.com/discover?modal_id={aweme_id}",
            str(aweme_id),
        ]
    )


def table_counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return {
                t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                for t in (
                    "works",
                    "authors",
                    "music",
                    "hashtags",
                    "work_hashtags",
                    "work_stats",
                    "share_links",
                    "raw_payloads",
                )
            }
    finally:
        engine.dispose()


def fetch_args(fake: ThreadedFake, *extra: str) -> list[str]:
    return ["--api-base", fake.url, "--resolve-base", fake.url, "--no-progress", *extra]


@pytest.mark.parametrize("style", ["seed", "amagi"])
def test_a_thousand_links_with_faults_are_all_accounted_for(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path, style: str
) -> None:
    faults = FaultConfig(
        error_5xx_rate=0.05,
        reset_rate=0.03,
        truncated_rate=0.03,
        non_json_rate=0.02,
        soft_failure_rate=0.03,
        timeout_rate=0.01,
        hang_s=5,
        fail_attempts=1,
        gone_ids=frozenset({GONE}),
    )
    fake = fake_server(seed=0, faults=faults)
    rng = random.Random(7)
    ids = sample_aweme_ids(930, seed=0)
    lines = [shapes(i, fake, rng) for i in ids]
    # 40 repeats of id-carrying links in another id-carrying shape: duplicates by aweme_id
    lines += [
        f"https://www.douyin.com/video/{i}"
        for i in ids[:40]
        if not lines[ids.index(i)].count("v.douyin")
    ]
    dup_expected = len(lines) - 930
    lines += [f"https://www.douyin.com/video/{GONE}"]
    bad = [f"https://example.com/video/{n}" for n in range(15)] + [f"垃圾行 {n}" for n in range(14)]
    lines += bad
    rng.shuffle(lines)
    lines = ["# a comment", "", *lines, "   "]
    total = len([ln for ln in lines if ln.strip() and not ln.startswith("#")])
    assert total == 930 + dup_expected + 1 + 29
    path = tmp_path / "urls.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    result = run_ingest(
        [
            "run",
            str(path),
            *fetch_args(
                fake, "--rate", "300", "--concurrency", "16", "--timeout", "1", "--retries", "3"
            ),
            "--api-style",
            style,
        ],
        env={"DATABASE_URL": db_url},
        timeout=300,
    )
    assert result.returncode == 2, result.stderr  # documented: some lines invalid
    assert "Traceback" not in result.stderr

    counts = table_counts(db_url)
    assert counts["works"] == 930
    assert counts["raw_payloads"] == 930
    assert counts["work_stats"] == 930
    # one row per distinct link: 930 works + the gone one + 29 distinct rejected lines
    assert counts["share_links"] == 930 + 1 + 29
    engine = create_engine(db_url)
    with engine.connect() as conn:
        by_outcome = dict(
            conn.execute(text("SELECT last_outcome, count(*) FROM share_links GROUP BY 1")).all()
        )
        run = conn.execute(text("SELECT status, counts FROM ingest_runs")).one()
        unresolved = conn.execute(
            text(
                "SELECT count(*) FROM share_links "
                "WHERE last_outcome = 'loaded' AND aweme_id IS NULL"
            )
        ).scalar_one()
    engine.dispose()
    assert by_outcome == {"loaded": 930, "gone": 1, "invalid": 29}
    assert unresolved == 0
    assert run.status == "partial"
    c = run.counts
    assert c["lines"] == total
    assert (c["loaded"], c["gone"], c["invalid"], c["duplicate"]) == (930, 1, 29, dup_expected)
    assert c.get("failed", 0) == 0
    assert c["loaded"] + c["gone"] + c["invalid"] + c["duplicate"] == total
    # Faults really happened and were retried.
    served = fake.fake.served
    assert sum(1 for r in served if r.status >= 500 or r.status == 0) > 20


def test_second_run_makes_no_requests_and_force_adds_only_changed_snapshots(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    fake = fake_server(seed=3)
    ids = sample_aweme_ids(40, seed=3)
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"https://www.douyin.com/video/{i}\n" for i in ids))
    args = ["run", str(path), *fetch_args(fake, "--rate", "200")]
    env = {"DATABASE_URL": db_url}

    first = run_ingest(args, env=env)
    assert first.returncode == 0, first.stderr
    served = len(fake.fake.served)
    assert served == 40

    second = run_ingest(args, env=env)
    assert second.returncode == 0, second.stderr
    assert len(fake.fake.served) == served  # zero upstream requests
    assert table_counts(db_url)["work_stats"] == 40

    fake.fake.advance(2 * 3600)  # counts of non-frozen works move every simulated hour
    forced = run_ingest([*args, "--force"], env=env)
    assert forced.returncode == 0, forced.stderr
    assert len(fake.fake.served) == served + 40
    moving = sum(1 for i in ids if not is_frozen(i, seed=3))
    assert 0 < moving < 40
    assert table_counts(db_url)["work_stats"] == 40 + moving


def test_sigkill_mid_run_then_rerun_equals_an_uninterrupted_run(
    db_url: str,
    fake_server: Callable[..., ThreadedFake],
    tmp_path: Path,
    admin_engine: object,
    pg_server_url: str,
    template_url: str,
) -> None:
    from sqlalchemy.engine import make_url

    fake = fake_server(seed=5, faults=FaultConfig(latency_s=0.05))
    ids = sample_aweme_ids(150, seed=5)
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"{fake.fake.short_link(i)}\n" for i in ids))
    args = ["run", str(path), *fetch_args(fake, "--rate", "40", "--batch-size", "10")]
    env = {**os.environ, "DATABASE_URL": db_url}

    proc = subprocess.Popen(
        [*ingest_command(), *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    engine = create_engine(db_url)
    deadline = time.monotonic() + 60
    done = 0
    while time.monotonic() < deadline and done < 30:
        time.sleep(0.1)
        with engine.connect() as conn:
            done = conn.execute(text("SELECT count(*) FROM share_links")).scalar_one()
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    assert 30 <= done < 150, "the run must be killed in the middle"

    resumed = run_ingest(args, env={"DATABASE_URL": db_url})
    assert resumed.returncode == 0, resumed.stderr

    # The reference: the same input, uninterrupted, into another fresh database.
    ref_name = make_url(db_url).database + "_ref"
    with admin_engine.connect() as conn:  # type: ignore[attr-defined]
        conn.execute(text(f"CREATE DATABASE {ref_name} TEMPLATE ingest_template"))
    ref_url = make_url(db_url).set(database=ref_name).render_as_string(hide_password=False)
    try:
        reference = run_ingest(args, env={"DATABASE_URL": ref_url})
        assert reference.returncode == 0, reference.stderr
        assert table_counts(db_url) == table_counts(ref_url)
        query = text(
            "SELECT w.aweme_id, w.author_uid, w.music_id, s.digg_count, s.comment_count, "
            "array(SELECT hashtag_name FROM work_hashtags h WHERE h.aweme_id = w.aweme_id "
            "ORDER BY position) FROM works w JOIN work_stats s USING (aweme_id) ORDER BY 1"
        )
        ref_engine = create_engine(ref_url)
        with engine.connect() as a, ref_engine.connect() as b:
            assert a.execute(query).all() == b.execute(query).all()
            dupes = a.execute(
                text("SELECT count(*) - count(DISTINCT aweme_id) FROM work_stats")
            ).scalar_one()
            assert dupes == 0
            statuses = [r[0] for r in a.execute(text("SELECT status FROM ingest_runs ORDER BY 1"))]
        ref_engine.dispose()
        # The re-run found the killed run's pid gone and closed its record.
        assert statuses == ["abandoned", "succeeded"]
    finally:
        engine.dispose()
        with admin_engine.connect() as conn:  # type: ignore[attr-defined]
            conn.execute(text(f"DROP DATABASE IF EXISTS {ref_name} WITH (FORCE)"))


def test_sigterm_commits_the_current_batch_and_marks_the_run_interrupted(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    fake = fake_server(seed=6, faults=FaultConfig(latency_s=0.05))
    ids = sample_aweme_ids(200, seed=6)
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"https://www.douyin.com/video/{i}\n" for i in ids))
    args = ["run", str(path), *fetch_args(fake, "--rate", "30", "--batch-size", "1000")]
    proc = subprocess.Popen(
        [*ingest_command(), *args],
        env={**os.environ, "DATABASE_URL": db_url},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while len(fake.fake.served) < 20:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    engine = create_engine(db_url)
    with engine.connect() as conn:
        status, counts = conn.execute(text("SELECT status, counts FROM ingest_runs")).one()
        loaded = conn.execute(text("SELECT count(*) FROM works")).scalar_one()
        links = conn.execute(text("SELECT count(*) FROM share_links")).scalar_one()
    engine.dispose()
    assert status == "interrupted"
    # Nothing could have been committed before the signal (batch size 1000, 2 s flush timer
    # not reached): the batch in memory was committed on the way out, and the run record
    # says exactly what is stored. Requests still in flight were dropped, not recorded.
    assert 10 <= loaded < 200
    assert links == loaded == counts["loaded"]


def test_operator_error_stops_early_with_its_exit_code_and_loses_nothing(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    fake = fake_server(seed=1, faults=FaultConfig(cookie_expired=True))
    ids = sample_aweme_ids(50, seed=1)
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"https://www.douyin.com/video/{i}\n" for i in ids))
    result = run_ingest(
        ["run", str(path), *fetch_args(fake, "--rate", "100", "--api-style", "amagi")],
        env={"DATABASE_URL": db_url},
    )
    assert result.returncode == 77, result.stderr
    assert "cookie" in (result.stdout + result.stderr).lower()
    assert len(fake.fake.served) < 20  # stopped quickly, no error storm
    counts = table_counts(db_url)
    assert counts["share_links"] == 0  # nothing recorded as failed: a re-run retries all


def test_token_is_sent_but_never_shown_or_stored(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    token = "s3cr3t-token-value"
    fake = fake_server(seed=2, faults=FaultConfig(require_token=token))
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"{i}\n" for i in sample_aweme_ids(5, seed=2)))
    ok = run_ingest(
        ["run", str(path), *fetch_args(fake, "-vv")],
        env={"DATABASE_URL": db_url, "DOUYIN_API_TOKEN": token},
    )
    assert ok.returncode == 0, ok.stderr
    assert token not in ok.stdout + ok.stderr
    wrong = run_ingest(
        ["run", str(path), "--force", *fetch_args(fake, "-vv")],
        env={"DATABASE_URL": db_url, "DOUYIN_API_TOKEN": "wrong-" + token},
    )
    assert wrong.returncode == 77
    assert token not in wrong.stdout + wrong.stderr
    engine = create_engine(db_url)
    with engine.connect() as conn:
        dump = " ".join(
            str(row)
            for t in ("ingest_runs", "share_links", "raw_payloads")
            for row in conn.execute(text(f"SELECT * FROM {t}"))
        )
    engine.dispose()
    assert token not in dump


def test_user_mistakes_get_one_clear_line_and_a_documented_code(
    db_url: str, tmp_path: Path
) -> None:
    missing = run_ingest(["run", str(tmp_path / "nope.txt")], env={"DATABASE_URL": db_url})
    assert missing.returncode == 1
    assert "cannot read input file" in missing.stderr
    assert "Traceback" not in missing.stderr

    bad_option = run_ingest(["run", "x.txt", "--rate", "fast"])
    assert bad_option.returncode == 1
    assert "Traceback" not in bad_option.stderr

    path = tmp_path / "urls.txt"
    path.write_text("https://www.douyin.com/video/7071967230287744267\n")
    no_db = run_ingest(
        ["run", str(path), "--no-progress"],
        env={"DATABASE_URL": "postgresql://u:hunter2@127.0.0.1:1/none"},
    )
    assert no_db.returncode == 3
    assert "hunter2" not in no_db.stderr + no_db.stdout
    assert "Traceback" not in no_db.stderr


def test_schema_behind_is_refused_for_a_given_url(db_url: str, tmp_path: Path) -> None:
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    engine.dispose()
    path = tmp_path / "urls.txt"
    path.write_text("7071967230287744267\n")
    result = run_ingest(["run", str(path), "--no-progress"], env={"DATABASE_URL": db_url})
    assert result.returncode == 3
    assert "ingest db upgrade" in result.stderr


def test_dry_run_counts_without_fetching_or_writing(tmp_path: Path) -> None:
    path = tmp_path / "urls.txt"
    path.write_text(
        "https://www.douyin.com/video/7071967230287744267\n"
        "7071967230287744267\n"
        "not a link\n"
        "# comment\n"
    )
    result = run_ingest(["run", str(path), "--dry-run"])
    assert result.returncode == 2  # one invalid line
    assert "1 links would be fetched" in result.stdout


def test_stdin_is_read_with_a_dash(db_url: str, fake_server: Callable[..., ThreadedFake]) -> None:
    fake = fake_server(seed=4)
    ids = sample_aweme_ids(3, seed=4)
    result = run_ingest(
        ["-", *fetch_args(fake)],  # `ingest -` with no subcommand: the default action
        env={"DATABASE_URL": db_url},
        stdin="".join(f"{i}\n" for i in ids),
    )
    assert result.returncode == 0, result.stderr
    assert table_counts(db_url)["works"] == 3


def test_an_unreachable_upstream_stops_the_run_early_with_75(db_url: str, tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"{i}\n" for i in sample_aweme_ids(200, seed=8)))
    result = run_ingest(
        [
            "run",
            str(path),
            "--api-base",
            f"http://127.0.0.1:{port}",
            "--retries",
            "0",
            "--concurrency",
            "4",
            "--no-progress",
            "--log-format",
            "json",
        ],
        env={"DATABASE_URL": db_url},
    )
    assert result.returncode == 75, result.stderr
    assert "did not answer" in result.stdout
    # --log-format json: every stderr line is one JSON object.
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(r["level"] == "error" and "did not answer" in r["message"] for r in records)
    assert len([r for r in records if r["level"] == "error"]) == 1  # one line per stop
    assert f"127.0.0.1:{port}" in result.stderr  # the line names the service's URL
    counts = table_counts(db_url)
    # Stopped after a handful of links, not after trying all 200; the rest are counted.
    assert 1 <= counts["share_links"] < 30
    # --log-format json: stdout is the one summary object, with the links not attempted.
    left = json.loads(result.stdout)["counts"]["not_attempted"]
    assert counts["share_links"] + left == 200


def test_a_known_work_found_gone_by_force_is_marked_and_keeps_its_stats(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    fake = fake_server(seed=9)
    ids = sample_aweme_ids(5, seed=9)
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"{i}\n" for i in ids))
    env = {"DATABASE_URL": db_url}
    assert run_ingest(["run", str(path), *fetch_args(fake)], env=env).returncode == 0
    fake.fake.faults = FaultConfig(gone_ids=frozenset({ids[2]}))
    forced = run_ingest(["run", str(path), "--force", *fetch_args(fake)], env=env)
    assert forced.returncode == 0, forced.stderr  # gone is an outcome, not a failure
    engine = create_engine(db_url)
    with engine.connect() as conn:
        gone = conn.execute(
            text("SELECT aweme_id, gone_reason FROM works WHERE gone_at IS NOT NULL")
        ).all()
        stats = conn.execute(
            text("SELECT count(*) FROM work_stats WHERE aweme_id = :a"), {"a": ids[2]}
        ).scalar_one()
    engine.dispose()
    assert [g.aweme_id for g in gone] == [ids[2]]
    assert "status_self_see" in gone[0].gone_reason
    assert stats == 1


def test_a_slow_pipe_on_stdin_is_processed_as_lines_arrive(
    db_url: str, fake_server: Callable[..., ThreadedFake]
) -> None:
    fake = fake_server(seed=10)
    ids = sample_aweme_ids(3, seed=10)
    proc = subprocess.Popen(
        [*ingest_command(), "-", *fetch_args(fake), "--batch-size", "1"],
        env={**os.environ, "DATABASE_URL": db_url},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None
    engine = create_engine(db_url)
    try:
        for n, aweme_id in enumerate(ids, start=1):
            proc.stdin.write(f"{aweme_id}\n")
            proc.stdin.flush()
            # Loaded while stdin stays open: the reader never blocks the fetch/load stages.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    if conn.execute(text("SELECT count(*) FROM works")).scalar_one() == n:
                        break
                time.sleep(0.1)
            else:
                pytest.fail(f"link {n} was not loaded while stdin stayed open")
        proc.stdin.close()
        assert proc.wait(30) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
        engine.dispose()
