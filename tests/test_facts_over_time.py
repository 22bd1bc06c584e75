"""Facts over time (issue 9): the merge never forgets, never invents and does not depend on the
order payloads arrive in; work state belongs to runs, not to the loader; offsets agree with
PostgreSQL's substring; publish times are estimated from the id where a payload has none."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, create_engine, text

from helpers import run_ingest
from pipeline.db.load import load_works
from pipeline.db.state import mark_fetched, mark_gone
from pipeline.flatten import flatten
from pipeline.schedule import OLD_WORK_INTERVAL

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upstream"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
ALBUM_ID = 7232626237586312485

# Content tables and the columns that identify a row; state columns are compared separately.
CONTENT = {
    "authors": "uid",
    "author_snapshots": "uid, captured_at",
    "music": "music_id",
    "collections": "mix_id",
    "places": "poi_id",
    "categories": "category_id",
    "hashtags": "name",
    "works": "aweme_id",
    "work_hashtags": "aweme_id, hashtag_name",
    "work_mentions": "aweme_id, position",
    "work_images": "aweme_id, position",
    "work_categories": "aweme_id, level",
    "raw_payloads": "aweme_id",
}
STATE = ("last_fetched_at", "next_check_at", "gone_at", "gone_reason")


def _album() -> dict[str, Any]:
    page = json.loads((FIXTURES / "album_postlist_7232626237586312485.json").read_text())
    return dict(page["aweme_list"][0])


def album_share_url() -> str:
    return f"https://www.iesdouyin.com/share/video/{ALBUM_ID}/"


def content(conn: Connection, *, skip: tuple[str, ...] = ()) -> dict[str, list[dict[str, Any]]]:
    dump: dict[str, list[dict[str, Any]]] = {}
    for name, order in CONTENT.items():
        if name in skip:
            continue
        rows = conn.execute(text(f"SELECT * FROM {name} ORDER BY {order}")).mappings()
        dump[name] = [{k: v for k, v in r.items() if k not in STATE} for r in rows]
    return dump


def state(conn: Connection) -> list[tuple[Any, ...]]:
    return [
        tuple(r)
        for r in conn.execute(text(f"SELECT aweme_id, {', '.join(STATE)} FROM works ORDER BY 1"))
    ]


# --- one work's payloads over time: complete, degraded, older, newer ------------------------


def _variants() -> list[tuple[datetime, dict[str, Any]]]:
    album = _album()

    def edit(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        payload = copy.deepcopy(album)
        change(payload)
        return payload

    def v1(p: dict[str, Any]) -> None:  # an older shape: no create_time, share_url, media_type
        for key in ("create_time", "share_url", "media_type"):
            del p[key]
        del p["statistics"]["collect_count"]
        p["author"]["nickname"] = "old nickname"

    def v2(p: dict[str, Any]) -> None:  # complete, with a new caption and a new hashtag list
        p["desc"] = "新的文案 #日落🌄 #海边"
        p["text_extra"] = [
            {"start": 5, "end": 9, "type": 1, "hashtag_name": "日落🌄", "hashtag_id": "1"},
            {"start": 10, "end": 13, "type": 1, "hashtag_name": "海边", "hashtag_id": "2"},
        ]
        p["statistics"]["digg_count"] += 10
        p["author"]["signature"] = "a signature"

    def v3(p: dict[str, Any]) -> None:  # degraded: author, music, desc and hashtags missing
        for key in ("author", "music", "desc", "text_extra", "mix_info", "anchor_info"):
            p.pop(key, None)
        p["images"] = None
        p["statistics"]["digg_count"] += 20

    def v4(p: dict[str, Any]) -> None:  # newest: nulls where objects were, a hidden count
        p["music"] = p["text_extra"] = p["desc"] = None
        p["author"]["follower_count"] = 0
        p["author"]["unique_id"] = "newhandle"
        p["statistics"] = None

    return [
        (T0, edit(v1)),
        (T0 + timedelta(days=1), edit(v2)),
        (T0 + timedelta(days=2), edit(v3)),
        (T0 + timedelta(days=3), edit(v4)),
    ]


VARIANTS = _variants()
# Snapshots append only the future: a payload older than the latest snapshot adds none, so
# history tables depend on arrival order by design; their newest row does not (checked below).
HISTORY = ("author_snapshots",)


def _load_in_order(db: Connection, order: list[int], batches: list[int]) -> None:
    cuts = [0, *sorted(set(batches)), len(order)]
    for start, end in itertools.pairwise(cuts):
        load_works(db, [flatten(VARIANTS[i][1], VARIANTS[i][0]) for i in order[start:end]])


def _latest_stats(db: Connection) -> Any:
    return db.execute(text("SELECT * FROM work_stats ORDER BY captured_at DESC LIMIT 1")).one()


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    return {}


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    order=st.permutations(range(len(VARIANTS))),
    batches=st.lists(st.integers(1, len(VARIANTS) - 1), max_size=3),
)
def test_final_rows_do_not_depend_on_arrival_order(
    db: Connection, reference: dict[str, Any], order: list[int], batches: list[int]
) -> None:
    if not reference:
        savepoint = db.begin_nested()
        _load_in_order(db, [0, 1, 2, 3], [1, 2, 3])
        reference["content"] = content(db, skip=("work_stats", *HISTORY))
        reference["stats"] = _latest_stats(db)
        savepoint.rollback()
    savepoint = db.begin_nested()
    try:
        _load_in_order(db, list(order), batches)
        assert content(db, skip=("work_stats", *HISTORY)) == reference["content"]
        assert _latest_stats(db) == reference["stats"]
    finally:
        savepoint.rollback()


def test_the_merged_work_keeps_the_best_known_value_of_every_field(db: Connection) -> None:
    _load_in_order(db, [3, 2, 1, 0], [1, 2, 3])  # newest first: the hardest order
    work = db.execute(text(f"SELECT * FROM works WHERE aweme_id = {ALBUM_ID}")).one()
    # The degraded and the null-laden payloads are newer, but say nothing about these:
    assert work.description == "新的文案 #日落🌄 #海边"
    assert work.music_id == 7203284398119225346
    assert work.author_uid == 64115698134
    assert (work.collection_id, work.poi_id) == (7238089454588528701, 6601123594271459336)
    # create_time from the complete payloads beats the estimate from the id of the older one.
    assert (work.created_at, work.created_at_estimated) == (
        datetime(2023, 5, 13, 11, 23, 49, tzinfo=UTC),
        False,
    )
    assert (work.media_type, work.share_url) == (2, album_share_url())
    assert (work.first_seen_at, work.last_seen_at) == (VARIANTS[0][0], VARIANTS[3][0])
    tags = (
        db.execute(text("SELECT hashtag_name FROM work_hashtags ORDER BY position")).scalars().all()
    )
    assert tags == ["日落🌄", "海边"]
    assert db.execute(text("SELECT count(*) FROM work_images")).scalar_one() == 3
    author = db.execute(text("SELECT * FROM authors")).one()
    # follower_count 0 (hidden) never replaces a real count; a new handle (newest) does win.
    assert (author.follower_count, author.unique_id) == (457352, "newhandle")
    assert (author.nickname, author.signature) == ("肥牛卷儿（我爱吴世勋", "a signature")
    raw = db.execute(text("SELECT * FROM raw_payloads")).one()
    assert (raw.fetched_at, raw.is_complete) == (VARIANTS[3][0], False)
    assert raw.complete_fetched_at == VARIANTS[1][0]  # the newest with author, stats and desc


def test_a_complete_newest_payload_is_stored_once(db: Connection) -> None:
    _load_in_order(db, [2, 1], [])
    raw = db.execute(text("SELECT * FROM raw_payloads")).one()
    assert (raw.fetched_at, raw.is_complete) == (VARIANTS[2][0], False)
    load_works(db, [flatten(_album(), VARIANTS[3][0])])
    raw = db.execute(text("SELECT * FROM raw_payloads")).one()
    assert (raw.fetched_at, raw.is_complete, raw.complete_payload) == (VARIANTS[3][0], True, None)


def test_a_degraded_newest_payload_keeps_the_last_complete_one(db: Connection) -> None:
    _load_in_order(db, [0, 1, 2], [1, 2])
    raw = db.execute(text("SELECT * FROM raw_payloads")).one()
    assert (raw.fetched_at, raw.is_complete) == (VARIANTS[2][0], False)
    assert raw.complete_fetched_at == VARIANTS[1][0]
    assert raw.complete_payload["desc"] == "新的文案 #日落🌄 #海边"
    assert "author" not in raw.payload


# --- offsets ----------------------------------------------------------------------------------


def _astral_album() -> dict[str, Any]:
    """The real album payload with a caption whose hashtags hold emoji outside the BMP, with
    `text_extra` offsets in UTF-16 code units as Douyin writes them (UPSTREAM.md §3 verified
    `#日落🌄` at start 0, end 5), plus a NUL that the loader removes."""
    payload = _album()
    payload["desc"] = "#日落🌄 看\x00海🌊🌊 #海边🏖️ @朋友 #晚霞"
    units = payload["desc"].encode("utf-16-le")

    def span(part: str) -> tuple[int, int]:
        start = units.find(part.encode("utf-16-le")) // 2
        return start, start + len(part.encode("utf-16-le")) // 2

    extra = []
    for name in ("日落🌄", "海边🏖️", "晚霞"):
        start, end = span("#" + name)
        extra.append({"start": start, "end": end, "type": 1, "hashtag_name": name})
    start, end = span("@朋友")
    extra.append({"start": start, "end": end, "type": 0, "user_id": "123456789"})
    payload["text_extra"] = extra
    assert (extra[0]["start"], extra[0]["end"]) == (0, 5)
    return payload


def test_offsets_agree_with_postgresql_substring(db: Connection) -> None:
    load_works(db, [flatten(_astral_album(), T0)])
    found = db.execute(
        text(
            "SELECT h.hashtag_name, substring(w.description from h.start_offset + 1 "
            "for h.end_offset - h.start_offset) FROM work_hashtags h JOIN works w USING (aweme_id) "
            "ORDER BY h.position"
        )
    ).all()
    assert found == [("日落🌄", "#日落🌄"), ("海边🏖️", "#海边🏖️"), ("晚霞", "#晚霞")]
    mention = db.execute(
        text(
            "SELECT m.nickname, substring(w.description from m.start_offset + 1 "
            "for m.end_offset - m.start_offset) FROM work_mentions m JOIN works w USING (aweme_id)"
        )
    ).one()
    assert mention == ("朋友", "@朋友")


def test_control_characters_never_reach_hashtag_names(db: Connection) -> None:
    payload = _album()
    payload["text_extra"] = [{"start": 0, "end": 3, "type": 1, "hashtag_name": "\x1b[31mred\x7f "}]
    load_works(db, [flatten(payload, T0)])
    assert db.execute(text("SELECT name FROM hashtags")).scalar_one() == "[31mred"


# --- publish time from the id -----------------------------------------------------------------


def test_a_payload_without_create_time_is_dated_by_its_id_and_scheduled_by_age(
    db: Connection,
) -> None:
    payload = _album()
    del payload["create_time"]
    work = flatten(payload, T0)
    load_works(db, [work])
    mark_fetched(db, [work])
    row = db.execute(text("SELECT * FROM works")).one()
    estimate = datetime.fromtimestamp(ALBUM_ID >> 32, tz=UTC)
    assert (row.created_at, row.created_at_estimated) == (estimate, True)
    assert estimate == datetime(2023, 5, 13, 11, 23, 42, tzinfo=UTC)  # 7 s before create_time
    assert row.next_check_at == T0 + OLD_WORK_INTERVAL  # years old: weekly, like any old work
    # An older payload that has create_time still replaces the estimate.
    load_works(db, [flatten(_album(), T0 - timedelta(days=30))])
    row = db.execute(text("SELECT created_at, created_at_estimated FROM works")).one()
    assert row == (datetime(2023, 5, 13, 11, 23, 49, tzinfo=UTC), False)


# --- state belongs to runs --------------------------------------------------------------------


def test_the_loader_never_names_a_state_column() -> None:
    from pipeline.db import load
    from pipeline.db.models import STATE_COLUMNS

    written = set(load.WORKS.columns)
    assert not written & STATE_COLUMNS
    source = Path(load.__file__).read_text()
    assert not [c for c in STATE_COLUMNS if c in source]


def test_reprocess_leaves_gone_works_gone_and_schedules_alone(db_url: str) -> None:
    engine = create_engine(db_url)
    album, video = _album(), _astral_album()
    video["aweme_id"] = video["group_id"] = str(ALBUM_ID + 1)
    works = [flatten(album, T0), flatten(video, T0)]
    future = T0 + timedelta(days=40)
    try:
        with engine.begin() as conn:
            load_works(conn, works)
            mark_fetched(conn, works)
            mark_gone(conn, [(ALBUM_ID, "gone: status_self_see")], T0 + timedelta(days=1))
            conn.execute(
                text("UPDATE works SET next_check_at = :at WHERE aweme_id = :id"),
                {"at": future, "id": ALBUM_ID + 1},
            )
        with engine.connect() as conn:
            before_state, before_content = state(conn), content(conn)
        result = run_ingest(["reprocess"], env={"DATABASE_URL": db_url})
        assert result.returncode == 0, result.stderr
        with engine.connect() as conn:
            assert state(conn) == before_state
            assert content(conn) == before_content
            gone = conn.execute(
                text("SELECT gone_at, gone_reason FROM works WHERE aweme_id = :id"),
                {"id": ALBUM_ID},
            ).one()
        assert gone == (T0 + timedelta(days=1), "status_self_see")  # the canonical vocabulary
    finally:
        engine.dispose()
