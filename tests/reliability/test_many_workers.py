"""Many workers, one database (docs/scaling.md): `ingest refresh` and `ingest FILE` run as
several processes, stand-ins for hosts, against one PostgreSQL and one fake service that
counts the requests for each work.

- three refresh workers fetch every due work exactly once, and end with the same tables as
  one worker would;
- one of three SIGKILLed mid-run loses nothing: the others finish its works (its claims are
  free once its lease ends or it is found dead), and the tables are again those of one worker;
- two `ingest FILE` processes on the same file fetch each link once.

No timing assertions: the deadlines are hang guards only.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from helpers import ThreadedFake, ingest_command, run_ingest
from pipeline.testing.fake_upstream import FaultConfig
from pipeline.testing.payloads import sample_aweme_ids

try:
    from . import kill_harness as h  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    import kill_harness as h  # type: ignore[import-not-found,no-redef,unused-ignore]

SEED = 31
WORKS = 120
AUTHOR_POOL = 5000  # as in the kill tests: works whose shared rows do not depend on order
# Each worker is slow on purpose (2 requests in flight, a fake answering in 0.1 s, 6/s), so a
# run lasts seconds and a kill lands among its batches.
WORKER = ["--rate", "6", "--concurrency", "2", "--batch-size", "4", "--no-progress"]
HANG_GUARD_S = 240


def _ingest(url: str, fake: ThreadedFake, path: Path) -> None:
    result = run_ingest(
        ["run", str(path), "--api-base", fake.url, "--rate", "500", "--no-progress"],
        env={"DATABASE_URL": url},
    )
    assert result.returncode == 0, result.stderr


def _refresh_args(fake: ThreadedFake, *extra: str) -> list[str]:
    return [
        *ingest_command(),
        "refresh",
        "--stale-after",
        "1s",
        "--api-base",
        fake.url,
        *WORKER,
        *extra,
    ]


def _start(args: list[str], url: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "DOUYIN_API_TOKEN"}
    env["DATABASE_URL"] = url
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _scalar(engine: Engine, sql: str, **params: object) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


@pytest.fixture
def twin_databases(
    db_url: str,
    admin_engine: Engine,
    pg_server_url: str,
    fake_server: Callable[..., ThreadedFake],
    tmp_path: Path,
) -> Iterator[tuple[str, str, ThreadedFake, list[int]]]:
    """Two databases holding the same WORKS works, all due for a refresh, and the fake (moved
    on an hour, so counts changed): (workers' database, one worker's database, fake, ids)."""
    fake = fake_server(seed=SEED, author_pool=AUTHOR_POOL, faults=FaultConfig(latency_s=0.1))
    ids = h.order_free_works(WORKS, seed=SEED, author_pool=AUTHOR_POOL)
    path = tmp_path / "works.txt"
    path.write_text("".join(f"{i}\n" for i in ids))
    with h.fresh_database(admin_engine, pg_server_url, h.database_name("one_worker")) as single:
        _ingest(db_url, fake, path)
        _ingest(single, fake, path)
        fake.fake.advance(3600)
        time.sleep(1.1)  # --stale-after 1s: every work is due
        yield db_url, single, fake, ids


def _one_worker_dump(url: str, fake: ThreadedFake) -> h.Dump:
    proc = _start(_refresh_args(fake), url)
    _, err = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 0, err
    return h.canonical_dump(url)


def _served_since(fake: ThreadedFake, before: int) -> Counter[int]:
    return Counter(r.aweme_id for r in fake.fake.served[before:] if r.aweme_id is not None)


def test_three_workers_fetch_every_due_work_once_and_end_like_one(
    twin_databases: tuple[str, str, ThreadedFake, list[int]],
) -> None:
    url, single, fake, ids = twin_databases
    before = len(fake.fake.served)
    procs = [_start(_refresh_args(fake), url) for _ in range(3)]
    outputs = [p.communicate(timeout=HANG_GUARD_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outputs
    served = _served_since(fake, before)
    assert set(served) == set(ids)
    assert [i for i, n in served.items() if n != 1] == []  # each due work fetched exactly once

    engine = create_engine(url)
    try:
        # The work was shared, not done by one worker while the others waited.
        with engine.connect() as conn:
            per_run = conn.execute(
                text("SELECT (counts->>'fetched')::int FROM ingest_runs WHERE kind = 'refresh'")
            )
            fetched = sorted(n or 0 for n in per_run.scalars())
        assert sum(fetched) == WORKS, fetched
        assert fetched[-1] < WORKS, fetched
        assert _scalar(engine, "SELECT count(*) FROM work_claims") == 0
    finally:
        engine.dispose()
    expected = _one_worker_dump(single, fake)
    assert h.dump_difference(expected, h.canonical_dump(url)) == ""


def test_a_worker_killed_mid_run_loses_nothing(
    twin_databases: tuple[str, str, ThreadedFake, list[int]],
) -> None:
    url, single, fake, ids = twin_databases
    before = len(fake.fake.served)
    engine = create_engine(url)
    started = time.monotonic()
    try:
        with engine.connect() as conn:
            t0 = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        procs = [_start(_refresh_args(fake, "--lease-seconds", "3"), url) for _ in range(3)]
        victim = procs[0]
        refreshed = "SELECT count(*) FROM works WHERE last_fetched_at > :t0"
        held = (
            "SELECT count(*) FROM work_claims c JOIN ingest_runs r USING (run_id) "
            "WHERE r.pid = :pid"
        )
        # Kill the first worker while it holds claims, once some works are done.
        while not (
            _scalar(engine, refreshed, t0=t0) >= 10 and _scalar(engine, held, pid=victim.pid) > 0
        ):
            assert victim.poll() is None, "the worker ended before it could be killed"
            assert time.monotonic() - started < HANG_GUARD_S
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
        assert _scalar(engine, refreshed, t0=t0) < WORKS, "kill it in the middle"
        outputs = [p.communicate(timeout=HANG_GUARD_S) for p in procs[1:]]
        assert [p.returncode for p in procs[1:]] == [0, 0], outputs

        assert _scalar(engine, refreshed, t0=t0) == WORKS  # nothing lost
        assert set(_served_since(fake, before)) == set(ids)
        assert _scalar(engine, "SELECT count(*) FROM work_claims") == 0
        statuses = Counter(h.run_statuses(url))
        assert statuses["running"] == 0, statuses
        assert statuses["abandoned"] == 1, statuses
    finally:
        engine.dispose()
    expected = _one_worker_dump(single, fake)
    assert h.dump_difference(expected, h.canonical_dump(url)) == ""


def test_two_file_ingests_on_one_file_fetch_each_link_once(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    fake = fake_server(seed=SEED, faults=FaultConfig(latency_s=0.1))
    ids = sample_aweme_ids(80, seed=SEED + 1)
    path = tmp_path / "links.txt"
    path.write_text("".join(f"https://www.douyin.com/video/{i}\n" for i in ids))
    args = [*ingest_command(), "run", str(path), "--api-base", fake.url, *WORKER]
    procs = [_start(args, db_url) for _ in range(2)]
    outputs = [p.communicate(timeout=HANG_GUARD_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    served = _served_since(fake, 0)
    assert set(served) == set(ids)
    assert [i for i, n in served.items() if n != 1] == []

    engine = create_engine(db_url)
    try:
        loaded = "SELECT count(*) FROM share_links WHERE last_outcome = 'loaded'"
        assert _scalar(engine, loaded) == len(ids)
        assert _scalar(engine, "SELECT count(*) FROM link_claims") == 0
        # Both read every link: what one fetched, the other recorded as known.
        with engine.connect() as conn:
            counts = conn.execute(text("SELECT counts FROM ingest_runs ORDER BY run_id"))
            runs = [(c.get("loaded", 0), c.get("skipped_known", 0)) for c in counts.scalars()]
        assert [loaded + known for loaded, known in runs] == [len(ids), len(ids)], runs
        assert sum(loaded for loaded, _ in runs) == len(ids), runs
    finally:
        engine.dispose()


def test_two_processes_sharing_one_service_keep_its_limit(
    db_url: str, fake_server: Callable[..., ThreadedFake], tmp_path: Path
) -> None:
    """Two `ingest` processes on one rate-limited service marked `shared = true`: the limit is
    kept in PostgreSQL, so the service sees 0 x 429 and no 1-second window over its limit,
    though each process alone would have been allowed the whole rate."""
    limit = 5
    fake = fake_server(seed=SEED, faults=FaultConfig(rate_limit=limit, latency_s=0.02))
    pool = tmp_path / "upstreams.toml"
    pool.write_text(
        "[[upstream]]\n"
        'name = "shared-cookie"\n'
        f'base = "{fake.url}"\n'
        'style = "seed"\n'
        f"rate = {limit}\n"
        "concurrency = 4\n"
        "shared = true\n"
    )
    ids = sample_aweme_ids(60, seed=SEED + 2)
    procs = []
    for half, part in enumerate((ids[:30], ids[30:])):
        path = tmp_path / f"part{half}.txt"
        path.write_text("".join(f"https://www.douyin.com/video/{i}\n" for i in part))
        args = [*ingest_command(), "run", str(path), "--upstreams", str(pool), "--no-progress"]
        procs.append(_start(args, db_url))
    outputs = [p.communicate(timeout=HANG_GUARD_S) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    served = fake.fake.served
    assert [r.status for r in served if r.status == 429] == []
    assert fake.fake.max_requests_in_window(1.0) <= limit
    assert set(_served_since(fake, 0)) == set(ids)
