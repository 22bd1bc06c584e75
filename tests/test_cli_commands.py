"""The other commands, end to end: demo on an embedded database, runs, failures and their
export round trip, reprocess, and the db subcommands."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from alembic import command
from sqlalchemy import create_engine, text

from helpers import ThreadedFake, run_ingest
from pipeline.db.migrate import alembic_config, head_revision
from pipeline.testing.fake_upstream import FaultConfig
from pipeline.testing.payloads import sample_aweme_ids


def test_demo_runs_end_to_end_on_a_fresh_embedded_database(pg_data_dir: Path) -> None:
    data_dir = pg_data_dir
    first = run_ingest(["demo", "--data-dir", str(data_dir)], timeout=180)
    assert first.returncode == 0, first.stderr
    assert "demo run 1" in first.stdout
    assert "Traceback" not in first.stderr
    # 10 works from the example file, 1 deleted, 2 malformed lines, 1 duplicate.
    for count, label in ((10, "loaded"), (1, "gone"), (2, "invalid"), (1, "skipped: repeated")):
        assert any(
            line.split("│")[1].strip() == str(count) and label in line
            for line in first.stdout.splitlines()
            if line.count("│") >= 3
        ), (label, first.stdout)
    assert "most liked works" in first.stdout

    assert "rejected on purpose" in first.stdout

    # Every demo starts from an empty database of its own: it loads everything again.
    again = run_ingest(["demo", "--data-dir", str(data_dir)], timeout=180)
    assert again.returncode == 0, again.stderr
    assert "demo run 1" in again.stdout

    runs = run_ingest(["runs", "--json", "--data-dir", str(data_dir)])
    assert runs.returncode == 0, runs.stderr
    records = [json.loads(line) for line in runs.stdout.splitlines()]
    assert [r["run_id"] for r in records] == [1]
    assert records[0]["counts"]["loaded"] == 10
    assert "skipped_known" not in records[0]["counts"]

    url = run_ingest(["db", "url", "--data-dir", str(data_dir)])
    assert url.returncode == 0
    assert "postgresql://" in url.stdout


def test_failures_export_feeds_back_into_ingest(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    ids = sample_aweme_ids(12, seed=21)
    # Every fetch fails with a 5xx more times than the run retries: temporary failures.
    fake = fake_server(seed=21, faults=FaultConfig(error_5xx_rate=1.0, fail_attempts=3))
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"https://www.douyin.com/video/{i}\n" for i in ids) + "nonsense\n")
    env = {"DATABASE_URL": db_url}
    common = ["--api-base", fake.url, "--rate", "500", "--no-progress"]
    first = run_ingest(["run", str(path), *common, "--retries", "1"], env=env)
    assert first.returncode == 75, first.stderr  # temporary failure: retry later

    listing = run_ingest(["failures", "--run", "1"], env=env)
    assert listing.returncode == 0
    assert "HTTP 5" in listing.stdout or "5xx" in listing.stdout or "server" in listing.stdout
    assert "no link found" in listing.stdout

    export = tmp_path / "retry.txt"
    exported = run_ingest(["failures", "--export", str(export)], env=env)
    assert exported.returncode == 0, exported.stderr
    lines = export.read_text().splitlines()
    assert sorted(lines) == sorted(f"https://www.douyin.com/video/{i}" for i in ids)

    # The upstream recovered (the fake's 3 failing attempts per work are used up by now for
    # those retried twice; allow enough retries for the rest).
    retried = run_ingest(["run", str(export), *common, "--retries", "3"], env=env)
    assert retried.returncode == 0, retried.stderr
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM works")).scalar_one() == 12
        left = conn.execute(
            text("SELECT count(*) FROM share_links WHERE last_outcome = 'failed'")
        ).scalar_one()
    engine.dispose()
    assert left == 0


def test_reprocess_rebuilds_tables_from_raw_payloads(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    fake = fake_server(seed=22)
    ids = sample_aweme_ids(15, seed=22)
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"{i}\n" for i in ids))
    env = {"DATABASE_URL": db_url}
    assert (
        run_ingest(["run", str(path), "--api-base", fake.url, "--rate", "500"], env=env).returncode
        == 0
    )
    engine = create_engine(db_url)
    query = text(
        "SELECT w.aweme_id, w.description, w.kind, array(SELECT hashtag_name FROM work_hashtags h "
        "WHERE h.aweme_id = w.aweme_id ORDER BY position) FROM works w ORDER BY 1"
    )
    with engine.begin() as conn:
        before = conn.execute(query).all()
        # Damage the derived tables; the raw payloads stay.
        conn.execute(text("DELETE FROM work_hashtags"))
        conn.execute(text("UPDATE works SET description = 'broken', kind = 'other'"))
    served = len(fake.fake.served)
    result = run_ingest(["reprocess"], env=env)
    assert result.returncode == 0, result.stderr
    assert "reprocessed 15 payloads" in result.stdout
    assert len(fake.fake.served) == served  # nothing fetched
    with engine.connect() as conn:
        assert conn.execute(query).all() == before
        kinds = conn.execute(text("SELECT kind FROM ingest_runs ORDER BY run_id")).scalars().all()
    engine.dispose()
    assert kinds == ["ingest", "reprocess"]


def test_db_current_and_upgrade_on_a_database_behind(db_url: str) -> None:
    env = {"DATABASE_URL": db_url}
    current = run_ingest(["db", "current"], env=env)
    assert current.returncode == 0
    assert "up to date" in current.stdout
    engine = create_engine(db_url)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0003")
    engine.dispose()
    behind = run_ingest(["db", "current"], env=env)
    assert "behind" in behind.stdout
    upgraded = run_ingest(["db", "upgrade"], env=env)
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"database at {head_revision()} (was 0003)" in upgraded.stdout
    assert "up to date" in run_ingest(["db", "current"], env=env).stdout


def test_demo_speaks_the_amagi_contract_too(pg_data_dir: Path) -> None:
    result = run_ingest(
        ["demo", "--api-style", "amagi", "--data-dir", str(pg_data_dir)], timeout=180
    )
    assert result.returncode == 0, result.stderr
    loaded = [line for line in result.stdout.splitlines() if "│ loaded" in line]
    assert loaded
    assert loaded[0].split("│")[1].strip() == "10"
