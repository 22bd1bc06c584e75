"""`ingest reprocess` over several processes: when one batch fails, whichever process met it,
the run stops with that error, and its record counts exactly the payloads whose batches were
committed (by this process and by its helpers)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from pipeline.db.load import load_works
from pipeline.db.payloads import LOADER_VERSION
from pipeline.flatten import flatten
from pipeline.reprocess import reprocess
from pipeline.testing.payloads import make_aweme_detail, sample_aweme_ids

FETCHED_AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
WORKS = 40


@pytest.fixture
def loaded(db_url: str) -> Iterator[Engine]:
    engine = create_engine(db_url)
    works = [
        flatten(make_aweme_detail(aweme_id, seed=41, sim_t=0.0), FETCHED_AT + timedelta(i))
        for i, aweme_id in enumerate(sample_aweme_ids(WORKS, seed=41))
    ]
    with engine.begin() as conn:
        load_works(conn, works)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("failing", [0, WORKS // 2, WORKS - 1])
def test_a_failing_batch_stops_the_run_and_the_record_counts_what_was_committed(
    loaded: Engine, failing: int
) -> None:
    with loaded.begin() as conn:
        # Every payload looks read by an older flattener, so each committed batch marks its
        # rows: the marks are what was committed. Marking one chosen payload fails.
        conn.execute(text("UPDATE raw_payloads SET loader_version = 0"))
        bad = conn.execute(
            text("SELECT aweme_id FROM raw_payloads ORDER BY aweme_id OFFSET :n LIMIT 1"),
            {"n": failing},
        ).scalar_one()
        conn.execute(
            text(
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.aweme_id = {bad} THEN RAISE EXCEPTION 'refused'; END IF; "
                "RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER refuse BEFORE UPDATE ON raw_payloads "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        )
    # 10 ranges of 4 payloads over this process and one helper, batches of 2.
    with pytest.raises(DBAPIError, match="refused"):
        reprocess(loaded, 2, workers=2, range_size=4)
    with loaded.connect() as conn:
        marked = conn.execute(
            text("SELECT count(*) FROM raw_payloads WHERE loader_version = :v"),
            {"v": LOADER_VERSION},
        ).scalar_one()
        status, counts = conn.execute(
            text("SELECT status, counts FROM ingest_runs ORDER BY run_id DESC LIMIT 1")
        ).one()
    assert status == "failed"
    assert counts.get("payloads", 0) == marked
    assert marked < WORKS  # the failing batch was not committed
