"""Kill -9 at random moments, and a database that goes away mid-run: the real `ingest` command
(a subprocess) against the fake upstream must end with the same tables as a clean run.

"The same tables" is the canonical dump of `kill_harness` (every table found through the
catalogue; run ids, wall-clock times and sequence numbers reduced or left out, as documented
there). The fake's payloads are a pure function of (seed, aweme_id, simulated time), and
simulated time never moves here (nothing calls `advance`), so every run sees the same counts
and a clean run is a fair reference.

Set KILL_SEED to replay the kill moments of a failed run (the seed is printed).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from helpers import ThreadedFake, ingest_command, run_ingest
from pipeline.testing.fake_upstream import FaultConfig
from pipeline.testing.links import short_code

try:  # tests/reliability may or may not be a package, depending on what else lives there
    from . import kill_harness as h  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    import kill_harness as h  # type: ignore[import-not-found,no-redef,unused-ignore]

pytestmark = pytest.mark.slow

SEED = 11
AUTHOR_POOL = 5000  # few authors shared between works: fewer candidates to sort out
KILLS = 10
OUTAGE_S = 20.0
# Fast enough to keep the tier short, slow enough that a run lasts a few seconds and a kill
# or an outage lands among its batches. The pace is set by 4 requests in flight against a
# fake that answers in 0.1 s (about 40 links a second), not by the rate limiter, whose
# start-up burst would do most of the work in each new process's first second.
LATENCY_S = 0.1
FETCH = ["--rate", "100", "--concurrency", "4", "--batch-size", "15", "--no-progress"]


def short_link(aweme_id: int) -> str:
    return f"https://v.douyin.com/{short_code(aweme_id, SEED)}/"


@dataclass(frozen=True)
class Scenario:
    workload: h.Workload
    path: Path
    fake: ThreadedFake

    def args(self, *extra: str) -> list[str]:
        base = ["--api-base", self.fake.url, "--resolve-base", self.fake.url]
        return ["run", str(self.path), *base, *FETCH, *extra]


def _scenario(tmp: Path, name: str, *, works: int, junk: bool) -> Iterator[Scenario]:
    workload = h.build_workload(
        short_link, seed=SEED, works=works, gone=3, junk=junk, author_pool=AUTHOR_POOL
    )
    fake = ThreadedFake(
        seed=SEED,
        author_pool=AUTHOR_POOL,
        faults=FaultConfig(latency_s=LATENCY_S, gone_ids=workload.gone),
    )
    try:
        yield Scenario(workload, h.write_workload(workload, tmp / f"{name}.txt"), fake)
    finally:
        fake.close()


@pytest.fixture(scope="module")
def with_junk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """Live, gone and short links, duplicates of every kind, rejected lines, comments."""
    yield from _scenario(tmp_path_factory.mktemp("kill"), "links", works=200, junk=True)


@pytest.fixture(scope="module")
def links_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """The same kinds of link without rejected lines: a clean run of it exits 0."""
    yield from _scenario(tmp_path_factory.mktemp("outage"), "links", works=150, junk=False)


@pytest.fixture
def database(
    admin_engine: Engine, pg_server_url: str, template_url: str
) -> Iterator[Callable[[str], str]]:
    """A factory of fresh migrated databases (by tag), all dropped after the test."""
    with contextlib.ExitStack() as stack:
        yield lambda tag: stack.enter_context(
            h.fresh_database(admin_engine, pg_server_url, h.database_name(tag))
        )


@pytest.fixture
def proxy(pg_server_url: str) -> Iterator[h.OutageProxy]:
    p = h.OutageProxy(pg_server_url)
    yield p
    p.close()


@dataclass(frozen=True)
class Kill:
    delay_s: float
    cut: bool  # False: the run had ended by itself before its moment came
    requests: int  # upstream requests the run made before it was killed
    works_after: int


def clean_run(scenario: Scenario, url: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    result = run_ingest(scenario.args("--database-url", url))
    return result, time.monotonic() - started


def assert_same_tables(reference: str, candidate: str) -> None:
    expected, actual = h.canonical_dump(reference), h.canonical_dump(candidate)
    assert expected["works"], "the reference run loaded nothing: the comparison would be empty"
    assert actual == expected, h.dump_difference(expected, actual)


def no_run_left_running(url: str) -> list[str]:
    """Every run's status, none of them `running` (the last run has closed the records of
    the runs that died before it)."""
    statuses = h.run_statuses(url)
    assert "running" not in statuses, statuses
    return statuses


def runs_as_shown(url: str) -> list[dict[str, object]]:
    """`ingest runs --json` (one object per line, newest first)."""
    shown = run_ingest(["runs", "--json", "--database-url", url])
    assert shown.returncode == 0, shown.stderr
    return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]


def test_ten_sigkills_at_random_moments_then_a_rerun_equal_a_clean_run(
    with_junk: Scenario, database: Callable[[str], str]
) -> None:
    seed = int(os.environ.get("KILL_SEED", random.randrange(2**32)))
    print(f"KILL_SEED={seed}")
    rng = random.Random(seed)

    reference = database("clean")
    clean, clean_s = clean_run(with_junk, reference)
    assert clean.returncode == 2, clean.stderr  # documented: some lines were rejected
    assert "Traceback" not in clean.stderr

    killed = database("killed")
    args = with_junk.args("--database-url", killed)
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DOUYIN_API_TOKEN")}
    total_works = h.count_rows(reference, "works")
    served = with_junk.fake.fake.served
    kills = []
    for _ in range(KILLS):
        # Moments are anchored to the run's progress, not to the clock, so a busy machine
        # (slow start-up) cannot push every kill before the first request: one kill in five
        # lands during start-up, the others a random moment after the run's first request
        # (fetching, a batch commit, the writer's retries...).
        during_start_up = rng.random() < 0.2
        delay = rng.uniform(0.0, 0.5) if during_start_up else rng.uniform(0.0, 0.35) * clean_s
        requests_before = len(served)
        proc = subprocess.Popen(
            [*ingest_command(), *args], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        if not during_start_up:
            _wait_for_a_request(served, requests_before, proc)
        time.sleep(delay)
        cut = proc.poll() is None
        if cut:
            proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        kills.append(Kill(delay, cut, len(served) - requests_before, h.count_rows(killed, "works")))
    print("kills:", *kills, sep="\n  ")
    mid_work = [k for k in kills if k.cut and k.requests and k.works_after < total_works]
    assert len(mid_work) >= 3, f"too few kills landed while there was work to do: {kills}"

    for _ in range(3):  # re-run until it exits by itself (once is enough: it is not killed)
        rerun = run_ingest(args)
        if rerun.returncode != -signal.SIGKILL:
            break
    assert rerun.returncode == clean.returncode, rerun.stderr
    assert "Traceback" not in rerun.stderr

    assert_same_tables(reference, killed)
    statuses = no_run_left_running(killed)
    assert statuses.count("abandoned") >= len(mid_work), statuses
    assert statuses[-1] == h.run_statuses(reference)[0], statuses
    assert all(r["status"] != "running" for r in runs_as_shown(killed))


def test_database_stopped_for_20_s_mid_run_the_run_waits_and_finishes_like_a_clean_run(
    links_only: Scenario, database: Callable[[str], str], proxy: h.OutageProxy
) -> None:
    reference = database("outage_clean")
    clean, _ = clean_run(links_only, reference)
    assert clean.returncode == 0, clean.stderr
    expected_links = h.count_rows(reference, "share_links")

    direct = database("outage")
    through_proxy = proxy.route(direct)
    proc = subprocess.Popen(
        [*ingest_command(), *links_only.args("--database-url", through_proxy)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    committed_at_outage = _wait_for_links(direct, expected_links // 4, proc)
    proxy.outage(OUTAGE_S)
    _, err = proc.communicate(timeout=OUTAGE_S + 90)

    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert proxy.cut_connections > 0, "the outage cut no connection: it proved nothing"
    assert committed_at_outage < expected_links, "the run was over before the outage"
    assert_same_tables(reference, direct)
    assert h.run_statuses(direct) == ["succeeded"]


def test_an_outage_longer_than_the_window_exits_3_in_one_line_and_the_run_is_closed_later(
    links_only: Scenario, database: Callable[[str], str], proxy: h.OutageProxy
) -> None:
    direct = database("long_outage")
    through_proxy = proxy.route(direct)
    args = links_only.args("--database-url", through_proxy)
    proc = subprocess.Popen(
        [*ingest_command(), *args, "--db-outage-seconds", "3"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _wait_for_links(direct, 20, proc)
    proxy.down()
    _, err = proc.communicate(timeout=90)
    proxy.up()

    assert proc.returncode == 3, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("ingest: error")]
    assert len(errors) == 1, err
    assert err.strip().splitlines()[-1] == errors[0]
    assert "--db-outage-seconds" in errors[0] or "database" in errors[0]

    # The process could not close its record (the database was gone): `ingest runs` must not
    # call it running, and the next run closes it.
    shown = runs_as_shown(direct)
    assert [r["status"] for r in shown] in (["abandoned"], ["failed"]), shown
    finish = run_ingest(links_only.args("--database-url", direct))
    assert finish.returncode == 0, finish.stderr
    statuses = no_run_left_running(direct)
    assert statuses[0] in ("abandoned", "failed"), statuses
    assert statuses[-1] == "succeeded", statuses


def test_the_outage_proxy_cuts_live_connections_refuses_new_ones_and_comes_back(
    proxy: h.OutageProxy, pg_server_url: str
) -> None:
    """The instrument of the outage tests does what they rely on."""
    engine = create_engine(proxy.route(pg_server_url), poolclass=NullPool)
    try:
        with engine.connect() as live:
            assert live.execute(text("SELECT 1")).scalar_one() == 1
            proxy.down()
            with pytest.raises(OperationalError):
                live.execute(text("SELECT 1"))
        with pytest.raises(OperationalError, match="refused"):
            engine.connect()
        proxy.up()
        with engine.connect() as again:
            assert again.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
    assert proxy.cut_connections >= 2  # both sides of the live connection


def _wait_for_a_request(served: list[object], before: int, proc: subprocess.Popen[str]) -> None:
    """Wait until the run has sent its first upstream request (or ended, or 60 s passed)."""
    deadline = time.monotonic() + 60
    while len(served) <= before and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)


def _wait_for_links(url: str, at_least: int, proc: subprocess.Popen[str]) -> int:
    """Wait (reading the database directly) until the run has committed `at_least` links."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        done = h.count_rows(url, "share_links")
        if done >= at_least:
            return done
        if proc.poll() is not None:
            _, err = proc.communicate()
            pytest.fail(f"the run ended before the outage (exit {proc.returncode}): {err}")
        time.sleep(0.05)
    proc.kill()
    pytest.fail("the run committed nothing for 60 s")
