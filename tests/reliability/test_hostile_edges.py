"""Hostile answers whose right outcome is not a permanent failure, and the token under hostile
redirects: each a small run of the real `ingest` command."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hostile_corpus import fetch_args, link_rows, query

from helpers import ThreadedFake, run_ingest
from pipeline.testing.fake_upstream import FaultConfig
from pipeline.testing.hostile import Hostile
from pipeline.testing.payloads import sample_aweme_ids

pytestmark = pytest.mark.slow


def _write(tmp_path: Path, ids: list[int]) -> Path:
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"https://www.douyin.com/video/{i}\n" for i in ids))
    return path


def test_slow_drip_times_out_as_a_temporary_failure_and_the_run_goes_on(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    """A body trickling in slower than the timeout is a timeout: temporary (exit 75), retried
    by the next run, and the other links of the run are not held up by it. (The body is read
    the same way in both styles; amagi is the one whose service has timeouts of its own.)"""
    ids = sample_aweme_ids(12, seed=41)
    drip, good = ids[:3], ids[3:]
    fake = fake_server(seed=41, faults=FaultConfig(hostile=dict.fromkeys(drip, Hostile.SLOW_DRIP)))
    args = ["run", str(_write(tmp_path, ids))]
    args += fetch_args(fake, "amagi", "--timeout", "1", "--retries", "1")
    env = {"DATABASE_URL": db_url}

    first = run_ingest(args, env=env, timeout=120)
    assert "Traceback" not in first.stderr
    assert first.returncode == 75, first.stderr
    rows = link_rows(db_url)
    assert {i: rows[i].last_outcome for i in good} == dict.fromkeys(good, "loaded")
    for i in drip:
        assert rows[i].last_outcome == "failed"
        assert "timed out" in rows[i].last_reason
    (run,) = query(db_url, "SELECT * FROM ingest_runs")
    assert run.finished_at is not None
    assert run.counts.get("failed_temporary") == len(drip)

    before = len(fake.fake.served)
    again = run_ingest(args, env=env, timeout=120)
    assert again.returncode == 75, again.stderr
    asked = {r.aweme_id for r in fake.fake.served[before:]}
    assert asked == set(drip)  # temporary failures are tried again; loaded links are not


def test_moderate_nesting_loads_or_fails_alone_without_stopping_the_run(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    """600 levels pass Python's parser; the audit saw ~500 levels wedge every run in the JSONB
    input or in flatten. Storing it or refusing it are both fine: stopping the run is not."""
    ids = sample_aweme_ids(20, seed=42)
    nested, good = ids[:2], ids[2:]
    faults = FaultConfig(hostile=dict.fromkeys(nested, Hostile.MODERATE_NESTING))
    fake = fake_server(seed=42, faults=faults)
    args = ["run", str(_write(tmp_path, ids)), *fetch_args(fake, "seed", "--retries", "0")]

    result = run_ingest(args, env={"DATABASE_URL": db_url}, timeout=120)
    assert "Traceback" not in result.stderr
    rows = link_rows(db_url)
    assert {i: rows[i].last_outcome for i in good} == dict.fromkeys(good, "loaded")
    outcomes = {rows[i].last_outcome for i in nested}
    assert outcomes in ({"loaded"}, {"failed"})
    assert result.returncode == (0 if outcomes == {"loaded"} else 2), result.stderr
    (run,) = query(db_url, "SELECT * FROM ingest_runs")
    assert run.finished_at is not None


def test_the_token_never_follows_a_redirect_and_never_shows(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    """The service wants a token; hostile answers redirect to another port, to file:, and to
    itself for another work. The listener sees nothing, and the token is in no output and no
    table."""
    token = "tok-6f1c2a9e-secret"
    ids = sample_aweme_ids(10, seed=43)
    redirects = {
        ids[0]: Hostile.REDIRECT_OFF_HOST,
        ids[1]: Hostile.REDIRECT_FILE,
        ids[2]: Hostile.REDIRECT_OTHER_WORK,
    }
    listener = fake_server(seed=43)
    faults = FaultConfig(hostile=redirects, redirect_target=listener.url, require_token=token)
    fake = fake_server(seed=43, faults=faults)
    args = ["run", str(_write(tmp_path, ids)), *fetch_args(fake, "seed", "--retries", "1")]

    result = run_ingest(args, env={"DATABASE_URL": db_url, "DOUYIN_API_TOKEN": token}, timeout=120)
    assert "Traceback" not in result.stderr
    assert result.returncode == 2, result.stderr
    assert listener.fake.served == []
    rows = link_rows(db_url)
    assert {i: rows[i].last_outcome for i in redirects} == dict.fromkeys(redirects, "failed")
    assert all(rows[i].last_outcome == "loaded" for i in ids[3:])
    assert token not in result.stdout + result.stderr
    dump = query(
        db_url,
        "SELECT string_agg(t::text, ' ') AS s FROM ("
        " SELECT to_jsonb(r) AS t FROM ingest_runs r UNION ALL"
        " SELECT to_jsonb(l) FROM share_links l) x",
    )
    assert token not in dump[0].s


_KNOWN_CONTENT = """
    SELECT w.aweme_id, w.description, w.author_uid, w.music_id,
           (SELECT string_agg(hashtag_name, ' ' ORDER BY position) FROM work_hashtags h
             WHERE h.aweme_id = w.aweme_id) AS tags
      FROM works w ORDER BY w.aweme_id
"""


def test_a_degraded_answer_under_force_keeps_what_was_known_and_reprocess_rebuilds_it(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    """Audit point 5: `--force` against payloads without author, music, description and
    hashtags blanked them and overwrote the raw payload, so `reprocess` could not recover."""
    ids = sample_aweme_ids(8, seed=44)
    fake = fake_server(seed=44)
    args = ["run", str(_write(tmp_path, ids)), *fetch_args(fake, "seed", "--retries", "0")]
    env = {"DATABASE_URL": db_url}
    assert run_ingest(args, env=env).returncode == 0
    known = query(db_url, _KNOWN_CONTENT)
    assert len(known) == len(ids)
    assert sum(1 for r in known if r.author_uid and r.description and r.tags) >= 3

    fake.fake.faults = FaultConfig(hostile=dict.fromkeys(ids, Hostile.DEGRADED))
    forced = run_ingest([*args, "--force"], env=env)
    assert "Traceback" not in forced.stderr
    assert forced.returncode == 0, forced.stderr
    assert {r.aweme_id for r in fake.fake.served[len(ids) :]} == set(ids)
    assert query(db_url, _KNOWN_CONTENT) == known
    rows = query(db_url, "SELECT * FROM raw_payloads ORDER BY aweme_id")
    assert len(rows) == len(ids)
    for raw in rows:  # the degraded answer is kept as the newest, next to the complete one
        assert "author" not in raw.payload or raw.payload["author"] is None
        assert raw.complete_payload["author"]["uid"]

    rebuilt = run_ingest(["reprocess", "--database-url", db_url, "--no-progress"])
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert query(db_url, _KNOWN_CONTENT) == known
