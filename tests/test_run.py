"""The orchestrator in-process: failures inside the pipeline never hang it, stop it or lose a
link, and the run record always ends with a status."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import threading
from collections import Counter
from collections.abc import Iterable
from io import BytesIO
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import OperationalError

import pipeline.run as run_module
from pipeline.cli import EXIT_SOME_FAILED, exit_code_for
from pipeline.config import FetchSettings, Settings
from pipeline.db.load import LoadResult, load_works
from pipeline.db.outage import DatabaseUnavailable, OutageGuard
from pipeline.flatten import FlatWork
from pipeline.ingest import IngestJob, InputSource
from pipeline.run import JobOptions
from pipeline.testing.fake_upstream import FakeUpstream, FaultConfig
from pipeline.testing.payloads import sample_aweme_ids

NO_FAULTS = FaultConfig()


class NullReporter:
    def update(self, counts: Counter[str]) -> None:
        pass


def fast_guard(window_s: float = 30) -> OutageGuard:
    return OutageGuard(window_s, first_delay_s=0.01, max_delay_s=0.05)


async def _ingest(
    db_url: str,
    ids: list[int],
    faults: FaultConfig = NO_FAULTS,
    job_options: JobOptions | None = None,
    **settings: Any,
) -> run_module.RunSummary:
    engine = create_engine(db_url)
    try:
        async with FakeUpstream(seed=31, faults=faults) as fake:
            base = await fake.start()
            config = Settings(
                fetch=FetchSettings(api_base=base, rate=1000, concurrency=4),
                batch_seconds=0.1,
                **settings,
            )
            source = InputSource("ids", BytesIO("".join(f"{i}\n" for i in ids).encode()))
            options: JobOptions = {"guard": fast_guard(), **(job_options or {})}
            job = IngestJob(config, engine, NullReporter(), [source], **options)
            return await asyncio.wait_for(job.run(), timeout=60)
    finally:
        engine.dispose()


def _query(db_url: str, sql: str) -> list[Any]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql)))
    finally:
        engine.dispose()


def _run_row(db_url: str) -> Any:
    (row,) = _query(db_url, "SELECT status, message, finished_at, counts FROM ingest_runs")
    return row


def test_a_bug_in_one_link_is_recorded_and_the_run_goes_on(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = sample_aweme_ids(20, seed=31)
    real_flatten = run_module.flatten

    def flaky_flatten(detail: Any, fetched_at: Any) -> Any:
        if str(detail.get("aweme_id")) == str(ids[3]):
            raise RuntimeError("boom")
        return real_flatten(detail, fetched_at)

    monkeypatch.setattr(run_module, "flatten", flaky_flatten)
    summary = asyncio.run(_ingest(db_url, ids))
    assert summary.counts["loaded"] == 19
    assert summary.counts["failed"] == 1
    (reason,) = _query(db_url, "SELECT last_reason FROM share_links WHERE last_outcome = 'failed'")
    assert reason[0] == "upstream payload could not be read: RuntimeError"


def _refusing(bad_id: int, error: Exception) -> Any:
    """A loader that writes like the real one, then fails whenever `bad_id` is in the batch."""

    def load(conn: Connection, batch: Iterable[FlatWork], /) -> LoadResult:
        works = list(batch)
        result = load_works(conn, works)
        if any(w.work.aweme_id == bad_id for w in works):
            raise error
        return result

    return load


def test_a_work_that_cannot_be_stored_fails_alone_and_the_batch_commits(db_url: str) -> None:
    ids = sample_aweme_ids(30, seed=34)
    load = _refusing(ids[7], ValueError("cannot build a row\nsecond line"))
    summary = asyncio.run(_ingest(db_url, ids, job_options={"load": load}, batch_size=50))
    assert summary.status == "partial"
    assert summary.counts["loaded"] == 29
    assert summary.counts["failed"] == 1
    assert summary.counts["failed_temporary"] == 0  # permanent: exit 2, not 75
    assert exit_code_for(summary.status, summary.counts) == EXIT_SOME_FAILED
    rows = _query(db_url, "SELECT link_key, last_outcome, last_reason FROM share_links")
    failed = [r for r in rows if r.last_outcome == "failed"]
    assert [r.link_key for r in failed] == [f"aweme:{ids[7]}"]
    assert failed[0].last_reason == "could not be stored: ValueError: cannot build a row"
    assert len(rows) == 30
    (works,) = _query(db_url, "SELECT count(*) FROM works")
    assert works[0] == 29
    run = _run_row(db_url)
    assert (run.status, run.counts["loaded"]) == ("partial", 29)


def test_postgresql_rejecting_a_value_fails_only_that_work(db_url: str) -> None:
    """A real rejection by the server (bigint out of range), not a simulated one."""
    ids = sample_aweme_ids(12, seed=35)

    def load(conn: Connection, batch: Iterable[FlatWork], /) -> LoadResult:
        works = [
            dataclasses.replace(w, stats=dataclasses.replace(w.stats, digg_count=2**70))
            if w.work.aweme_id == ids[5] and w.stats is not None
            else w
            for w in batch
        ]
        return load_works(conn, works)

    summary = asyncio.run(_ingest(db_url, ids, job_options={"load": load}, batch_size=50))
    assert (summary.counts["loaded"], summary.counts["failed"]) == (11, 1)
    (row,) = _query(
        db_url, "SELECT link_key, last_reason FROM share_links WHERE last_outcome = 'failed'"
    )
    assert row.link_key == f"aweme:{ids[5]}"
    assert row.last_reason.startswith("could not be stored: NumericValueOutOfRange: ")
    assert "INSERT" not in row.last_reason  # no SQL, no parameters


def test_a_transient_database_error_retries_the_batch(db_url: str) -> None:
    failures = {"left": 2}

    def flaky_load(conn: Connection, batch: Iterable[FlatWork], /) -> LoadResult:
        result = load_works(conn, batch)
        if failures["left"]:
            failures["left"] -= 1
            # After writing: the retry must not duplicate what the rolled-back attempt wrote.
            raise OperationalError("COMMIT", {}, ConnectionResetError("server closed"))
        return result

    ids = sample_aweme_ids(10, seed=33)
    summary = asyncio.run(_ingest(db_url, ids, job_options={"load": flaky_load}, batch_size=100))
    assert failures["left"] == 0
    assert summary.counts["loaded"] == 10
    assert summary.counts["failed"] == 0
    for table in ("works", "work_stats", "share_links"):
        assert _query(db_url, f"SELECT count(*) FROM {table}")[0][0] == 10


def test_a_database_gone_past_the_window_stops_the_run_and_closes_its_record(
    db_url: str,
) -> None:
    def broken_load(conn: Connection, batch: Iterable[FlatWork], /) -> LoadResult:
        raise OperationalError("INSERT", {}, ConnectionRefusedError("connection refused"))

    # Far more links than the queues hold: a dead writer must not stall the fetchers.
    with pytest.raises(DatabaseUnavailable, match=r"--db-outage-seconds 0\.3"):
        asyncio.run(
            _ingest(
                db_url,
                sample_aweme_ids(300, seed=32),
                job_options={"load": broken_load, "guard": fast_guard(0.3)},
                batch_size=5,
            )
        )
    run = _run_row(db_url)
    assert run.status == "failed"
    assert run.finished_at is not None
    assert "unreachable" in run.message
    assert "re-run" in run.message


def test_an_unexpected_error_closes_the_run_record_as_failed(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_record_links(*args: Any) -> None:
        raise RuntimeError("bookkeeping bug")

    monkeypatch.setattr(run_module, "record_links", broken_record_links)
    with pytest.raises(RuntimeError, match="bookkeeping bug"):
        asyncio.run(_ingest(db_url, sample_aweme_ids(5, seed=36)))
    run = _run_row(db_url)
    assert (run.status, run.message) == ("failed", "RuntimeError: bookkeeping bug")
    assert run.finished_at is not None


def _never_retrieved(records: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in records if "never retrieved" in r.getMessage()]


def _wait_for(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        threading.Event().wait(0.01)
    raise AssertionError("condition never met")


@pytest.mark.parametrize("signals", [1, 2])
def test_a_signal_ends_the_run_interrupted_without_stray_task_errors(
    db_url: str, signals: int, caplog: pytest.LogCaptureFixture
) -> None:
    jobs: list[IngestJob] = []
    loads = {"n": 0}

    def load_and_signal(conn: Connection, batch: Iterable[FlatWork], /) -> LoadResult:
        """Mid-run, from inside a batch commit: Ctrl-C, and for a second one, Ctrl-C again
        once the first has been seen, while this batch is still being written."""
        loads["n"] += 1
        if loads["n"] == 3:
            job = jobs[0]
            os.kill(os.getpid(), signal.SIGINT)
            if signals == 2:
                _wait_for(job._stop.is_set)
                os.kill(os.getpid(), signal.SIGINT)
                _wait_for(lambda: job._hard_stop)
        return load_works(conn, batch)

    async def interrupted() -> run_module.RunSummary:
        engine = create_engine(db_url)
        try:
            async with FakeUpstream(seed=31, faults=FaultConfig(latency_s=0.05)) as fake:
                config = Settings(
                    fetch=FetchSettings(api_base=await fake.start(), rate=1000, concurrency=4),
                    batch_size=5,
                    batch_seconds=0.1,
                )
                ids = sample_aweme_ids(200, seed=37)
                source = InputSource("ids", BytesIO("".join(f"{i}\n" for i in ids).encode()))
                job = IngestJob(
                    config,
                    engine,
                    NullReporter(),
                    [source],
                    load=load_and_signal,
                    guard=fast_guard(),
                )
                jobs.append(job)
                return await asyncio.wait_for(job.run(), timeout=60)
        finally:
            engine.dispose()

    with caplog.at_level(logging.WARNING):
        summary = asyncio.run(interrupted())
        gc.collect()  # "exception was never retrieved" is logged when a future is collected
    assert summary.status == "interrupted"
    assert summary.counts["loaded"] < 200
    run = _run_row(db_url)
    assert run.status == "interrupted"
    assert run.finished_at is not None
    expected = "interrupted by SIGINT" if signals == 1 else "interrupted by a second SIGINT"
    assert run.message == expected
    assert _never_retrieved(caplog.records) == []


def test_an_early_stop_leaves_no_stray_task_errors(
    db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async def unreachable() -> run_module.RunSummary:
        engine = create_engine(db_url)
        try:
            # Nothing listens there: the run stops early, "the service did not answer".
            config = Settings(
                fetch=FetchSettings(
                    api_base="http://127.0.0.1:9", rate=1000, concurrency=4, retries=0
                ),
                batch_seconds=0.1,
            )
            ids = sample_aweme_ids(200, seed=38)
            source = InputSource("ids", BytesIO("".join(f"{i}\n" for i in ids).encode()))
            job = IngestJob(config, engine, NullReporter(), [source], guard=fast_guard())
            return await asyncio.wait_for(job.run(), timeout=60)
        finally:
            engine.dispose()

    for _ in range(3):
        with caplog.at_level(logging.WARNING):
            summary = asyncio.run(unreachable())
            gc.collect()
        assert summary.status == "failed"
    assert _never_retrieved(caplog.records) == []


def test_a_live_run_beats_while_its_writer_is_busy(db_url: str) -> None:
    """The heartbeat comes from its own task, not from commits: a run stuck in one long
    transaction (or waiting for the database) still shows it is alive."""
    checker = create_engine(db_url)
    beats: list[Any] = []

    def heartbeat() -> Any:
        with checker.connect() as conn:
            return conn.execute(
                text("SELECT heartbeat_at > started_at FROM ingest_runs")
            ).scalar_one()

    def slow_first_load(conn: Connection, batch: Iterable[FlatWork], /) -> LoadResult:
        if not beats:
            _wait_for(heartbeat)  # nothing has committed yet: only the heartbeat moves it
            beats.append(True)
        return load_works(conn, batch)

    try:
        summary = asyncio.run(
            _ingest(
                db_url,
                sample_aweme_ids(5, seed=39),
                job_options={"load": slow_first_load, "heartbeat_s": 0.05},
            )
        )
    finally:
        checker.dispose()
    assert beats == [True]
    assert summary.counts["loaded"] == 5
