"""Claims and leases (`pipeline.db.claims`, `pipeline.refresh.claim_due`): disjoint, released
with the fate, taken over when the holder is dead or its lease ended. Several processes are
played by several run records in one transaction; tests/reliability/test_many_workers.py runs
real processes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, text

from pipeline.db.claims import claim_links, drop_stale, release, renew, settle_works
from pipeline.db.runs import start_run
from pipeline.refresh import RefreshOptions, claim_due, claimed_elsewhere

LEASE = timedelta(minutes=5)
AS_OF = datetime(2026, 6, 1, tzinfo=UTC)


def _works(db: Connection, n: int) -> list[int]:
    ids = [7_000_000_000_000_000_000 + i for i in range(n)]
    db.execute(
        text(
            "INSERT INTO works (aweme_id, kind, last_fetched_at, next_check_at) "
            "SELECT unnest(CAST(:ids AS bigint[])), 'video', :t - interval '2 days', "
            ":t - interval '1 hour'"
        ),
        {"ids": ids, "t": AS_OF},
    )
    return ids


def _claim(db: Connection, run_id: int, page: int = 10) -> list[int]:
    options = RefreshOptions(lease=LEASE)
    return [aweme_id for aweme_id, _ in claim_due(db, options, AS_OF, run_id, page)]


def _abandon(db: Connection, run_id: int) -> None:
    db.execute(text("UPDATE ingest_runs SET status = 'abandoned' WHERE run_id = :r"), {"r": run_id})


def test_workers_claim_disjoint_pages_oldest_due_first(db: Connection) -> None:
    ids = _works(db, 25)
    a, b = start_run(db, "refresh", {}), start_run(db, "refresh", {})
    first, second, third = _claim(db, a), _claim(db, b), _claim(db, a)
    assert first == ids[:10]  # same due time: by id
    assert second == ids[10:20]
    assert third == ids[20:]
    assert _claim(db, b) == []
    assert claimed_elsewhere(db, RefreshOptions(), AS_OF)


def test_a_settled_work_is_released_and_a_failed_one_rests(db: Connection) -> None:
    ids = _works(db, 4)
    a, b = start_run(db, "refresh", {}), start_run(db, "refresh", {})
    assert _claim(db, a) == ids
    settle_works(db, a, done=ids[:2], failed=ids[2:], rest=timedelta(hours=1))
    # The done ones are free (a real run also moved them out of `due`); the failed ones rest,
    # held by no run, so nobody waits for them.
    assert _claim(db, b) == ids[:2]
    settle_works(db, b, done=ids[:2], failed=[], rest=timedelta(hours=1))
    assert not claimed_elsewhere(db, RefreshOptions(), AS_OF)
    resting = db.execute(text("SELECT aweme_id FROM work_claims WHERE run_id IS NULL"))
    assert sorted(resting.scalars()) == ids[2:]


def test_a_dead_runs_claims_are_taken_over(db: Connection) -> None:
    ids = _works(db, 3)
    a, b = start_run(db, "refresh", {}), start_run(db, "refresh", {})
    assert _claim(db, a) == ids
    assert _claim(db, b) == []
    _abandon(db, a)  # what abandon_dead_runs does to a dead pid or a silent heartbeat
    assert _claim(db, b) == ids


def test_an_expired_lease_is_taken_over_and_renewal_keeps_it(db: Connection) -> None:
    ids = _works(db, 2)
    a, b = start_run(db, "refresh", {}), start_run(db, "refresh", {})
    assert _claim(db, a) == ids
    db.execute(text("UPDATE work_claims SET lease_until = clock_timestamp() - interval '1 s'"))
    renew(db, a, LEASE)  # alive after all: renewed before anyone took them
    assert _claim(db, b) == []
    db.execute(text("UPDATE work_claims SET lease_until = clock_timestamp() - interval '1 s'"))
    assert _claim(db, b) == ids
    release(db, b)
    assert db.execute(text("SELECT count(*) FROM work_claims")).scalar_one() == 0


def test_stale_claims_are_dropped_live_ones_kept(db: Connection) -> None:
    ids = _works(db, 3)
    a, b = start_run(db, "refresh", {}), start_run(db, "refresh", {})
    assert _claim(db, a, page=1) == ids[:1]
    assert _claim(db, b, page=1) == ids[1:2]
    settle_works(db, b, done=[], failed=ids[1:2], rest=timedelta(hours=1))  # resting: kept
    assert claim_links(db, a, ["aweme:1"], LEASE) == {"aweme:1"}
    assert claim_links(db, b, ["aweme:2"], LEASE) == {"aweme:2"}
    _abandon(db, a)
    drop_stale(db)
    works = db.execute(text("SELECT aweme_id FROM work_claims")).scalars()
    links = db.execute(text("SELECT link_key FROM link_claims")).scalars()
    assert (sorted(works), sorted(links)) == (ids[1:2], ["aweme:2"])


def test_link_claims_keep_two_processes_off_one_link(db: Connection) -> None:
    a, b = start_run(db, "ingest", {}), start_run(db, "ingest", {})
    assert claim_links(db, a, ["aweme:1", "aweme:2"], LEASE) == {"aweme:1", "aweme:2"}
    assert claim_links(db, b, ["aweme:2", "aweme:3"], LEASE) == {"aweme:3"}
    assert claim_links(db, a, ["aweme:1"], LEASE) == {"aweme:1"}  # its own: renewed
    _abandon(db, a)
    assert claim_links(db, b, ["aweme:1", "aweme:2"], LEASE) == {"aweme:1", "aweme:2"}
