"""Runs tell the truth and every line is accounted for, every time: the run record's
vocabulary and life cycle (heartbeat, abandoned), and share_links after skips, resolutions and
rejected lines."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from collections import Counter
from io import BytesIO
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, text
from sqlalchemy.exc import IntegrityError

import pipeline.run as run_module
from pipeline.config import FetchSettings, Settings
from pipeline.db.outage import OutageGuard
from pipeline.db.runs import (
    RESOLVED_ELSEWHERE,
    LinkRecord,
    beat,
    failed_links,
    recent_runs,
    record_links,
    shown_status,
    start_run,
)
from pipeline.db.tracking import LinkOutcome, RunStatus
from pipeline.ingest import IngestJob, InputSource
from pipeline.testing.fake_upstream import FakeUpstream, FaultConfig
from pipeline.testing.payloads import sample_aweme_ids

HOST = socket.gethostname()
NO_FAULTS = FaultConfig()


class NullReporter:
    def update(self, counts: Counter[str]) -> None:
        pass


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def _insert_run(db: Connection, *, host: str, pid: int, heartbeat_ago_s: int) -> int:
    return int(
        db.execute(
            text(
                "INSERT INTO ingest_runs (kind, status, host, pid, options, heartbeat_at) "
                "VALUES ('ingest', 'running', :host, :pid, '{}', "
                "now() - make_interval(secs => :ago)) RETURNING run_id"
            ),
            {"host": host, "pid": pid, "ago": heartbeat_ago_s},
        ).scalar_one()
    )


def _status(db: Connection, run_id: int) -> Any:
    return db.execute(
        text(
            "SELECT status, finished_at, heartbeat_at, message FROM ingest_runs WHERE run_id = :r"
        ),
        {"r": run_id},
    ).one()


# -- the run record --------------------------------------------------------------------------


def test_the_check_constraints_come_from_the_vocabularies(db: Connection) -> None:
    run_id = start_run(db, "ingest", {})
    for status in RunStatus:
        db.execute(
            text("UPDATE ingest_runs SET status = :s WHERE run_id = :r"), {"s": status, "r": run_id}
        )
    for n, outcome in enumerate(LinkOutcome):
        record_links(db, run_id, [LinkRecord(f"aweme:{n}", "u", n, outcome, None, 0, None)])
    for bad in ("bogus_status", "RUNNING"):
        with pytest.raises(IntegrityError, match="status_known"), db.begin_nested():
            db.execute(
                text("UPDATE ingest_runs SET status = :s WHERE run_id = :r"),
                {"s": bad, "r": run_id},
            )
    with pytest.raises(IntegrityError, match="outcome_known"), db.begin_nested():
        db.execute(text("UPDATE share_links SET last_outcome = 'skipped'"))


def test_a_new_run_marks_runs_whose_process_died_abandoned(db: Connection) -> None:
    silent = _insert_run(db, host="elsewhere", pid=4242, heartbeat_ago_s=300)
    dead_here = _insert_run(db, host=HOST, pid=_dead_pid(), heartbeat_ago_s=0)
    alive_here = _insert_run(db, host=HOST, pid=os.getpid(), heartbeat_ago_s=0)
    alive_elsewhere = _insert_run(db, host="elsewhere", pid=4242, heartbeat_ago_s=5)
    # Alive here but silent (waiting out a long database outage): the pid has the last word.
    silent_here = _insert_run(db, host=HOST, pid=os.getpid(), heartbeat_ago_s=300)

    # Before any new run, `ingest runs` already tells the dead from the living.
    now = db.execute(text("SELECT now()")).scalar_one()
    shown = {r.run_id: shown_status(r, r.now) for r in recent_runs(db, 10)}
    assert shown == {
        silent: "abandoned",
        dead_here: "abandoned",
        alive_here: "running",
        alive_elsewhere: "running",
        silent_here: "running",
    }
    assert now is not None

    new = start_run(db, "refresh", {})
    for run_id in (silent, dead_here):
        row = _status(db, run_id)
        assert row.status == "abandoned"
        assert row.finished_at == row.heartbeat_at  # its last sign of life
        assert "without closing" in row.message
    for run_id in (alive_here, alive_elsewhere, silent_here, new):
        assert _status(db, run_id).status == "running"


def test_a_sign_of_life_revives_a_run_taken_for_dead(db: Connection) -> None:
    run_id = _insert_run(db, host="elsewhere", pid=1, heartbeat_ago_s=300)
    start_run(db, "ingest", {})
    assert _status(db, run_id).status == "abandoned"
    beat(db, run_id)  # it was only waiting out a long database outage
    row = _status(db, run_id)
    assert (row.status, row.finished_at) == ("running", None)


def test_hostile_text_in_bookkeeping_is_stored(db: Connection) -> None:
    run_id = start_run(db, "ingest", {})
    record = LinkRecord("invalid:x", "a\x00b \ud800 c", None, "invalid", "r\x00", 0, "f\x00:1")
    record_links(db, run_id, [record])
    url, reason = db.execute(text("SELECT url, last_reason FROM share_links")).one()
    assert (url, reason) == ("a\\0b ? c", "r\\0")


# -- every line, every time ------------------------------------------------------------------


async def _ingest(
    db_url: str, lines: list[str], fake: FakeUpstream, **settings: Any
) -> run_module.RunSummary:
    engine = create_engine(db_url)
    try:
        config = Settings(
            fetch=FetchSettings(api_base=fake.base_url or "", rate=1000, concurrency=4),
            batch_seconds=0.1,
            **settings,
        )
        source = InputSource("links.txt", BytesIO("".join(f"{x}\n" for x in lines).encode()))
        guard = OutageGuard(30, first_delay_s=0.01)
        job = IngestJob(config, engine, NullReporter(), [source], guard=guard)
        return await asyncio.wait_for(job.run(), timeout=60)
    finally:
        engine.dispose()


def _ingest_runs(
    db_url: str, batches: list[list[str]], faults: FaultConfig = NO_FAULTS
) -> list[run_module.RunSummary]:
    async def go() -> list[run_module.RunSummary]:
        async with FakeUpstream(seed=41, faults=faults) as fake:
            await fake.start()
            return [await _ingest(db_url, lines, fake) for lines in batches]

    return asyncio.run(go())


def _links(db_url: str) -> dict[str, Any]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT * FROM share_links")).all()
    finally:
        engine.dispose()
    return {r.link_key: r for r in rows}


def _execute(db_url: str, sql: str, **params: Any) -> None:
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(sql), params)
    finally:
        engine.dispose()


def test_a_link_skipped_as_known_is_recorded_in_this_run(db_url: str) -> None:
    ids = sample_aweme_ids(6, seed=41)
    gone = ids[5]
    (first,) = _ingest_runs(
        db_url, [[str(i) for i in ids]], FaultConfig(gone_ids=frozenset({gone}))
    )
    before = _links(db_url)
    # The work stays known, but through no link of its own any more (as when it was loaded
    # through its short link): the id link must still get its row.
    _execute(db_url, "DELETE FROM share_links WHERE link_key = :k", k=f"aweme:{ids[0]}")

    (second,) = _ingest_runs(db_url, [[str(i) for i in ids]])
    assert second.counts["skipped_known"] == 6
    assert second.counts["loaded"] == second.counts["gone"] == 0
    after = _links(db_url)
    assert set(after) == {f"aweme:{i}" for i in ids}
    for i in ids:
        row = after[f"aweme:{i}"]
        assert row.last_run_id == second.run_id
        assert row.aweme_id == i
        # The row a fetch of the link would have left: the same whichever link was fetched.
        if i == gone:
            assert (row.last_outcome, row.last_reason) == ("gone", "gone: status_self_see")
        else:
            assert (row.last_outcome, row.last_reason) == ("loaded", None)
        if i != ids[0]:
            assert (row.last_outcome, row.last_reason) == (
                before[f"aweme:{i}"].last_outcome,
                before[f"aweme:{i}"].last_reason,
            )
        previous = before[f"aweme:{i}"].attempts if i != ids[0] else 0
        assert row.attempts == previous  # no request made, none counted
    assert first.run_id != second.run_id


def test_a_failed_link_is_resolved_when_its_work_loads_through_another(db_url: str) -> None:
    ids = sample_aweme_ids(3, seed=42)
    # An earlier run failed on a short link to ids[0] (its id became known on the way).
    _execute(
        db_url,
        "INSERT INTO share_links (link_key, url, aweme_id, last_outcome, last_reason) "
        "VALUES ('url:https://v.douyin.com/abcdefg/', 'https://v.douyin.com/abcdefg/', :i, "
        "'failed', 'HTTP 503')",
        i=ids[0],
    )
    (summary,) = _ingest_runs(db_url, [[str(i) for i in ids]])
    assert summary.counts["loaded"] == 3
    row = _links(db_url)["url:https://v.douyin.com/abcdefg/"]
    assert (row.last_outcome, row.last_reason) == ("loaded", RESOLVED_ELSEWHERE)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        assert failed_links(conn, None) == []  # so `ingest failures --export` leaves it out
    engine.dispose()


def test_two_links_to_one_work_end_loaded_whichever_failed(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """In one run the short link and the id link of a work are both fetched; the first
    fetch to arrive fails (temporarily), the other loads. Either order ends the same."""
    ids = sample_aweme_ids(4, seed=43)
    real_flatten = run_module.flatten
    calls: Counter[str] = Counter()

    def first_call_fails(detail: Any, fetched_at: Any) -> Any:
        calls[str(detail.get("aweme_id"))] += 1
        if str(detail.get("aweme_id")) == str(ids[0]) and calls[str(ids[0])] == 1:
            raise RuntimeError("flaky")
        return real_flatten(detail, fetched_at)

    monkeypatch.setattr(run_module, "flatten", first_call_fails)

    async def go() -> run_module.RunSummary:
        async with FakeUpstream(seed=41) as fake:
            await fake.start()
            lines = [fake.short_link(ids[0]), *(str(i) for i in ids)]
            return await _ingest(db_url, lines, fake)

    summary = asyncio.run(go())
    links = _links(db_url)
    assert len(links) == 5
    assert {r.last_outcome for r in links.values()} == {"loaded"}
    counts = summary.counts
    assert (counts["failed"], counts["failed_temporary"]) == (0, 0)
    assert (counts["loaded"], counts["resolved_elsewhere"]) == (5, 1)
    assert summary.status == "succeeded"


def test_every_rejected_line_keeps_its_own_row_and_reruns_are_idempotent(db_url: str) -> None:
    lines = ["not a link", "https://example.com/x", "not a link", "", "not a link"]
    first, second = _ingest_runs(db_url, [lines, lines])
    links = _links(db_url)
    assert len(links) == 4  # one per rejected line, identical texts included
    assert sorted(r.source for r in links.values()) == [
        "links.txt:1",
        "links.txt:2",
        "links.txt:3",
        "links.txt:5",
    ]
    assert {r.last_run_id for r in links.values()} == {second.run_id}
    for summary in (first, second):
        assert summary.counts["invalid"] == 4


def test_the_counts_of_a_run_match_its_share_links_rows(db_url: str) -> None:
    ids = sample_aweme_ids(8, seed=44)
    faults = FaultConfig(gone_ids=frozenset({ids[1]}))
    lines = [*(str(i) for i in ids), "junk", str(ids[2])]  # one duplicate, one rejected line
    _, second = _ingest_runs(db_url, [lines[:5], lines], faults)
    engine = create_engine(db_url)
    with engine.connect() as conn:
        by_outcome = Counter(
            dict(
                conn.execute(
                    text(
                        "SELECT last_outcome, count(*) FROM share_links "
                        "WHERE last_run_id = :r GROUP BY 1"
                    ),
                    {"r": second.run_id},
                ).all()
            )
        )
    engine.dispose()
    c = second.counts
    assert (
        sum(by_outcome.values())
        == c["loaded"] + c["gone"] + c["invalid"] + c["failed"] + c["skipped_known"]
    )
    assert by_outcome["invalid"] == c["invalid"] == 1
    assert (c["skipped_known"], c["duplicate"]) == (5, 1)
    assert c["links"] == len(lines)
