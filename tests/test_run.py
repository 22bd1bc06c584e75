"""The orchestrator in-process: failures inside the pipeline never hang it or lose a link."""

from __future__ import annotations

import asyncio
from collections import Counter
from io import BytesIO
from typing import Any

import pytest
from sqlalchemy import create_engine, text

import pipeline.run as run_module
from pipeline.config import FetchSettings, Settings
from pipeline.ingest import IngestJob, InputSource
from pipeline.testing.fake_upstream import FakeUpstream
from pipeline.testing.payloads import sample_aweme_ids


class NullReporter:
    def update(self, counts: Counter[str]) -> None:
        pass


async def _ingest(db_url: str, ids: list[int], **settings: Any) -> run_module.RunSummary:
    engine = create_engine(db_url)
    try:
        async with FakeUpstream(seed=31) as fake:
            base = await fake.start()
            config = Settings(
                fetch=FetchSettings(api_base=base, rate=1000, concurrency=4),
                batch_seconds=0.1,
                **settings,
            )
            source = InputSource("ids", BytesIO("".join(f"{i}\n" for i in ids).encode()))
            job = IngestJob(config, engine, NullReporter(), [source])
            return await asyncio.wait_for(job.run(), timeout=30)
    finally:
        engine.dispose()


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
    engine = create_engine(db_url)
    with engine.connect() as conn:
        reason = conn.execute(
            text("SELECT last_reason FROM share_links WHERE last_outcome = 'failed'")
        ).scalar_one()
    engine.dispose()
    assert reason == "upstream payload could not be read: RuntimeError"


def test_a_failing_database_write_stops_the_run_instead_of_hanging(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_load(conn: Any, works: Any, **kwargs: Any) -> Any:
        raise ConnectionError("database went away")

    monkeypatch.setattr(run_module, "load_works", broken_load)
    with pytest.raises(ConnectionError):
        # Far more links than the queues hold: a dead writer must not stall the fetchers.
        asyncio.run(_ingest(db_url, sample_aweme_ids(300, seed=32), batch_size=5))


def test_a_transient_database_error_retries_the_batch(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sqlalchemy.exc import OperationalError

    real_load = run_module.load_works
    failures = {"left": 2}

    def flaky_load(conn: Any, works: Any, **kwargs: Any) -> Any:
        result = real_load(conn, works, **kwargs)
        if failures["left"]:
            failures["left"] -= 1
            # After writing: the retry must not duplicate what the rolled-back attempt wrote.
            raise OperationalError("COMMIT", {}, ConnectionResetError("server closed"))
        return result

    monkeypatch.setattr(run_module, "load_works", flaky_load)
    monkeypatch.setattr(run_module, "COMMIT_RETRY_DELAY_S", 0.01)
    ids = sample_aweme_ids(10, seed=33)
    summary = asyncio.run(_ingest(db_url, ids, batch_size=100))
    assert failures["left"] == 0
    assert summary.counts["loaded"] == 10
    engine = create_engine(db_url)
    with engine.connect() as conn:
        for table in ("works", "work_stats", "share_links"):
            assert conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one() == 10
    engine.dispose()
