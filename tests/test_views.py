"""The analyst views against a real PostgreSQL: daily carry-forward and end-of-day values,
latest counts through the primary-key index, the enriched works table, and a comment on every
view and view column (what `psql \\d+` shows)."""

from __future__ import annotations

import copy
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from helpers import load_fetched
from pipeline.flatten import flatten

VIEWS = (
    "work_stats_latest",
    "work_stats_daily",
    "hashtag_stats",
    "author_stats",
    "works_enriched",
    "author_counts_latest",
)
VIDEO = 7071967230287744267
ALBUM = 7232626237586312485
DAY1 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)


def _day(n: int, hour: int = 10, minute: int = 0) -> datetime:
    """Day `n` (1-based) of the test calendar, at hour:minute UTC."""
    return DAY1.replace(hour=hour, minute=minute) + timedelta(days=n - 1)


@pytest.fixture
def video(fixtures_dir: Path) -> dict[str, Any]:
    body = json.loads((fixtures_dir / "video_detail_7071967230287744267.json").read_text())
    detail: dict[str, Any] = body["aweme_detail"]
    return detail


@pytest.fixture
def album(fixtures_dir: Path) -> dict[str, Any]:
    body = json.loads((fixtures_dir / "album_postlist_7232626237586312485.json").read_text())
    detail: dict[str, Any] = body["aweme_list"][0]
    return detail


def _with(detail: dict[str, Any], **counts: int) -> dict[str, Any]:
    changed = copy.deepcopy(detail)
    changed["statistics"].update(counts)
    return changed


def _daily(db: Connection, aweme_id: int) -> list[Any]:
    return db.execute(
        text(
            "SELECT day, captured_at, digg_count, comment_count, digg_delta, comment_delta, "
            "share_delta FROM work_stats_daily WHERE aweme_id = :id ORDER BY day"
        ),
        {"id": aweme_id},
    ).all()


def test_daily_carries_values_over_days_without_a_change(
    db: Connection, video: dict[str, Any]
) -> None:
    comments = video["statistics"]["comment_count"]
    load_fetched(db, [flatten(_with(video, digg_count=100), _day(1))])
    # Checks on days 3 and 5 find the same counts: no snapshot row, only a new check time.
    load_fetched(db, [flatten(_with(video, digg_count=100), _day(3))])
    result = load_fetched(db, [flatten(_with(video, digg_count=100), _day(5, 9))])
    assert result.snapshots_added == 0

    rows = _daily(db, VIDEO)
    assert [r.day for r in rows] == [date(2026, 11, d) for d in range(1, 6)]
    assert [r.digg_count for r in rows] == [100] * 5
    assert [r.comment_count for r in rows] == [comments] * 5
    assert {r.captured_at for r in rows} == {_day(1)}  # every day carries day 1's snapshot
    assert rows[0].digg_delta is None  # no previous day
    assert [(r.digg_delta, r.comment_delta, r.share_delta) for r in rows[1:]] == [(0, 0, 0)] * 4


def test_daily_uses_the_end_of_day_value_of_a_day_with_two_changes(
    db: Connection, video: dict[str, Any]
) -> None:
    # A session in UTC+8 must not move 23:30 UTC into the next day: days are UTC days.
    db.execute(text("SET LOCAL TIME ZONE 'Asia/Shanghai'"))
    load_fetched(db, [flatten(_with(video, digg_count=100), _day(1))])
    load_fetched(db, [flatten(_with(video, digg_count=100), _day(3))])  # unchanged
    load_fetched(db, [flatten(_with(video, digg_count=110), _day(4, 8))])
    load_fetched(db, [flatten(_with(video, digg_count=125, comment_count=1), _day(4, 23, 30))])
    load_fetched(db, [flatten(_with(video, digg_count=125, comment_count=1), _day(6))])  # unchanged

    rows = _daily(db, VIDEO)
    assert [r.day for r in rows] == [date(2026, 11, d) for d in range(1, 7)]
    assert [r.digg_count for r in rows] == [100, 100, 100, 125, 125, 125]
    assert [r.digg_delta for r in rows] == [None, 0, 0, 25, 0, 0]
    assert rows[3].captured_at == _day(4, 23, 30)
    assert rows[3].comment_count == 1
    assert rows[3].comment_delta == 1 - video["statistics"]["comment_count"]
    assert [r.captured_at for r in rows[4:]] == [_day(4, 23, 30)] * 2


def test_daily_ends_at_the_last_check_and_skips_works_without_snapshots(
    db: Connection, video: dict[str, Any], album: dict[str, Any]
) -> None:
    no_stats = copy.deepcopy(album)
    del no_stats["statistics"]
    load_fetched(db, [flatten(video, _day(1, 23, 59)), flatten(no_stats, _day(1))])
    load_fetched(db, [flatten(video, _day(2, 0, 1))])  # a check just after midnight
    rows = _daily(db, VIDEO)
    assert [r.day for r in rows] == [date(2026, 11, 1), date(2026, 11, 2)]
    assert _daily(db, ALBUM) == []
    # ...but the work itself is not lost: it is in the per-work views with NULL counts.
    latest = db.execute(
        text("SELECT captured_at, digg_count FROM work_stats_latest WHERE aweme_id = :id"),
        {"id": ALBUM},
    ).one()
    assert tuple(latest) == (None, None)


def test_latest_has_one_row_per_work_with_captured_and_checked_times(
    db: Connection, video: dict[str, Any], album: dict[str, Any]
) -> None:
    load_fetched(db, [flatten(_with(video, digg_count=1), _day(1)), flatten(album, _day(1))])
    load_fetched(db, [flatten(_with(video, digg_count=2), _day(2)), flatten(album, _day(2))])
    load_fetched(db, [flatten(_with(video, digg_count=2), _day(3))])
    db.execute(
        text("UPDATE works SET gone_at = :t, gone_reason = 'status_self_see' WHERE aweme_id = :id"),
        {"t": _day(4), "id": ALBUM},
    )
    rows = {
        r.aweme_id: r
        for r in db.execute(text("SELECT * FROM work_stats_latest")).all()  # gone ones too
    }
    assert set(rows) == {VIDEO, ALBUM}
    v, a = rows[VIDEO], rows[ALBUM]
    assert (v.digg_count, v.captured_at, v.last_checked_at) == (2, _day(2), _day(3))
    assert v.gone_at is None
    s = video["statistics"]
    assert v.engagement == 2 + s["comment_count"] + s["share_count"] + s["collect_count"]
    assert (a.captured_at, a.last_checked_at, a.gone_at) == (_day(1), _day(2), _day(4))


def test_works_enriched_joins_author_music_hashtags_and_counts(
    db: Connection, album: dict[str, Any]
) -> None:
    load_fetched(db, [flatten(album, _day(1))])
    row = db.execute(text("SELECT * FROM works_enriched WHERE aweme_id = :id"), {"id": ALBUM}).one()
    assert row.kind == "image_album"
    assert row.hashtags == ["ootd穿搭", "氛围感", "女友穿搭", "辣妹穿搭", "生活碎片"]
    assert row.image_count == 3
    assert row.author_nickname == album["author"]["nickname"]
    assert row.author_sec_uid == album["author"]["sec_uid"]
    assert row.music_id == 7203284398119225346
    assert row.music_title == album["music"]["title"]
    assert row.digg_count == album["statistics"]["digg_count"]
    assert (row.captured_at, row.last_checked_at, row.gone_at) == (_day(1), _day(1), None)


def test_hashtag_and_author_stats_count_every_work(
    db: Connection, video: dict[str, Any], album: dict[str, Any]
) -> None:
    second = _with(copy.deepcopy(album), digg_count=10, comment_count=0, share_count=0)
    second["statistics"]["collect_count"] = 0
    second["aweme_id"] = second["group_id"] = "7232626237586312486"
    second["text_extra"] = [e for e in second["text_extra"] if e.get("hashtag_name") == "氛围感"]
    load_fetched(db, [flatten(video, _day(1)), flatten(album, _day(1)), flatten(second, _day(1))])
    db.execute(
        text("UPDATE works SET gone_at = :t WHERE aweme_id = :id"), {"t": _day(2), "id": ALBUM}
    )

    s = album["statistics"]
    first = s["digg_count"] + s["comment_count"] + s["share_count"] + s["collect_count"]
    tag = db.execute(text("SELECT * FROM hashtag_stats WHERE hashtag_name = '氛围感'")).one()
    assert (tag.works, tag.gone_works, tag.authors) == (2, 1, 1)
    assert tag.total_engagement == first + 10
    assert tag.median_engagement == pytest.approx((first + 10) / 2)
    other = db.execute(text("SELECT works FROM hashtag_stats WHERE hashtag_name = 'ootd穿搭'"))
    assert other.scalar_one() == 1

    author = db.execute(
        text("SELECT * FROM author_stats WHERE author_uid = :uid"),
        {"uid": int(album["author"]["uid"])},
    ).one()
    assert (author.works, author.image_albums, author.videos, author.gone_works) == (2, 2, 0, 1)
    assert author.total_digg == s["digg_count"] + 10
    assert (
        author.first_work_at
        == author.last_work_at
        == datetime.fromtimestamp(album["create_time"], UTC)
    )


def _plan(db: Connection, sql: str) -> str:
    return "\n".join(db.execute(text(f"EXPLAIN {sql}")).scalars())


def test_latest_counts_use_the_primary_key_not_a_scan_of_all_snapshots(db: Connection) -> None:
    # 2,000 works x 20 snapshots, with statistics, so the planner chooses on real costs.
    db.execute(
        text(
            "INSERT INTO works (aweme_id, kind) "
            "SELECT 7000000000000000000 + i, 'video' FROM generate_series(1, 2000) i"
        )
    )
    db.execute(
        text(
            "INSERT INTO work_stats (aweme_id, captured_at, digg_count) "
            "SELECT 7000000000000000000 + i, timestamptz '2026-11-01' + j * interval '1 hour', j "
            "FROM generate_series(1, 2000) i, generate_series(1, 20) j"
        )
    )
    db.execute(text("ANALYZE works, work_stats"))
    for sql in (
        "SELECT * FROM work_stats_latest",
        "SELECT * FROM work_stats_latest WHERE aweme_id = 7000000000000000042",
        "SELECT * FROM works_enriched WHERE aweme_id = 7000000000000000042",
        "SELECT * FROM work_stats_daily WHERE aweme_id = 7000000000000000042",
    ):
        plan = _plan(db, sql)
        assert "Seq Scan on work_stats" not in plan, plan
        assert "pk_work_stats" in plan, plan
    point = _plan(db, "SELECT * FROM works_enriched WHERE aweme_id = 7000000000000000042")
    assert "Seq Scan on works" not in point, point
    latest = db.execute(
        text("SELECT digg_count FROM work_stats_latest WHERE aweme_id = 7000000000000000042")
    ).scalar_one()
    assert latest == 20


def test_every_view_and_view_column_has_a_comment(db: Connection) -> None:
    views = db.execute(
        text(
            "SELECT c.relname, obj_description(c.oid, 'pg_class') AS comment "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm')"
        )
    ).all()
    assert {v.relname for v in views} == set(VIEWS)
    for v in views:
        assert v.comment, f"view {v.relname} has no comment"
    columns = db.execute(
        text(
            "SELECT c.relname, a.attname, col_description(c.oid, a.attnum) AS comment "
            "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped "
            "WHERE n.nspname = 'public' AND c.relkind = 'v'"
        )
    ).all()
    assert len(columns) > 5 * len(VIEWS)
    missing = [f"{c.relname}.{c.attname}" for c in columns if not c.comment]
    assert missing == []
