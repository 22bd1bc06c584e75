"""`ingest reprocess` writes only what the current flattener changes: over an unchanged database
it writes no row at all (and its counts say so); a changed children list is still synced, and
only there.

Rows are told apart by `xmin` (the transaction that wrote the row's current version): a row
rewritten with equal values gets a new one."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine, text

from pipeline.db.load import load_works
from pipeline.flatten import flatten
from pipeline.reprocess import reprocess
from pipeline.testing.payloads import make_aweme_detail, sample_aweme_ids

# Every table reprocess may write, by the columns that key a row.
TABLES = {
    "works": "aweme_id",
    "authors": "uid",
    "music": "music_id",
    "collections": "mix_id",
    "places": "poi_id",
    "categories": "category_id",
    "hashtags": "name",
    "work_hashtags": "aweme_id, hashtag_name",
    "work_mentions": "aweme_id, position",
    "work_images": "aweme_id, position",
    "work_categories": "aweme_id, level",
    "work_stats": "aweme_id, captured_at",
    "author_snapshots": "uid, captured_at",
    "raw_payloads": "aweme_id",
}
FETCHED_AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


@pytest.fixture
def loaded(db_url: str) -> Iterator[Engine]:
    """40 generated works (hashtags, mentions, album images, categories), each fetched at its
    own time, loaded in batches as `ingest` would."""
    engine = create_engine(db_url)
    works = [
        flatten(make_aweme_detail(aweme_id, seed=47, sim_t=0.0), FETCHED_AT + timedelta(i))
        for i, aweme_id in enumerate(sample_aweme_ids(40, seed=47))
    ]
    for i in range(0, len(works), 8):
        with engine.begin() as conn:
            load_works(conn, works[i : i + 8])
    with engine.connect() as conn:
        for child in ("work_hashtags", "work_images", "work_categories"):
            assert conn.execute(text(f"SELECT count(*) FROM {child}")).scalar_one() > 0, child
    yield engine
    engine.dispose()


def versions(engine: Engine) -> dict[str, dict[str, str]]:
    """Per table: each row's key -> its xmin."""
    with engine.connect() as conn:
        return {
            name: {
                row[0]: row[1]
                for row in conn.execute(text(f"SELECT ({key})::text, xmin::text FROM {name} t"))
            }
            for name, key in TABLES.items()
        }


def contents(engine: Engine) -> dict[str, list[str]]:
    with engine.connect() as conn:
        return {
            name: sorted(conn.execute(text(f"SELECT row_to_json(t)::text FROM {name} t")).scalars())
            for name in TABLES
        }


def test_reprocess_of_an_unchanged_database_writes_nothing(loaded: Engine) -> None:
    before = versions(loaded)
    counts = reprocess(loaded, 7, workers=1)
    assert counts["payloads"] == 40
    assert counts["works_updated"] == counts["works_new"] == counts["snapshots_added"] == 0
    assert versions(loaded) == before


def test_reprocess_syncs_changed_children_and_only_them(loaded: Engine) -> None:
    """What an older flattener would have left behind: some works' stored children differ from
    what their payloads give now (one work's hashtags, another's images, a third's categories,
    a fourth's description). Reprocess rewrites those rows and no other."""
    expected = contents(loaded)
    with loaded.begin() as conn:
        picked: list[int] = []
        for child in ("work_hashtags", "work_images", "work_categories", "works"):
            picked.append(
                conn.execute(
                    text(f"SELECT min(aweme_id) FROM {child} WHERE aweme_id <> ALL(:ids)"),
                    {"ids": picked},
                ).scalar_one()
            )
        tagged, imaged, categorised, described = picked
        conn.execute(
            text("UPDATE work_hashtags SET position = position + 10 WHERE aweme_id = :id"),
            {"id": tagged},
        )
        conn.execute(
            text("DELETE FROM work_images WHERE aweme_id = :id AND position > 0"), {"id": imaged}
        )
        conn.execute(
            text("DELETE FROM work_categories WHERE aweme_id = :id AND level = 1"),
            {"id": categorised},
        )
        conn.execute(
            text("UPDATE works SET description = 'older reading' WHERE aweme_id = :id"),
            {"id": described},
        )
    before = versions(loaded)

    counts = reprocess(loaded, 7, workers=1)

    assert contents(loaded) == expected
    assert counts["works_updated"] == 4
    after = versions(loaded)
    rewritten = {
        name: sorted(key for key, xmin in rows.items() if before[name].get(key) != xmin)
        for name, rows in after.items()
    }
    assert {name: keys for name, keys in rewritten.items() if keys} == {
        # a children list replaced at the same fetch time leaves the works row alone
        "works": [str(described)],
        "work_hashtags": sorted(k for k in after["work_hashtags"] if k.startswith(f"({tagged},")),
        "work_images": sorted(
            k for k in after["work_images"] if k.startswith(f"({imaged},") and k != f"({imaged},0)"
        ),
        "work_categories": [f"({categorised},1)"],
    }
