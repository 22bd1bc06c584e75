"""`pipeline.reprocess`: the pool of processes rebuilds exactly what one process rebuilds, and
the decoder reads stored JSON text exactly as psycopg's JSONB loader (`json.loads`) does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine, text

from pipeline.db.load import load_works
from pipeline.flatten import flatten
from pipeline.reprocess import decode, reprocess
from pipeline.testing.payloads import make_aweme_detail, sample_aweme_ids

CONTENT_TABLES = (
    "works", "authors", "music", "collections", "places", "categories", "work_categories",
    "hashtags", "work_hashtags", "work_mentions", "work_images", "work_stats",
    "author_snapshots", "raw_payloads",
)  # fmt: skip
FETCHED_AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def loaded(db_url: str) -> Iterator[Engine]:
    """24 generated works loaded, in batches as `ingest` would, each fetched at its own time
    (works sharing an author fetched at the same instant would be a tie the loader breaks by
    arrival order, which differs between one process and several)."""
    engine = create_engine(db_url)
    works = [
        flatten(make_aweme_detail(aweme_id, seed=31, sim_t=0.0), FETCHED_AT + timedelta(i))
        for i, aweme_id in enumerate(sample_aweme_ids(24, seed=31))
    ]
    for i in range(0, len(works), 8):
        with engine.begin() as conn:
            load_works(conn, works[i : i + 8])
    yield engine
    engine.dispose()


def dump(engine: Engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        return {
            name: sorted(conn.execute(text(f"SELECT row_to_json(t)::text FROM {name} t")).scalars())
            for name in CONTENT_TABLES
        }


def damage(engine: Engine) -> None:
    """Break the derived tables; the raw payloads stay."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM work_hashtags"))
        conn.execute(text("UPDATE works SET description = 'broken', kind = 'other'"))


def test_the_pool_rebuilds_what_one_process_rebuilds(loaded: Engine) -> None:
    stored = dump(loaded)
    damage(loaded)
    # 6 ranges of 4 payloads over 2 processes, batches of 3 inside each range.
    counts = reprocess(loaded, 3, workers=2, range_size=4)
    assert counts["payloads"] == 24
    assert dump(loaded) == stored
    damage(loaded)
    assert reprocess(loaded, 3, workers=1)["payloads"] == 24
    assert dump(loaded) == stored
    with loaded.connect() as conn:
        runs = conn.execute(
            text("SELECT kind, status, counts->>'payloads' FROM ingest_runs ORDER BY run_id")
        ).all()
    assert runs == [("reprocess", "succeeded", "24"), ("reprocess", "succeeded", "24")]


def test_a_payload_that_is_not_a_work_is_counted_by_the_pool(
    loaded: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    with loaded.begin() as conn:
        bad = conn.execute(
            text(
                'UPDATE raw_payloads SET payload = \'{"desc": "no id"}\' WHERE aweme_id = '
                "(SELECT min(aweme_id) FROM raw_payloads) RETURNING aweme_id"
            )
        ).scalar_one()
    counts = reprocess(loaded, 3, workers=2, range_size=4)
    assert counts["payloads"] == 24
    assert counts["not_a_work"] == 1
    assert f"raw payload {bad} is not a work" in caplog.text


@pytest.mark.parametrize(
    "stored",
    [
        '{"a": 1, "b": [1.5, -0.0, 1e300], "c": "\\u4e2d\\u6587", "d": null, "e": true}',
        '{"big": 123456789012345678901234567890, "neg": -98765432109876543210}',
        "[" * 900 + "]" * 900,
        '{"precise": 0.30000000000000004, "tiny": 5e-324}',
        "18446744073709551616",
        '"only a string"',
    ],
)
def test_decode_reads_stored_json_as_json_loads_does(stored: str) -> None:
    assert decode(stored) == json.loads(stored)
