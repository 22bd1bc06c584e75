"""Every query in docs/queries.sql runs and returns rows on a database loaded by the fake
upstream's payloads over several simulated refreshes; a few answers are checked against values
computed here in Python from the payloads themselves."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text

from helpers import load_fetched
from pipeline.db.runs import LinkRecord, finish_run, record_links, start_run
from pipeline.flatten import flatten
from pipeline.testing.payloads import is_frozen, make_aweme_detail, sample_aweme_ids

QUERIES = Path(__file__).resolve().parents[1] / "docs" / "queries.sql"
SEED = 11
N_WORKS = 40
AUTHOR_POOL = 8  # few authors, so leaderboards have several works per author
T0 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
# Simulated refreshes, in hours after T0: three on day 1 (several changes in one day), then
# days 2, 4, 7, 9 and 11. The last check is 2026-11-11 10:00 UTC.
HOURS = (0, 1, 2, 24, 72, 150, 200, 240)
GONE_HOUR = 150  # the refresh at this hour finds GONE deleted
IDS = sample_aweme_ids(N_WORKS, seed=SEED)
GONE = frozenset(IDS[:3])


def split_queries(sql: str) -> list[tuple[str, str]]:
    """(question, statement) pairs: each statement ends with ';' at the end of a line and the
    question is the block of `-- ` lines right above its first SQL line."""
    pairs = []
    for chunk in re.split(r";[ \t]*$", sql, flags=re.MULTILINE):
        lines = chunk.strip().splitlines()
        first_sql = next(
            (i for i, line in enumerate(lines) if line.strip() and not line.startswith("--")),
            None,
        )
        if first_sql is None:
            continue
        question: list[str] = []
        for line in reversed(lines[:first_sql]):  # stops at a blank line
            if not line.startswith("-- "):
                break
            question.insert(0, line[3:])
        pairs.append((" ".join(question), "\n".join(lines[first_sql:])))
    return pairs


QUERY_LIST = split_queries(QUERIES.read_text(encoding="utf-8"))


@cache
def _detail(aweme_id: int, hour: int) -> dict[str, Any]:
    """The payload the fake upstream serves for a work at a simulated hour (do not mutate)."""
    return make_aweme_detail(aweme_id, seed=SEED, sim_t=hour * 3600.0, author_pool=AUTHOR_POOL)


def _at(hour: int) -> datetime:
    return T0 + timedelta(hours=hour)


def _engagement(stats: dict[str, int]) -> int:
    return sum(stats[k] for k in ("digg_count", "comment_count", "share_count", "collect_count"))


def _latest_hour(aweme_id: int) -> int:
    """The hour of the last successful fetch of a work."""
    return max(h for h in HOURS if aweme_id not in GONE or h < GONE_HOUR)


@pytest.fixture(scope="module")
def loaded(engine: Engine) -> Iterator[Connection]:
    """The fake upstream's works loaded at every simulated refresh, with the bookkeeping a real
    run writes (a run, every link's outcome) and the three works found gone. Loaded once for
    the module (the queries only read) and rolled back at its end, like the `db` fixture."""
    with engine.connect() as db:
        trans = db.begin()
        try:
            _load(db)
            yield db
        finally:
            trans.rollback()


def _load(db: Connection) -> None:
    for hour in HOURS:
        batch = [
            flatten(_detail(i, hour), _at(hour)) for i in IDS if i not in GONE or hour < GONE_HOUR
        ]
        load_fetched(db, batch)
        if hour == GONE_HOUR:
            # What `ingest refresh` records for a work the upstream reports deleted.
            db.execute(
                text(
                    "UPDATE works SET gone_at = :t, gone_reason = 'status_self_see' "
                    "WHERE aweme_id = ANY(:ids)"
                ),
                {"t": _at(hour), "ids": sorted(GONE)},
            )
    run_id = start_run(db, "ingest", {"inputs": ["urls.txt"]})
    records = [
        LinkRecord(f"aweme:{i}", f"https://www.douyin.com/video/{i}", i, "loaded", None, 1, "u:1")
        for i in IDS
        if i not in GONE
    ]
    records += [
        LinkRecord(
            f"aweme:{i}", f"https://www.douyin.com/video/{i}", i, "gone", "status_self_see", 1, "u"
        )
        for i in GONE
    ]
    records.append(LinkRecord("invalid:0", "not a link", None, "invalid", "no link", 0, "u:99"))
    record_links(db, run_id, records)
    finish_run(db, run_id, "partial", Counter(loaded=N_WORKS - 3, gone=3, invalid=1), None)


def run_query(conn: Connection, sql: str) -> list[dict[str, Any]]:
    """Run the statement verbatim, as psql would (no bind-parameter parsing)."""
    raw = conn.connection.driver_connection
    assert raw is not None
    with raw.cursor() as cur:
        cur.execute(sql)
        names = [c.name for c in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _query(question_start: str) -> str:
    matches = [sql for q, sql in QUERY_LIST if q.startswith(question_start)]
    assert len(matches) == 1, question_start
    return matches[0]


def test_the_file_has_at_least_ten_commented_queries() -> None:
    assert len(QUERY_LIST) >= 10
    for question, sql in QUERY_LIST:
        assert question, f"no comment above:\n{sql}"
        assert sql.split()[0].upper() in ("SELECT", "WITH"), sql


@pytest.mark.parametrize(
    ("question", "sql"), QUERY_LIST, ids=[q.split(":")[0][:40] for q, _ in QUERY_LIST]
)
def test_every_query_runs_and_returns_rows(loaded: Connection, question: str, sql: str) -> None:
    assert run_query(loaded, sql), question


@pytest.fixture
def final() -> dict[int, dict[str, Any]]:
    """Each work's payload at its last successful fetch."""
    return {i: _detail(i, _latest_hour(i)) for i in IDS}


def test_top_growing_works_match_the_payloads(loaded: Connection) -> None:
    # Last check 2026-11-11: "this week" is Nov 5-11, so growth is measured from the value at
    # the end of Nov 4 (the fetch at hour 72) to the latest fetch (hour 240).
    gains = {
        i: _detail(i, 240)["statistics"]["digg_count"] - _detail(i, 72)["statistics"]["digg_count"]
        for i in IDS
        if i not in GONE
    }
    expected = sorted(((i, g) for i, g in gains.items() if g > 0), key=lambda p: (-p[1], p[0]))
    rows = run_query(loaded, _query("Top growing works this week"))
    assert [(r["aweme_id"], r["likes_gained_7d"]) for r in rows] == expected[:20]
    assert len(expected) >= 10  # the data really has growing works (2 in 3 are not frozen)


def test_albums_vs_videos_match_the_payloads(
    loaded: Connection, final: dict[int, dict[str, Any]]
) -> None:
    by_kind: dict[str, list[int]] = {}
    for detail in final.values():
        kind = flatten(detail, T0).work.kind
        by_kind.setdefault(kind, []).append(_engagement(detail["statistics"]))
    rows = {r["kind"]: r for r in run_query(loaded, _query("Albums vs videos"))}
    assert set(rows) == set(by_kind) == {"image_album", "video"}
    for kind, values in by_kind.items():
        assert rows[kind]["works"] == len(values)
        assert rows[kind]["avg_engagement"] == round(Decimal(sum(values)) / len(values), 1)


def test_disappeared_works_keep_their_last_known_counts(loaded: Connection) -> None:
    rows = run_query(loaded, _query("Works that disappeared"))
    assert {r["aweme_id"] for r in rows} == GONE
    for r in rows:
        assert (r["gone_at"], r["gone_reason"]) == (_at(GONE_HOUR), "status_self_see")
        assert r["last_seen_available_at"] == _at(72)
        assert r["last_known_likes"] == _detail(r["aweme_id"], 72)["statistics"]["digg_count"]


def test_author_leaderboard_matches_the_payloads(
    loaded: Connection, final: dict[int, dict[str, Any]]
) -> None:
    totals: Counter[int] = Counter()
    works: Counter[int] = Counter()
    for detail in final.values():
        uid = int(detail["author"]["uid"])
        totals[uid] += _engagement(detail["statistics"])
        works[uid] += 1
    rows = run_query(loaded, _query("Author leaderboard: total"))
    assert [(r["author_uid"], r["works"], r["total_engagement"]) for r in rows] == [
        (uid, works[uid], total)
        for uid, total in sorted(totals.items(), key=lambda p: (-p[1], p[0]))
    ]


def test_daily_totals_and_heatmap_account_for_every_work(
    loaded: Connection, final: dict[int, dict[str, Any]]
) -> None:
    days = run_query(loaded, _query("Daily totals"))
    assert [d["day"].day for d in days] == list(range(1, 12))
    assert days[-1]["works_tracked"] == N_WORKS - len(GONE)
    assert days[-1]["total_likes"] == sum(
        final[i]["statistics"]["digg_count"] for i in IDS if i not in GONE
    )
    heatmap = run_query(loaded, _query("Posting-time heatmap"))
    assert sum(cell["works"] for cell in heatmap) == N_WORKS


def test_stalled_works_are_the_frozen_available_ones(loaded: Connection) -> None:
    rows = run_query(loaded, _query("Stalled works"))
    frozen = {i for i in IDS if is_frozen(i, seed=SEED) and i not in GONE}
    assert frozen
    assert {r["aweme_id"] for r in rows} == frozen
    assert {r["last_change_at"] for r in rows} == {T0}


def _final_rows(final: dict[int, dict[str, Any]]) -> list[tuple[Any, int]]:
    """(flattened work, latest engagement) for every work, gone ones included."""
    return [(flatten(d, T0), _engagement(d["statistics"])) for d in final.values()]


def test_collection_episodes_match_the_payloads(
    loaded: Connection, final: dict[int, dict[str, Any]]
) -> None:
    expected: dict[tuple[int, int], list[int]] = {}
    for flat, engagement in _final_rows(final):
        if flat.collection is not None:
            key = (flat.collection.mix_id, flat.work.collection_episode)
            expected.setdefault(key, []).append(engagement)
    rows = run_query(loaded, _query("Engagement by collection episode"))
    assert {(r["mix_id"], r["episode"]): (r["works"], r["total_engagement"]) for r in rows} == {
        key: (len(values), sum(values)) for key, values in expected.items()
    }
    assert {r["episodes_published"] for r in rows} == {9}
    assert len({mix_id for mix_id, _ in expected}) >= 2  # several authors have a collection


def test_top_places_match_the_payloads(
    loaded: Connection, final: dict[int, dict[str, Any]]
) -> None:
    works: Counter[int] = Counter()
    engagement: Counter[int] = Counter()
    authors: dict[int, set[int | None]] = {}
    for flat, value in _final_rows(final):
        if flat.place is not None:
            works[flat.place.poi_id] += 1
            engagement[flat.place.poi_id] += value
            authors.setdefault(flat.place.poi_id, set()).add(flat.work.author_uid)
    rows = run_query(loaded, _query("Top places"))
    assert [(r["poi_id"], r["works"], r["authors"], r["total_engagement"]) for r in rows] == [
        (poi, works[poi], len(authors[poi]), engagement[poi])
        for poi in sorted(works, key=lambda p: (-works[p], -engagement[p], p))
    ]
    assert len(rows) >= 2


def test_category_mix_matches_the_payloads(
    loaded: Connection, final: dict[int, dict[str, Any]]
) -> None:
    per_author: dict[int, Counter[str]] = {}
    for flat, _ in _final_rows(final):
        top = (flat.categories or ())[0]
        assert flat.work.author_uid is not None
        per_author.setdefault(flat.work.author_uid, Counter())[top.name or ""] += 1
    rows = run_query(loaded, _query("Category mix per author"))
    got = {(r["author_uid"], r["category"]): (r["works"], r["pct_of_author_works"]) for r in rows}
    expected = {
        (uid, name): (
            n,
            (Decimal(100 * n) / sum(counts.values())).quantize(Decimal("0.1"), ROUND_HALF_UP),
        )
        for uid, counts in per_author.items()
        for name, n in counts.items()
    }
    assert got == expected


def test_link_outcomes_add_up(loaded: Connection) -> None:
    rows = run_query(loaded, _query("Input links"))
    outcomes = {(r["last_outcome"], r["last_reason"]): r["links"] for r in rows}
    assert outcomes == {
        ("loaded", None): N_WORKS - 3,
        ("gone", "status_self_see"): 3,
        ("invalid", "no link"): 1,
    }


def test_split_queries_reads_the_comment_right_above_each_statement() -> None:
    sql = (
        "-- header\n\n-- First?\nSELECT 1;\n-- Second?\n-- more\nWITH a AS (SELECT 1)\nSELECT 2;\n"
    )
    assert split_queries(sql) == [
        ("First?", "SELECT 1"),
        ("Second? more", "WITH a AS (SELECT 1)\nSELECT 2"),
    ]
