"""A database outage mid-run: the run waits, continues and tells the truth; past the outage
window it stops with exit 3, and the record it could not close is seen as abandoned.
(The 20-second outage and the SIGKILL comparisons live in tests/reliability/.)"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from db_proxy import PausableProxy
from sqlalchemy import Connection, create_engine, text

from helpers import ingest_command, run_ingest
from pipeline.config import FetchSettings, Settings
from pipeline.db.load import LoadResult, load_works
from pipeline.db.outage import OutageGuard
from pipeline.db.runs import start_run
from pipeline.flatten import FlatWork
from pipeline.ingest import IngestJob, InputSource
from pipeline.testing.fake_upstream import FakeUpstream, FaultConfig
from pipeline.testing.payloads import sample_aweme_ids


class NullReporter:
    def update(self, counts: Counter[str]) -> None:
        pass


@pytest.fixture
def proxy(db_url: str) -> Iterator[PausableProxy]:
    p = PausableProxy(db_url)
    yield p
    p.close()


def _scalar(db_url: str, sql: str) -> object:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql)).scalar()
    finally:
        engine.dispose()


def test_a_short_outage_mid_run_is_waited_out(
    db_url: str, proxy: PausableProxy, caplog: pytest.LogCaptureFixture
) -> None:
    ids = sample_aweme_ids(40, seed=51)
    loads = {"n": 0}

    def load_then_lose_the_database(conn: Connection, batch: Iterable[FlatWork], /) -> LoadResult:
        loads["n"] += 1
        if loads["n"] == 3:  # mid-run, inside a batch's transaction
            proxy.down()
            threading.Timer(1.0, proxy.up).start()
        return load_works(conn, batch)

    async def go() -> object:
        engine = create_engine(proxy.url)
        try:
            async with FakeUpstream(seed=51) as fake:
                config = Settings(
                    fetch=FetchSettings(api_base=await fake.start(), rate=1000, concurrency=4),
                    batch_size=5,
                    batch_seconds=0.1,
                )
                source = InputSource("ids", BytesIO("".join(f"{i}\n" for i in ids).encode()))
                job = IngestJob(
                    config,
                    engine,
                    NullReporter(),
                    [source],
                    load=load_then_lose_the_database,
                    guard=OutageGuard(60, first_delay_s=0.05, max_delay_s=0.2),
                )
                return await asyncio.wait_for(job.run(), timeout=60)
        finally:
            engine.dispose()

    with caplog.at_level(logging.WARNING, logger="pipeline"):
        summary = asyncio.run(go())
    assert loads["n"] > 3  # the outage really happened mid-run
    assert summary.status == "succeeded"  # type: ignore[attr-defined]
    assert summary.counts["loaded"] == 40  # type: ignore[attr-defined]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("database unavailable" in m for m in messages) == 1, messages
    assert sum("database is back" in m for m in messages) == 1, messages
    assert _scalar(db_url, "SELECT count(*) FROM works") == 40
    assert _scalar(db_url, "SELECT count(*) FROM share_links WHERE last_outcome = 'loaded'") == 40
    assert _scalar(db_url, "SELECT status FROM ingest_runs") == "succeeded"


def test_past_the_outage_window_the_run_exits_3_and_is_later_seen_abandoned(
    db_url: str, proxy: PausableProxy, fake_server: Any, tmp_path: Path
) -> None:
    fake = fake_server(faults=FaultConfig(latency_s=0.2))
    links = tmp_path / "ids.txt"
    links.write_text("".join(f"{i}\n" for i in sample_aweme_ids(200, seed=52)))
    args = [
        "run", str(links), "--api-base", fake.url, "--database-url", proxy.url,
        "--db-outage-seconds", "1", "--batch-size", "5", "--rate", "1000",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DOUYIN_API_TOKEN")}
    child = subprocess.Popen(
        [*ingest_command(), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # Wait for the first committed batch, then take the database away for good.
    deadline = time.monotonic() + 60
    while not _scalar(db_url, "SELECT count(*) FROM share_links"):
        assert time.monotonic() < deadline, "no batch committed"
        assert child.poll() is None, child.communicate()
        time.sleep(0.1)
    proxy.down()
    _, err = child.communicate(timeout=60)
    assert child.returncode == 3, err
    assert "Traceback" not in err
    assert "--db-outage-seconds 1" in err
    assert "re-run" in err
    proxy.up()

    # The record could not be closed: it still says running, but its process is gone.
    assert _scalar(db_url, "SELECT status FROM ingest_runs") == "running"
    runs = run_ingest(["runs", "--json", "--database-url", db_url])
    assert runs.returncode == 0, runs.stderr
    (shown,) = [json.loads(line) for line in runs.stdout.splitlines()]
    assert shown["status"] == "abandoned"
    engine = create_engine(db_url)
    with engine.begin() as conn:
        start_run(conn, "ingest", {})  # the next run closes it
    engine.dispose()
    assert _scalar(db_url, "SELECT status FROM ingest_runs ORDER BY run_id LIMIT 1") == "abandoned"
