"""Stored values never drift: every real fixture body (and variants with NUL, lone surrogates,
astral emoji, odd numbers and degraded payloads) goes the production way — contract
`classify` on the body bytes, `flatten`, `load_works`, then `reprocess` — and a canonical dump
of every table, `raw_payloads` included, must equal the golden file byte for byte.

The golden file was written by the loader as it was before the set-based rewrite (main at
8f8a72a), so this test is what proves the rewrite changed no stored value. Regenerate it only
for an intended change of stored values, and say so in the commit:

    UPDATE_GOLDEN=1 .venv/bin/pytest -q tests/test_stored_values.py
"""

from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, text

from pipeline.db.load import load_works
from pipeline.douyin import clean_json, json_text
from pipeline.flatten import NotAWork, flatten
from pipeline.reprocess import reprocess_batch
from pipeline.upstream.contracts import AmagiContract, Contract, SeedContract
from pipeline.upstream.outcomes import Outcome

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upstream"
GOLDEN = Path(__file__).resolve().parent / "golden" / "stored_values.txt"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)

# Table -> its key columns (dump order). Work state columns stamped with now() are left out:
# they are not content and the loader never writes them.
TABLES = {
    "authors": "uid",
    "author_snapshots": "uid, captured_at",
    "music": "music_id",
    "collections": "mix_id",
    "places": "poi_id",
    "categories": "category_id",
    "works": "aweme_id",
    "work_stats": "aweme_id, captured_at",
    "hashtags": "name",
    "work_hashtags": "aweme_id, hashtag_name",
    "work_mentions": "aweme_id, position",
    "work_images": "aweme_id, position",
    "work_categories": "aweme_id, level",
    "raw_payloads": "aweme_id",
}
NOT_CONTENT = ("last_fetched_at", "next_check_at")
# JSONB columns, whose SQL NULL and JSON null print alike inside to_jsonb: dumped by type too.
MERGED = ("authors", "music", "collections", "places", "works")
JSONB_COLUMNS = {
    **{table: ("field_seen_at",) for table in MERGED},
    "raw_payloads": ("payload", "complete_payload"),
}


def _seed_body(douyin_body: bytes) -> bytes:
    """A raw Douyin detail body, as received, inside the seed service's envelope."""
    return b'{"code":0,"message":"success","data":' + douyin_body + b"}"


def _dumps(value: Any, *, ascii_only: bool = False) -> bytes:
    return json.dumps(value, ensure_ascii=ascii_only, separators=(",", ":")).encode()


def _detail_body(detail: dict[str, Any], *, ascii_only: bool = False) -> bytes:
    return _seed_body(_dumps({"aweme_detail": detail, "status_code": 0}, ascii_only=ascii_only))


def _splice(detail: dict[str, Any], literals: dict[str, str]) -> bytes:
    """The detail's body with each quoted marker replaced by a literal, verbatim (values JSON
    written by Python cannot carry: lone surrogate escapes, number spellings, duplicate keys)."""
    body = _detail_body(detail).decode()
    for marker, literal in literals.items():
        assert f'"{marker}"' in body, marker
        body = body.replace(f'"{marker}"', literal)
    return body.encode()


def real_details() -> list[dict[str, Any]]:
    detail = json.loads((FIXTURES / "video_detail_7071967230287744267.json").read_bytes())
    details = [detail["aweme_detail"]]
    for name in ("album_postlist_7232626237586312485", "video_postlist_7253290037918354691"):
        details.extend(json.loads((FIXTURES / f"{name}.json").read_bytes())["aweme_list"])
    return details


def _copy(detail: dict[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = json.loads(json.dumps(detail))
    return copied


def _as_work(detail: dict[str, Any], offset: int) -> dict[str, Any]:
    """The detail as another work (its own rows and raw payload, kept to the final dump)."""
    changed = _copy(detail)
    changed["aweme_id"] = str(int(detail["aweme_id"]) + offset)
    return changed


def _with_counts(detail: dict[str, Any], bump: int) -> dict[str, Any]:
    changed = _copy(detail)
    for key in ("digg_count", "comment_count", "share_count", "collect_count"):
        changed["statistics"][key] = changed["statistics"].get(key, 0) + bump
    changed["author"]["follower_count"] = 1000 + bump
    return changed


def _degraded(detail: dict[str, Any]) -> dict[str, Any]:
    changed = _copy(detail)
    for key in ("author", "statistics", "desc", "text_extra", "music"):
        changed.pop(key, None)
    return changed


def _hostile_texts(detail: dict[str, Any], bad: str) -> dict[str, Any]:
    changed = _copy(detail)
    changed["desc"] = f"坏{bad}字 {changed.get('desc') or ''}"
    changed["author"]["nickname"] = f"{changed['author'].get('nickname') or ''}{bad}"
    changed["author"]["signature"] = f"{bad}签名{bad}"
    for entry in changed.get("text_extra") or []:
        if entry.get("hashtag_name"):
            entry["hashtag_name"] = f"{entry['hashtag_name']}{bad}"
    if isinstance(changed.get("music"), dict):
        changed["music"]["title"] = f"{bad}{changed['music'].get('title') or ''}"
    changed[f"key{bad}with"] = {f"nested{bad}": [f"v{bad}", 1, None, True]}
    return changed


def _emoji(detail: dict[str, Any]) -> dict[str, Any]:
    changed = _copy(detail)
    desc = "😀 开心 #开心😀 @朋友𝄞 尾"
    changed["desc"] = desc
    changed["text_extra"] = [
        {"type": 1, "hashtag_name": "开心😀", "hashtag_id": "1600000000000000001",
         "start": 6, "end": 11},
        {"type": 0, "user_id": "1234567890123", "sec_uid": "MS4wLjABAAAA_emoji",
         "start": 12, "end": 17},
    ]  # fmt: skip
    changed["author"]["nickname"] = "𝒜𝓁𝒾𝒸𝑒 🌸"
    return changed


def _numbers(detail: dict[str, Any]) -> bytes:
    changed = _copy(detail)
    changed["poi_info"] = {
        "poi_id": "6601136811005708292", "poi_name": "西湖", "poi_latitude": "__LAT__",
        "poi_longitude": "__LON__", "address_info": {"city": "杭州", "province": "浙江"},
    }  # fmt: skip
    changed["x_numbers"] = "__NUMBERS__"
    changed["desc"] = "__DESC1__"
    numbers = [
        "0.1", "1E2", "1.0e+2", "0.10", "100.0", "1e16", "1e15", "123456789012345.6",
        "1.5e-7", "0.0001", "0.00001", "-0.0", "5e-324", "1.7976931348623157e308", "3.0",
        "18446744073709551615", "-9223372036854775808", "9007199254740993", "12345678901234567",
        "1e22", "2.5E+20", "-1.25e-10", "33.333333333333336", "1e-5", "123e4",
    ]  # fmt: skip
    return _splice(
        changed,
        {
            "__LAT__": "30.2592444",
            "__LON__": "1.2e2",
            "__NUMBERS__": "[" + ",".join(numbers) + "]",
            # Duplicate keys: the last one wins, as in every JSON reader the pipeline uses.
            "__DESC1__": '"first", "desc": "second \\\\u0000 is no NUL"',
        },
    )


def _lone(detail: dict[str, Any], escapes: bytes) -> bytes:
    """The hostile texts with lone surrogate escapes, which Python's json never writes."""
    return _detail_body(_hostile_texts(detail, "__LONE__")).replace(b"__LONE__", escapes)


def corpus() -> list[tuple[datetime, list[tuple[str, bytes]]]]:
    """Batches of (style, body) with their fetch time, in load order."""
    envelopes = sorted((FIXTURES / "amagi_5.8.0_http_envelopes").glob("*.json"))
    details = real_details()
    first: list[tuple[str, bytes]] = [("amagi", p.read_bytes()) for p in envelopes]
    first.append(("seed", _seed_body((FIXTURES / "video_detail_7071967230287744267.json")
                                     .read_bytes())))  # fmt: skip
    first.append(("seed", _seed_body((FIXTURES / "deleted_filter_detail_7223326284024139065.json")
                                     .read_bytes())))  # fmt: skip
    first += [("seed", _detail_body(d)) for d in details[1:]]
    later = [("seed", _detail_body(_with_counts(d, 7), ascii_only=True)) for d in details]
    hostile: list[tuple[str, bytes]] = []
    for d in details:
        hostile.append(("seed", _detail_body(_hostile_texts(_with_counts(d, 9), "\x00"))))
        nul_and_controls = _hostile_texts(_as_work(d, 1), "\x00\x01\x1b")
        hostile.append(("seed", _detail_body(nul_and_controls, ascii_only=True)))
    lone = [("seed", _lone(_as_work(_with_counts(d, 11), 2), b"\\ud83d")) for d in details]
    lone.append(("seed", _lone(_as_work(details[0], 3), b"\\udc00\\u0000")))
    emoji = [("seed", _detail_body(_emoji(_as_work(d, 4 + ascii_only)), ascii_only=ascii_only))
             for d in details for ascii_only in (False, True)]  # fmt: skip
    numbers = [("seed", _numbers(_as_work(d, 6))) for d in details]
    degraded = [("seed", _detail_body(_degraded(_with_counts(d, 13)))) for d in details]
    same_batch = [("seed", _detail_body(_with_counts(d, 15))) for d in details] + [
        ("seed", _detail_body(_degraded(d))) for d in details
    ]
    return [
        (T0, first),
        (T0 + HOUR, later),
        (T0 + 2 * HOUR, hostile),
        (T0 + 3 * HOUR, lone),
        (T0 + 4 * HOUR, emoji),
        (T0 + 5 * HOUR, numbers),
        (T0 + 6 * HOUR, degraded),
        (T0 + 7 * HOUR, same_batch),
        (T0 - HOUR, first),  # older again: facts only get newer, nothing new is written
        (T0 + 7 * HOUR, same_batch),  # the same payloads again: nothing is written
    ]


def _contract(style: str) -> Contract:
    return AmagiContract() if style == "amagi" else SeedContract()


def load_corpus(conn: Connection, *, as_received: bool = True) -> Iterator[str]:
    """Load every batch; yields a line with its outcomes and the LoadResult, then the tables
    (all but raw_payloads, whose rows are large: those are dumped at the end). `as_received`:
    raw payloads go as the body's text where the contract offers it (what `ingest` does), else
    as the decoded detail, encoded again (what the loader does for any other payload)."""
    for number, (at, bodies) in enumerate(corpus()):
        works = []
        outcomes: Counter[str] = Counter()
        for index, (style, body) in enumerate(bodies):
            result = _contract(style).classify(200, body, {})
            outcomes[result.outcome.value] += 1
            if result.outcome is Outcome.OK and result.detail is not None:
                try:
                    # Works of one batch a second apart: several payloads of one work in a
                    # batch keep distinct fetch times.
                    raw = result.payload if as_received else None
                    works.append(flatten(result.detail, at + timedelta(seconds=index), raw=raw))
                except NotAWork:
                    outcomes["not_a_work"] += 1
        loaded = load_works(conn, works)
        yield f"batch {number} {sorted(outcomes.items())} {loaded}"
        yield from dump(conn, without=("raw_payloads",))


def dump(conn: Connection, without: tuple[str, ...] = ()) -> Iterator[str]:
    """Every row of every table as PostgreSQL prints it (JSONB text output is canonical)."""
    drop = " - ".join(f"'{c}'" for c in NOT_CONTENT)
    for table, key in TABLES.items():
        if table in without:
            continue
        types = "".join(
            f" || ' {c}:' || coalesce(jsonb_typeof({c}), 'NULL')"
            for c in JSONB_COLUMNS.get(table, ())
        )
        rows = conn.execute(
            text(f"SELECT (to_jsonb(t) - {drop})::text{types} FROM {table} t ORDER BY {key}")
        )
        for (row,) in rows:
            yield f"{table} {row}"


def stored_values(conn: Connection, *, as_received: bool = True) -> list[str]:
    lines = list(load_corpus(conn, as_received=as_received))
    lines += dump(conn)
    counts: Counter[str] = Counter()
    after = -(2**63)
    while True:
        done, after = reprocess_batch(conn, after, 4, counts, stale_only=False)
        if not done:
            break
    lines.append(f"reprocess {sorted(counts.items())}")
    lines += dump(conn, without=("raw_payloads",))  # reprocess never writes them
    return lines


@pytest.mark.parametrize("as_received", [True, False], ids=["received-text", "re-encoded"])
def test_stored_values_match_the_golden_dump(db: Connection, as_received: bool) -> None:
    lines = stored_values(db, as_received=as_received)
    got = "\n".join(lines) + "\n"
    if os.environ.get("UPDATE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(got, encoding="utf-8")
    want = GOLDEN.read_text(encoding="utf-8").splitlines()
    for number, (have, expected) in enumerate(zip(lines, want, strict=False)):
        assert have == expected, f"line {number + 1} differs"
    assert len(lines) == len(want)


def test_the_corpus_exercises_every_cleaning_path(db: Connection) -> None:
    """The golden dump is only as good as its corpus: NUL, lone surrogates, astral emoji and
    the number spellings must reach the stored payloads."""
    body = "\n".join(stored_values(db))
    assert "\\ufffd" in body or "\ufffd" in body  # NUL, replaced
    assert "?签名?" in body  # lone surrogates, replaced
    assert "😀" in body
    assert "𝄞" in body
    assert "179769313486231570000000" in body
    assert "0.000000000125" in body
    assert "second \\\\u0000 is no NUL" in body


def test_json_text_stores_what_json_dumps_of_the_cleaned_value_stored(db: Connection) -> None:
    """The raw payload's JSON text (orjson, cleaned only when needed) becomes the same JSONB as
    the standard library's text of the cleaned value did: numbers of every spelling and scale,
    NUL in keys and values, lone surrogates, a literal backslash-u0000, astral characters."""
    rng = random.Random(14)
    floats = [rng.random() * 10.0 ** rng.randint(-30, 30) for _ in range(2000)]
    floats += [float(rng.randint(0, 10**18)) for _ in range(500)]
    floats += [1e15, 1e16, 1e22, 1e-5, 5e-324, 1.7976931348623157e308, -0.0, 0.1, 123456789.0]
    values: list[Any] = [
        {"floats": floats, "ints": [0, -(2**63), 2**64 - 1, 2**53 + 1]},
        {"k\x00ey": "v\x00al", "nested": [{"\x00": ["\x00\x00"]}]},
        {"lone": "a\ud83db", "key\udc00": ["\ud800"], "nul": "\x00"},
        {"not a NUL": "\\u0000", "emoji": "😀𝄞", "escaped pair": "\ud83d\ude00"},
    ]
    for value in values:
        ours, before = json_text(value), json.dumps(clean_json(value))
        same = db.execute(
            text("SELECT CAST(:a AS jsonb)::text = CAST(:b AS jsonb)::text"),
            {"a": ours, "b": before},
        ).scalar_one()
        assert same, value
