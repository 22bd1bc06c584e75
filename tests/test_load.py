"""The loader against a real PostgreSQL: exact values from the real fixtures, idempotence,
change-only snapshots, child-row replacement, and no deadlocks between concurrent writers."""

from __future__ import annotations

import copy
import json
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, text

from pipeline.db.load import load_works
from pipeline.flatten import FlatWork, flatten

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
TABLES = (
    "authors",
    "author_snapshots",
    "music",
    "collections",
    "places",
    "categories",
    "works",
    "work_stats",
    "hashtags",
    "work_hashtags",
    "work_mentions",
    "work_images",
    "work_categories",
    "raw_payloads",
)


def real_details(fixtures_dir: Path) -> list[dict[str, Any]]:
    """Every real aweme_detail: the detail response and each post-list item."""
    detail = json.loads((fixtures_dir / "video_detail_7071967230287744267.json").read_text())
    details = [detail["aweme_detail"]]
    for name in (
        "album_postlist_7232626237586312485.json",
        "video_postlist_7253290037918354691.json",
    ):
        details.extend(json.loads((fixtures_dir / name).read_text())["aweme_list"])
    return details


def snapshot(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every data table, in a stable order."""
    return {
        table: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))]
        for table in TABLES
    }


def with_counts(detail: dict[str, Any], **counts: int) -> dict[str, Any]:
    changed = copy.deepcopy(detail)
    changed["statistics"].update(counts)
    return changed


@pytest.fixture
def details(fixtures_dir: Path) -> list[dict[str, Any]]:
    return real_details(fixtures_dir)


def test_real_fixtures_load_with_exact_values(
    db: Connection, details: list[dict[str, Any]]
) -> None:
    result = load_works(db, [flatten(d, T0) for d in details])
    assert (result.works_inserted, result.works_updated, result.snapshots_added) == (3, 0, 3)

    video = db.execute(text("SELECT * FROM works WHERE aweme_id = 7071967230287744267")).one()
    assert video.kind == "video"
    assert video.author_uid == 3689586767443357
    assert video.music_id == 7049808807056149285
    assert video.created_at == datetime(2022, 3, 6, 12, 44, 43, tzinfo=UTC)
    assert (video.duration_ms, video.video_width, video.video_height) == (9611, 1080, 1920)
    assert video.share_url == "https://www.iesdouyin.com/share/video/7071967230287744267/"
    assert video.description == "其实早就和你表白过了 在看你的每个眼神里"
    assert (video.first_seen_at, video.last_seen_at, video.field_seen_at) == (
        T0,
        T0,
        {"text_extra": T0.isoformat(), "video_tag": T0.isoformat()},
    )
    assert (video.created_at_estimated, video.group_id, video.is_ads, video.is_top) == (
        False,
        7071967230287744267,
        False,
        False,
    )
    assert (video.video_ratio, video.cover_uri) == (
        "540p",
        "tos-cn-p-0015/67d4a42fb52b4b4fbbc1ba2b745e1304",
    )
    assert (video.collection_id, video.poi_id, video.ip_label) == (None, None, None)
    categories = db.execute(
        text(
            "SELECT wc.level, c.category_id, c.name FROM work_categories wc "
            "JOIN categories c USING (category_id) WHERE wc.aweme_id = 7071967230287744267 "
            "ORDER BY wc.level"
        )
    ).all()
    assert categories == [(1, 2006, "颜值"), (2, 2006002, "美女")]  # the level-0 pad is dropped

    stats = db.execute(text("SELECT * FROM work_stats WHERE aweme_id = 7071967230287744267")).one()
    assert (stats.digg_count, stats.comment_count, stats.share_count) == (165539, 7343, 23537)
    assert (stats.collect_count, stats.play_count, stats.admire_count) == (3799, 0, 0)

    author = db.execute(text("SELECT * FROM authors WHERE uid = 3689586767443357")).one()
    assert author.sec_uid == (
        "MS4wLjABAAAAERbHksh_jtLRYjO8hOx9clHF9tJDBsZmhcL0VoPLItYXWg8H0jwYJd3mJOxiIGsU"
    )
    assert (author.unique_id, author.nickname) == ("bailitufu8", "百里TUFU")
    # The detail endpoint hides followers (reports 0): unknown, not zero.
    assert (author.follower_count, author.total_favorited, author.favoriting_count) == (
        None,
        43831234,
        1622,
    )
    assert author.avatar_uri == "aweme-avatar/tos-cn-avt-0015_b4a51067e5d3c41d5d7758f14532ace6"
    music = db.execute(text("SELECT * FROM music WHERE music_id = 7049808807056149285")).one()
    assert (music.is_original, music.is_pgc, music.owner_handle) == (True, False, "z810807031")

    album = db.execute(text("SELECT * FROM works WHERE aweme_id = 7232626237586312485")).one()
    assert (album.collection_id, album.collection_episode, album.poi_id) == (
        7238089454588528701,
        1,
        6601123594271459336,
    )
    assert (album.is_top, album.is_ads, album.video_ratio) == (False, None, None)
    collection = db.execute(text("SELECT name, episodes FROM collections")).one()
    assert collection == ("穿搭图文(⁎⁍̴̛ᴗ⁍̴̛⁎)", 9)
    place = db.execute(text("SELECT * FROM places")).one()
    assert (place.poi_id, place.name, place.city, place.province, place.country) == (
        6601123594271459336,
        "武汉市",
        "武汉市",
        "湖北省",
        "中国",
    )
    assert (place.latitude, place.longitude) == (30.59573, 114.298972)
    album_author = db.execute(text("SELECT * FROM authors WHERE uid = 64115698134")).one()
    assert (album_author.follower_count, album_author.aweme_count) == (457352, 208)
    assert album_author.avatar_uri == (
        "aweme-avatar/tos-cn-avt-0015_0f0f760731f3a659ad557fb9718a7019"
    )
    pinned = db.execute(
        text("SELECT is_top, group_id FROM works WHERE aweme_id = 7253290037918354691")
    ).one()
    assert pinned == (True, 7253008209626156349)
    grown = db.execute(text("SELECT * FROM author_snapshots ORDER BY uid")).all()
    assert [(a.uid, a.follower_count, a.total_favorited, a.aweme_count) for a in grown] == [
        (64115698134, 457352, 14192407, 208),
        (96719499963, 2259367, 77462280, 292),
        (3689586767443357, None, 43831234, None),
    ]

    album_tags = db.execute(
        text(
            "SELECT hashtag_name FROM work_hashtags WHERE aweme_id = 7232626237586312485 "
            "ORDER BY position"
        )
    ).scalars()
    assert list(album_tags) == ["ootd穿搭", "氛围感", "女友穿搭", "辣妹穿搭", "生活碎片"]
    images = db.execute(
        text(
            "SELECT position, width, height FROM work_images "
            "WHERE aweme_id = 7232626237586312485 ORDER BY position"
        )
    ).all()
    assert [i.position for i in images] == [0, 1, 2]
    assert db.execute(
        text("SELECT kind, music_id FROM works WHERE aweme_id = 7232626237586312485")
    ).one() == ("image_album", 7203284398119225346)
    video_tags = db.execute(
        text("SELECT count(*) FROM work_hashtags WHERE aweme_id = 7253290037918354691")
    ).scalar_one()
    assert video_tags == 2
    raw = db.execute(
        text("SELECT payload->>'aweme_id' FROM raw_payloads WHERE aweme_id = 7071967230287744267")
    ).scalar_one()
    assert raw == "7071967230287744267"


def test_amagi_rounded_numbers_do_not_leak_into_ids(db: Connection, fixtures_dir: Path) -> None:
    envelope = json.loads(
        (fixtures_dir / "amagi_5.8.0_http_envelopes" / "ok_video.http200.json").read_text()
    )
    detail = envelope["data"]["aweme_detail"]
    assert detail["music"]["id"] == 7049808807056150000  # rounded by JavaScript
    load_works(db, [flatten(detail, T0)])
    assert db.execute(text("SELECT music_id FROM music")).scalar_one() == 7049808807056149285


def test_loading_the_same_batch_twice_changes_nothing(
    db: Connection, details: list[dict[str, Any]]
) -> None:
    batch = [flatten(d, T0) for d in details]
    load_works(db, batch)
    before = snapshot(db)
    again = load_works(db, batch)
    assert (again.works_inserted, again.works_updated, again.snapshots_added) == (0, 0, 0)
    assert snapshot(db) == before


def test_changed_counts_add_exactly_one_snapshot(
    db: Connection, details: list[dict[str, Any]]
) -> None:
    load_works(db, [flatten(d, T0) for d in details])
    t1 = T0 + timedelta(hours=1)
    changed = with_counts(details[0], digg_count=165540)
    result = load_works(db, [flatten(changed, t1), *(flatten(d, t1) for d in details[1:])])
    assert result.snapshots_added == 1
    assert result.works_updated == 3  # every work records its newer payload
    rows = db.execute(
        text(
            "SELECT captured_at, digg_count FROM work_stats "
            "WHERE aweme_id = 7071967230287744267 ORDER BY captured_at"
        )
    ).all()
    assert rows == [(T0, 165539), (t1, 165540)]
    seen = db.execute(text("SELECT last_seen_at FROM works ORDER BY aweme_id")).scalars()
    assert set(seen) == {t1}
    assert db.execute(text("SELECT count(*) FROM work_stats")).scalar_one() == 4


def test_an_older_payload_never_overwrites_a_newer_one(
    db: Connection, details: list[dict[str, Any]]
) -> None:
    newer = copy.deepcopy(details[0])
    newer["desc"] = "newer caption"
    load_works(db, [flatten(newer, T0 + timedelta(days=1))])
    load_works(db, [flatten(with_counts(details[0], digg_count=1), T0)])
    assert db.execute(text("SELECT description FROM works")).scalar_one() == "newer caption"
    assert db.execute(text("SELECT count(*) FROM work_stats")).scalar_one() == 1


def test_children_follow_a_changed_description(
    db: Connection, details: list[dict[str, Any]]
) -> None:
    album = details[1]
    load_works(db, [flatten(album, T0)])
    edited = copy.deepcopy(album)
    extras = edited["text_extra"]
    edited["text_extra"] = [extras[2], extras[0]]  # two tags left, order changed
    edited["images"] = edited["images"][:1]
    load_works(db, [flatten(edited, T0 + timedelta(hours=1))])
    tags = db.execute(
        text("SELECT hashtag_name, position FROM work_hashtags ORDER BY position")
    ).all()
    assert tags == [("女友穿搭", 0), ("ootd穿搭", 1)]
    assert db.execute(text("SELECT count(*) FROM work_images")).scalar_one() == 1
    # The hashtag dictionary keeps every tag ever seen.
    assert db.execute(text("SELECT count(*) FROM hashtags")).scalar_one() == 5


def test_two_payloads_of_one_work_in_a_batch_are_two_observations(
    db: Connection, details: list[dict[str, Any]]
) -> None:
    old = flatten(details[0], T0)
    new = flatten(with_counts(details[0], digg_count=7), T0 + timedelta(minutes=5))
    load_works(db, [new, old])  # as if loaded one after the other, in time order
    stats = db.execute(text("SELECT captured_at, digg_count FROM work_stats ORDER BY 1")).all()
    assert stats == [(T0, 165539), (T0 + timedelta(minutes=5), 7)]
    assert (
        db.execute(text("SELECT fetched_at FROM raw_payloads")).scalar_one() == new.work.fetched_at
    )


def test_nul_and_lone_surrogates_are_cleaned_not_fatal(
    db: Connection, details: list[dict[str, Any]]
) -> None:
    dirty = copy.deepcopy(details[0])
    dirty["desc"] = "a\x00b"
    dirty["author"]["nickname"] = "n\x00ick"
    dirty["music"]["title"] = json.loads('"half an emoji \\ud83d"')  # a lone surrogate
    load_works(db, [flatten(dirty, T0)])
    # Replaced one for one (so text_extra offsets still fit), in the table and the raw payload.
    assert db.execute(text("SELECT description FROM works")).scalar_one() == "a\ufffdb"
    raw_desc = db.execute(text("SELECT payload->>'desc' FROM raw_payloads")).scalar_one()
    assert raw_desc == "a\ufffdb"
    title = db.execute(text("SELECT payload->'music'->>'title' FROM raw_payloads")).scalar_one()
    assert title == "half an emoji ?"


def _varied(details: list[dict[str, Any]], n: int, round_no: int) -> list[FlatWork]:
    """n distinct works whose authors are new in every round (the racy case: two writers
    inserting the same new author at once)."""
    works = []
    for i in range(n):
        d = copy.deepcopy(details[i % len(details)])
        aweme_id = str(7_000_000_000_000_000_000 + round_no * 1000 + i)
        d["aweme_id"] = d["group_id"] = aweme_id
        d["author"]["uid"] = str(10_000_000_000 + round_no * 10 + i % 3)
        d["author"]["sec_uid"] = f"MS4wLjABAAAA-round{round_no}-author{i % 3}"
        works.append(flatten(d, T0 + timedelta(seconds=i)))
    return works


def test_concurrent_writers_in_opposite_orders_do_not_deadlock(
    db_url: str, details: list[dict[str, Any]]
) -> None:
    engine: Engine = create_engine(db_url)
    rounds = [_varied(details, 60, r) for r in range(25)]
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def writer(reverse: bool) -> None:
        try:
            for batch in rounds:
                barrier.wait(timeout=10)
                with engine.begin() as conn:
                    conn.execute(text("SET LOCAL lock_timeout = '20s'"))
                    load_works(conn, list(reversed(batch)) if reverse else batch)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(r,)) for r in (False, True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM works")).scalar_one() == 1500
            assert conn.execute(text("SELECT count(*) FROM work_stats")).scalar_one() == 1500
            assert conn.execute(text("SELECT count(*) FROM authors")).scalar_one() == 75
    finally:
        engine.dispose()
