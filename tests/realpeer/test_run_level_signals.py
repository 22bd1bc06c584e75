"""Run-level signals against the real amagi (issue 11, item 2; "What it must show").

Against an amagi that cannot reach Douyin (or meets a verification page for every work) a run
stops after a few dozen requests with exit 75 and one message naming the service and where to
look; a re-run once the service is healthy finishes every link (pipeline/upstream/signals.py).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from douyin_standin import Douyin, DouyinStandIn
from peers import SEED, AmagiServer
from realpeer_helpers import empty_all_tables, ingest, query

from pipeline.testing.payloads import sample_aweme_ids

pytestmark = pytest.mark.slow

LINKS = 300
FEW_DOZEN = 40  # requests at most before a run against a service that cannot work stops
FAILED = "抖音数据获取失败"
FAST = ("--rate", "100", "--concurrency", "32")
# Works of their own, a set per test (the other real-peer tests use the first 50 of the seed).
_POOL = sample_aweme_ids(50 + LINKS + 60 + 100, seed=SEED)[50:]
WORKS, LOOPED, CHALLENGED = _POOL[:LINKS], _POOL[LINKS : LINKS + 60], _POOL[LINKS + 60 :]


def links(ids: list[int]) -> list[str]:
    return [f"https://www.douyin.com/video/{i}" for i in ids]


def douyin_attempts(server: AmagiServer) -> int:
    """Douyin requests amagi made and saw refused (one per work asked for), from its own log."""
    return server.log_text().count("ECONNREFUSED")


def test_a_service_that_cannot_reach_douyin_stops_the_run_early(
    amagi_without_douyin: AmagiServer, amagi: AmagiServer, db_url: str, tmp_path: Path
) -> None:
    before = douyin_attempts(amagi_without_douyin)
    # 32 requests in flight at once: the stop must still come within a few dozen.
    result = ingest(amagi_without_douyin.url, links(WORKS), tmp_path, db_url, *FAST, timeout=90)

    assert "Traceback" not in result.stderr
    assert result.returncode == 75, result.stderr  # temporary: run again once the service works
    assert douyin_attempts(amagi_without_douyin) - before <= FEW_DOZEN
    # One message names the service, what it answered, and where to look.
    naming = [line for line in result.stderr.splitlines() if FAILED in line]
    assert len(naming) == 1, result.stderr
    assert amagi_without_douyin.url in naming[0]
    assert "log" in naming[0]
    assert query(db_url, "SELECT count(*) FROM works") == [(0,)]

    # Once the service is healthy, the same links finish: none was given up on.
    rerun = ingest(amagi.url, links(WORKS), tmp_path, db_url, *FAST)
    assert rerun.returncode == 0, rerun.stderr
    assert query(db_url, "SELECT count(*) FROM works") == [(LINKS,)]


def test_early_stops_leave_no_traceback_and_no_repeated_error_line(
    amagi_without_douyin: AmagiServer,
    amagi: AmagiServer,
    douyin: DouyinStandIn,
    db_url: str,
    tmp_path: Path,
) -> None:
    """20 consecutive early-stopped runs: unreachable Douyin (75) and expired cookie (77)."""
    ids = LOOPED
    for aweme_id in ids:
        douyin.script(aweme_id, Douyin.EMPTY)
    for n in range(20):
        server, expected = (amagi_without_douyin, 75) if n % 2 == 0 else (amagi, 77)
        result = ingest(server.url, links(ids), tmp_path, db_url, *FAST, "--log-format", "json")
        assert result.returncode == expected, result.stderr
        assert "Traceback" not in result.stderr
        assert "never retrieved" not in result.stderr
        errors = [
            json.loads(line)["message"]
            for line in result.stderr.splitlines()
            if line.startswith("{") and json.loads(line).get("level") == "error"
        ]
        assert len(errors) == len(set(errors)) == 1, result.stderr
        empty_all_tables(db_url)


def test_a_verification_challenge_stops_the_run_early(
    amagi: AmagiServer, douyin: DouyinStandIn, db_url: str, tmp_path: Path
) -> None:
    """Douyin answering a captcha page for every work concerns the whole service: amagi relays it
    as its bare failure (test_real_amagi.py), so the run stops as for an unreachable Douyin."""
    ids = CHALLENGED
    for aweme_id in ids:
        douyin.script(aweme_id, Douyin.VERIFY)
    result = ingest(amagi.url, links(ids), tmp_path, db_url, *FAST, timeout=90)
    assert "Traceback" not in result.stderr
    assert result.returncode == 75, result.stderr
    assert sum(len(douyin.requests_for(i)) for i in ids) <= FEW_DOZEN
    naming = [line for line in result.stderr.splitlines() if FAILED in line]
    assert len(naming) == 1, result.stderr
    assert amagi.url in naming[0]
