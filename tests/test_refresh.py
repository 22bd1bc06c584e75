"""`ingest refresh`: exact snapshots over simulated time, overlap safety, index use, kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from helpers import ThreadedFake, ingest_command, run_ingest
from pipeline.config import FetchSettings, Settings
from pipeline.ingest import IngestJob, InputSource
from pipeline.refresh import RefreshJob, RefreshOptions, _due_query
from pipeline.schedule import check_interval
from pipeline.testing.fake_upstream import FakeUpstream, FaultConfig
from pipeline.testing.payloads import is_frozen, sample_aweme_ids

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


class NullReporter:
    def update(self, counts: Counter[str]) -> None:
        pass


class Clock:
    def __init__(self, t: datetime) -> None:
        self.t = t

    def __call__(self) -> datetime:
        return self.t


def test_schedule_grows_with_age() -> None:
    assert check_interval(timedelta(hours=3)) == timedelta(hours=1)
    assert check_interval(timedelta(days=3)) == timedelta(days=1)
    assert check_interval(timedelta(days=300)) == timedelta(days=7)
    assert check_interval(None) == timedelta(days=1)


def _count(engine: Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql)).scalar_one())


async def _ingest_then_refresh(db_url: str, tmp_path: Path) -> None:
    engine = create_engine(db_url)
    ids = sample_aweme_ids(30, seed=11)
    moving = sum(1 for i in ids if not is_frozen(i, seed=11))
    assert 0 < moving < 30
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"https://www.douyin.com/video/{i}\n" for i in ids))
    clock = Clock(T0)
    async with FakeUpstream(seed=11) as fake:
        base = await fake.start()
        settings = Settings(
            database_url=None,
            fetch=FetchSettings(api_base=base, resolve_base=base, rate=500, concurrency=8),
            batch_seconds=0.2,
        )

        async def refresh(**kw: object) -> Counter[str]:
            job = RefreshJob(settings, engine, NullReporter(), RefreshOptions(**kw), now=clock)  # type: ignore[arg-type]
            summary = await job.run()
            assert summary.status == "succeeded", summary
            return summary.counts

        with path.open("rb") as stream:
            job = IngestJob(
                settings, engine, NullReporter(), [InputSource("urls", stream)], now=clock
            )
            assert (await job.run()).counts["loaded"] == 30
        assert _count(engine, "SELECT count(*) FROM work_stats") == 30

        # Not due yet: the fixture works are years old, so they are checked weekly.
        clock.t = T0 + timedelta(days=1)
        assert (await refresh())["due"] == 0
        assert len(fake.served) == 30

        # 1st refresh: a simulated hour passed upstream, so every non-frozen work moved.
        clock.t, _ = T0 + timedelta(days=8), fake.advance(3600)
        counts = await refresh()
        assert (counts["due"], counts["changed"], counts["unchanged"]) == (30, moving, 30 - moving)
        assert _count(engine, "SELECT count(*) FROM work_stats") == 30 + moving

        # 2nd refresh: nothing moved upstream: no new rows, but every work records the check.
        clock.t = T0 + timedelta(days=16)
        counts = await refresh()
        assert (counts["due"], counts["changed"], counts["unchanged"]) == (30, 0, 30)
        assert _count(engine, "SELECT count(*) FROM work_stats") == 30 + moving
        checked = f"SELECT count(*) FROM works WHERE last_fetched_at = '{clock.t.isoformat()}'"
        assert _count(engine, checked) == 30

        # 3rd refresh, by --stale-after: two more simulated hours.
        clock.t, _ = clock.t + timedelta(hours=2), fake.advance(7200)
        counts = await refresh(stale_after=timedelta(hours=1))
        assert (counts["due"], counts["changed"]) == (30, moving)
        assert _count(engine, "SELECT count(*) FROM work_stats") == 30 + 2 * moving
        # Each snapshot holds exactly what the fake served at that simulated time.
        with engine.connect() as conn:
            for aweme_id in ids[:5]:
                latest = conn.execute(
                    text(
                        "SELECT digg_count FROM work_stats WHERE aweme_id = :a "
                        "ORDER BY captured_at DESC LIMIT 1"
                    ),
                    {"a": aweme_id},
                ).scalar_one()
                assert latest == fake.counts_at(aweme_id, fake.sim_t)["digg_count"]

        # --limit bounds a run; a gone work is marked and never refreshed again.
        fake.faults = FaultConfig(gone_ids=frozenset({ids[0]}))
        clock.t += timedelta(hours=2)
        counts = await refresh(stale_after=timedelta(hours=1), limit=5)
        assert counts["due"] == 5
        clock.t += timedelta(hours=2)
        counts = await refresh(stale_after=timedelta(hours=1))
        assert counts["gone"] == 1
        assert counts["due"] == 30
        clock.t += timedelta(hours=2)
        counts = await refresh(stale_after=timedelta(hours=1))
        assert counts["due"] == 29
        assert _count(engine, "SELECT count(*) FROM works WHERE gone_at IS NOT NULL") == 1
    engine.dispose()


def test_three_refreshes_produce_exactly_the_expected_snapshots(
    db_url: str, tmp_path: Path
) -> None:
    asyncio.run(_ingest_then_refresh(db_url, tmp_path))


def _ingest_fixture_works(
    db_url: str, fake: ThreadedFake, tmp_path: Path, n: int, seed: int
) -> list[int]:
    ids = sample_aweme_ids(n, seed=seed)
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"{i}\n" for i in ids))
    result = run_ingest(
        ["run", str(path), "--api-base", fake.url, "--rate", "500", "--no-progress"],
        env={"DATABASE_URL": db_url},
    )
    assert result.returncode == 0, result.stderr
    return ids


@pytest.mark.parametrize("exclusive", [False, True])
def test_overlapping_refreshes_join_or_with_exclusive_the_second_exits_4(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path, exclusive: bool
) -> None:
    """Two refreshes at once: by default both work and share the due works (each fetched
    once); with --exclusive one works and the other exits 4 having done nothing."""
    fake = fake_server(seed=12, faults=FaultConfig(latency_s=0.2))
    _ingest_fixture_works(db_url, fake, tmp_path, 20, seed=12)
    before = len(fake.fake.served)
    time.sleep(1.1)
    args = [
        *ingest_command(),
        "refresh",
        "--stale-after",
        "1s",
        "--api-base",
        fake.url,
        "--rate",
        "50",
        "--no-progress",
        *(["--exclusive"] if exclusive else []),
    ]
    env = {**os.environ, "DATABASE_URL": db_url}
    procs = [
        subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    served = [r.aweme_id for r in fake.fake.served[before:]]
    assert len(served) == 20
    assert len(set(served)) == 20
    if not exclusive:
        assert codes == [0, 0], outputs
        return
    assert codes == [0, 4], outputs
    loser = outputs[[p.returncode for p in procs].index(4)]
    assert "another `ingest refresh` is running" in loser[1]
    assert "Traceback" not in loser[1]


def test_a_refresh_does_not_join_an_exclusive_one(db_url: str) -> None:
    from pipeline.errors import AlreadyRunning
    from pipeline.refresh import refresh_lock

    engine = create_engine(db_url)
    try:
        with (
            refresh_lock(engine, exclusive=True),
            pytest.raises(AlreadyRunning, match="--exclusive"),
            refresh_lock(engine),
        ):
            pass
        with (
            refresh_lock(engine),
            refresh_lock(engine),  # default refreshes join
            pytest.raises(AlreadyRunning),
            refresh_lock(engine, exclusive=True),
        ):
            pass
    finally:
        engine.dispose()


def test_killed_refresh_resumes_without_duplicate_snapshots(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    fake = fake_server(seed=13, faults=FaultConfig(latency_s=0.05))
    ids = _ingest_fixture_works(db_url, fake, tmp_path, 80, seed=13)
    fake.fake.advance(3600)
    moving = sum(1 for i in ids if not is_frozen(i, seed=13))
    time.sleep(1.1)
    args = [
        "refresh",
        "--stale-after",
        "1s",
        "--api-base",
        fake.url,
        "--rate",
        "20",
        "--batch-size",
        "5",
        "--no-progress",
    ]
    proc = subprocess.Popen(
        [*ingest_command(), *args],
        env={**os.environ, "DATABASE_URL": db_url},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    engine = create_engine(db_url)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.1)
        if _count(engine, "SELECT count(*) FROM work_stats") >= 80 + 10:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    partial = _count(engine, "SELECT count(*) FROM work_stats")
    assert 80 + 10 <= partial < 80 + moving, "kill it in the middle"

    # The lock died with the process, so the rerun starts at once. Works the killed run
    # already checked are fetched again (they are stale by 1 s too) but add no snapshot:
    # their counts equal their latest one.
    result = run_ingest(args, env={"DATABASE_URL": db_url})
    assert result.returncode == 0, result.stderr
    assert _count(engine, "SELECT count(*) FROM work_stats") == 80 + moving
    dupes = _count(
        engine,
        "SELECT count(*) FROM (SELECT aweme_id, digg_count, comment_count, share_count, "
        "collect_count FROM work_stats GROUP BY 1, 2, 3, 4, 5 HAVING count(*) > 1) d",
    )
    assert dupes == 0
    engine.dispose()


@pytest.mark.parametrize("stale_after", [None, timedelta(hours=6)])
def test_due_selection_uses_an_index_not_a_scan_of_works(
    db: object, stale_after: timedelta | None
) -> None:
    from sqlalchemy import Connection

    assert isinstance(db, Connection)
    db.execute(
        text(
            "INSERT INTO works (aweme_id, kind, last_fetched_at, next_check_at) "
            "SELECT 7000000000000000000 + g, 'video', now() - g * interval '1 second', "
            "now() + (g - 500) * interval '1 minute' FROM generate_series(1, 50000) g"
        )
    )
    db.execute(text("ANALYZE works"))
    sql, _ = _due_query(RefreshOptions(stale_after=stale_after))
    plan = db.execute(
        text(f"EXPLAIN {sql}"),
        {
            "as_of": datetime.now(UTC),
            "stale": stale_after,
            "page": 500,
        },
    ).scalars()
    plan_text = "\n".join(plan)
    assert "Seq Scan on works" not in plan_text, plan_text
    assert "ix_works_" in plan_text, plan_text


def test_due_filters_stale_after_max_age_and_only_author(db_url: str) -> None:
    from pipeline.refresh import count_due

    now = datetime(2026, 6, 1, tzinfo=UTC)
    engine = create_engine(db_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO authors (uid, sec_uid) VALUES (1, 'MS4wLjABAAAA-a'), "
                "(2, 'MS4wLjABAAAA-b')"
            )
        )
        # (id, author, published days ago, last checked hours ago, due in hours, gone)
        rows = [
            (7000000000000000001, 1, 0.5, 2, -1, False),  # young, due
            (7000000000000000002, 1, 10, 30, -6, False),  # a month old, due
            (7000000000000000003, 2, 400, 200, -30, False),  # old, due
            (7000000000000000004, 2, 400, 1, 100, False),  # old, not due
            (7000000000000000005, 2, 400, 500, -300, True),  # gone: never due
        ]
        for aweme_id, author, age_d, checked_h, due_h, gone in rows:
            conn.execute(
                text(
                    "INSERT INTO works (aweme_id, author_uid, kind, created_at, "
                    "last_fetched_at, next_check_at, gone_at) VALUES (:id, :a, 'video', "
                    ":now - make_interval(hours => :age), :now - make_interval(hours => :chk), "
                    ":now + make_interval(hours => :due), CASE WHEN :gone THEN :now END)"
                ),
                {
                    "id": aweme_id,
                    "a": author,
                    "now": now,
                    "age": int(age_d * 24),
                    "chk": checked_h,
                    "due": due_h,
                    "gone": gone,
                },
            )

    def due(**options: object) -> int:
        return count_due(engine, RefreshOptions(**options), as_of=now)  # type: ignore[arg-type]

    try:
        assert due() == 3
        assert due(stale_after=timedelta(hours=24)) == 2  # checked 30 h and 200 h ago
        assert due(max_age=timedelta(days=30)) == 2
        assert due(only_authors=("MS4wLjABAAAA-b",)) == 1
        assert due(only_authors=("MS4wLjABAAAA-a", "MS4wLjABAAAA-b")) == 3
        assert due(only_authors=("MS4wLjABAAAA-nobody",)) == 0
    finally:
        engine.dispose()


async def _refresh_with_budget(db_url: str, tmp_path: Path) -> None:
    from pipeline.refresh import count_due

    engine = create_engine(db_url)
    ids = sample_aweme_ids(30, seed=14)
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"{i}\n" for i in ids))
    clock = Clock(T0)
    async with FakeUpstream(seed=14) as fake:
        base = await fake.start()
        fast = Settings(fetch=FetchSettings(api_base=base, rate=500), batch_seconds=0.2)
        with path.open("rb") as stream:
            job = IngestJob(fast, engine, NullReporter(), [InputSource("u", stream)], now=clock)
            await job.run()
        clock.t = T0 + timedelta(days=8)  # everything is due
        slow = Settings(
            fetch=FetchSettings(api_base=base, rate=5, concurrency=2), batch_seconds=0.2
        )
        options = RefreshOptions(budget_seconds=1.0)
        summary = await RefreshJob(slow, engine, NullReporter(), options, now=clock).run()
    assert summary.status == "succeeded"
    assert summary.counts["stopped_by_budget"] == 1
    assert 0 < summary.counts["due"] < 30
    assert summary.counts["loaded"] == summary.counts["due"]  # started fetches were finished
    left = count_due(engine, RefreshOptions(), as_of=clock.t)
    assert left == 30 - summary.counts["due"]  # the rest is still due for the next run
    engine.dispose()


def test_budget_seconds_stops_starting_fetches_and_leaves_the_rest_due(
    db_url: str, tmp_path: Path
) -> None:
    asyncio.run(_refresh_with_budget(db_url, tmp_path))
