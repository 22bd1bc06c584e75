"""Load flattened works into PostgreSQL: the content of every table, merged so that facts only
ever get newer or better (`pipeline.db.merge`). Work *state* (gone, schedule, check times) is
not written here: see `pipeline.db.state`.

Rules every writer here follows:
- The caller owns the transaction: nothing in this module commits.
- Keys are locked (transaction-scoped advisory locks, in one global order) before they are
  read, so two writers of the same author or work serialize instead of overwriting each other's
  merge, and cannot deadlock.
- One small writer per table; a row is written only when the merge changed it, so loading the
  same payloads twice changes nothing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import BigInteger, Connection, Table, bindparam, func, select, true, tuple_
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.dialects.postgresql import insert as pg_insert

from pipeline.db import payloads as raw_writer
from pipeline.db.merge import Candidate, Field, MergedRow, MergeSpec, scalar_fields
from pipeline.db.models import (
    Author,
    AuthorSnapshot,
    Base,
    Category,
    Collection,
    Hashtag,
    Music,
    Place,
    Work,
    WorkCategory,
    WorkHashtag,
    WorkImage,
    WorkMention,
    WorkStat,
)
from pipeline.rows import FlatWork


def table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


@dataclass(frozen=True, slots=True)
class LoadResult:
    works_inserted: int = 0
    works_updated: int = 0
    snapshots_added: int = 0

    def __add__(self, other: LoadResult) -> LoadResult:
        return LoadResult(
            self.works_inserted + other.works_inserted,
            self.works_updated + other.works_updated,
            self.snapshots_added + other.snapshots_added,
        )


# --- what each merged table holds -------------------------------------------------------------


def _created_rank(value: tuple[datetime, bool]) -> int:
    return 0 if value[1] else 1  # a real create_time beats the estimate from the id


_AUTHOR_COLUMNS = (
    "sec_uid", "unique_id", "short_id", "nickname", "signature", "avatar_uri",
    "verification_type", "custom_verify", "enterprise_verify_reason", "follower_count",
    "following_count", "total_favorited", "aweme_count", "favoriting_count",
)  # fmt: skip
_MUSIC_COLUMNS = (
    "title", "author_name", "album", "duration_s", "is_original", "is_pgc", "owner_uid",
    "owner_sec_uid", "owner_nickname", "owner_handle", "cover_uri",
)  # fmt: skip
_WORK_COLUMNS = (
    "author_uid", "music_id", "kind", "aweme_type", "media_type", "description", "duration_ms",
    "video_width", "video_height", "video_ratio", "cover_uri", "region", "share_url", "group_id",
    "is_ads", "is_top", "ip_label", "collection_id", "collection_episode", "poi_id",
    "is_delete", "is_prohibited", "is_private", "in_reviewing", "allow_share",
)  # fmt: skip
_CHILDREN = ("text_extra", "images", "video_tag")

AUTHORS = MergeSpec(scalar_fields(_AUTHOR_COLUMNS))
MUSIC = MergeSpec(scalar_fields(_MUSIC_COLUMNS))
COLLECTIONS = MergeSpec(scalar_fields(("name", "description", "episodes")))
PLACES = MergeSpec(scalar_fields(("name", "city", "province", "country", "latitude", "longitude")))
WORKS = MergeSpec(
    (
        *scalar_fields(_WORK_COLUMNS),
        Field("created", ("created_at", "created_at_estimated"), _created_rank),
        *(Field(name, ()) for name in _CHILDREN),
    )
)


def _author_values(w: FlatWork) -> Mapping[str, Any]:
    assert w.author is not None
    return {c: getattr(w.author, c) for c in _AUTHOR_COLUMNS}


def _music_values(w: FlatWork) -> Mapping[str, Any]:
    assert w.music is not None
    return {c: getattr(w.music, c) for c in _MUSIC_COLUMNS}


def _work_values(w: FlatWork) -> Mapping[str, Any]:
    row = w.work
    values: dict[str, Any] = {c: getattr(row, c) for c in _WORK_COLUMNS}
    if row.created_at is not None:
        values["created"] = (row.created_at, False)
    elif row.created_at_from_id is not None:
        values["created"] = (row.created_at_from_id, True)
    hashtags_known = w.hashtags is not None and w.mentions is not None
    values["text_extra"] = (w.hashtags, w.mentions) if hashtags_known else None
    values["images"] = w.images
    values["video_tag"] = w.categories
    return values


# --- locking and merging ----------------------------------------------------------------------

# Advisory lock classes, one per merged table: a lock id is the class in the top byte and the
# key's low 56 bits below (two keys that share a lock id merely wait for each other).
_LOCK_CLASSES = {"authors": 1, "music": 2, "collections": 3, "places": 4, "works": 5}
_LOW_56_BITS = (1 << 56) - 1


def _lock(conn: Connection, keys: Mapping[str, Iterable[int]]) -> None:
    """Serialize writers of the same keys, taking every lock in one global order (so writers
    cannot deadlock). ON CONFLICT alone would let two transactions that read the same row (or
    no row) each write their own merge, and the second would drop the first's facts; it also
    only arbitrates the primary key (authors.sec_uid is unique too)."""
    lock_ids = sorted(
        {(_LOCK_CLASSES[name] << 56) | (k & _LOW_56_BITS) for name, ks in keys.items() for k in ks}
    )
    if not lock_ids:
        return
    x = func.unnest(bindparam("lock_ids", lock_ids, type_=ARRAY(BigInteger))).column_valued("x")
    ordered = select(x.label("x")).order_by(x).subquery()
    conn.execute(select(func.count(func.pg_advisory_xact_lock(ordered.c.x))))


def _merge_table(
    conn: Connection,
    target: Table,
    key: str,
    spec: MergeSpec,
    candidates: Mapping[int, list[Candidate]],
    *,
    replace_ties: bool,
) -> dict[int, MergedRow]:
    """Read the stored rows of these keys, merge the candidates in, write what changed.
    Returns every merged row (written or not) by key."""
    if not candidates:
        return {}
    keys = sorted(candidates)
    wanted = [target.c[c] for c in (key, *spec.columns)]
    wanted += [target.c.first_seen_at, target.c.last_seen_at, target.c.field_seen_at]
    stored = {
        row[key]: spec.stored(row)
        for row in conn.execute(select(*wanted).where(target.c[key].in_(keys))).mappings()
    }
    merged = {k: spec.merge(stored.get(k), candidates[k], replace_ties=replace_ties) for k in keys}
    changed = [{key: k, **spec.columns_of(merged[k])} for k in keys if merged[k].written]
    if changed:
        stmt = pg_insert(target)
        columns = [c for c in changed[0] if c != key]
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[target.c[key]], set_={c: stmt.excluded[c] for c in columns}
            ),
            changed,
        )
    return merged


def _group(items: Iterable[tuple[int, Candidate]]) -> dict[int, list[Candidate]]:
    grouped: dict[int, list[Candidate]] = defaultdict(list)
    for key, candidate in items:
        grouped[key].append(candidate)
    return grouped


# --- the load ---------------------------------------------------------------------------------


def load_works(
    conn: Connection, batch: Iterable[FlatWork], *, reprocess: bool = False
) -> LoadResult:
    """Merge a batch of flattened works (and everything they reference) into the tables in the
    caller's transaction. The result depends only on the set of payloads ever loaded, not on
    their order or on batching; loading the same batch twice changes no row.

    `reprocess` lets a re-flattened payload win over what the same payload gave before (ties
    in fetch time), for `ingest reprocess` after the flattener improved."""
    works = list(batch)
    if not works:
        return LoadResult()

    def at(w: FlatWork) -> datetime:
        return w.work.fetched_at

    authors = _group((w.author.uid, Candidate(at(w), _author_values(w))) for w in works if w.author)
    music = _group((w.music.music_id, Candidate(at(w), _music_values(w))) for w in works if w.music)
    collections = _group(
        (w.collection.mix_id, Candidate(at(w), _plain(w.collection, COLLECTIONS)))
        for w in works
        if w.collection
    )
    places = _group(
        (w.place.poi_id, Candidate(at(w), _plain(w.place, PLACES))) for w in works if w.place
    )
    work_candidates = _group((w.work.aweme_id, Candidate(at(w), _work_values(w))) for w in works)
    _lock(
        conn,
        {
            "authors": authors,
            "music": music,
            "collections": collections,
            "places": places,
            "works": work_candidates,
        },
    )
    ties = {"replace_ties": reprocess}
    _merge_table(conn, table(Author), "uid", AUTHORS, authors, **ties)
    _merge_table(conn, table(Music), "music_id", MUSIC, music, **ties)
    _merge_table(conn, table(Collection), "mix_id", COLLECTIONS, collections, **ties)
    _merge_table(conn, table(Place), "poi_id", PLACES, places, **ties)
    _write_masters(conn, works)
    merged = _merge_table(conn, table(Work), "aweme_id", WORKS, work_candidates, **ties)
    _write_children(conn, merged)

    snapshots = _append_snapshots(conn, table(WorkStat), "aweme_id", _work_stats(works))
    _append_snapshots(conn, table(AuthorSnapshot), "uid", _author_counts(works))
    if not reprocess:  # reprocess reads the stored payloads: nothing new to keep
        raw_writer.store(conn, works)
    inserted = sum(1 for row in merged.values() if row.inserted)
    updated = sum(1 for row in merged.values() if row.written and not row.inserted)
    return LoadResult(inserted, updated, snapshots)


def _plain(row: Any, spec: MergeSpec) -> Mapping[str, Any]:
    return {c: getattr(row, c) for c in spec.columns}


def _write_masters(conn: Connection, works: Sequence[FlatWork]) -> None:
    """Hashtag and category names that children rows point to. Insert-only facts: a tag keeps
    the first id it was seen with; `first_seen_at` is the oldest sighting."""
    tags: dict[str, tuple[int | None, datetime]] = {}
    for w in works:
        for h in w.hashtags or ():
            known = tags.get(h.name)
            hashtag_id = h.hashtag_id if known is None or known[0] is None else known[0]
            first = w.work.fetched_at if known is None else min(known[1], w.work.fetched_at)
            tags[h.name] = (hashtag_id, first)
    if tags:
        stmt = pg_insert(table(Hashtag))
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[Hashtag.name],
                set_={
                    "hashtag_id": func.coalesce(Hashtag.hashtag_id, stmt.excluded.hashtag_id),
                    "first_seen_at": func.least(Hashtag.first_seen_at, stmt.excluded.first_seen_at),
                },
                where=(Hashtag.hashtag_id.is_(None) & stmt.excluded.hashtag_id.is_not(None))
                | (stmt.excluded.first_seen_at < Hashtag.first_seen_at),
            ),
            [
                {"name": name, "hashtag_id": tags[name][0], "first_seen_at": tags[name][1]}
                for name in sorted(tags)
            ],
        )
    categories = {c.category_id: c for w in works for c in w.categories or ()}
    if categories:
        stmt = pg_insert(table(Category))
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[Category.category_id],
                set_={"name": func.coalesce(stmt.excluded.name, Category.name)},
                where=stmt.excluded.name.is_not(None)
                & stmt.excluded.name.is_distinct_from(Category.name),
            ),
            [
                {"category_id": c.category_id, "name": c.name, "level": c.level}
                for c in (categories[k] for k in sorted(categories))
            ],
        )


_ChildRows = list[Mapping[str, Any]]


def _child_rows(field: str, value: Any) -> dict[Table, _ChildRows]:
    if field == "text_extra":
        hashtags, mentions = value
        return {
            table(WorkHashtag): [
                {
                    "aweme_id": h.aweme_id,
                    "hashtag_name": h.name,
                    "position": h.position,
                    "start_offset": h.start,
                    "end_offset": h.end,
                }
                for h in hashtags
            ],
            table(WorkMention): [
                {
                    "aweme_id": m.aweme_id,
                    "position": m.position,
                    "uid": m.uid,
                    "sec_uid": m.sec_uid,
                    "nickname": m.nickname,
                    "start_offset": m.start,
                    "end_offset": m.end,
                }
                for m in mentions
            ],
        }
    if field == "images":
        return {
            table(WorkImage): [
                {
                    "aweme_id": i.aweme_id,
                    "position": i.position,
                    "uri": i.uri,
                    "width": i.width,
                    "height": i.height,
                    "url": i.url,
                }
                for i in value
            ]
        }
    return {
        table(WorkCategory): [
            {"aweme_id": c.aweme_id, "level": c.level, "category_id": c.category_id} for c in value
        ]
    }


# Second key column of each child table (the first is aweme_id).
_CHILD_KEYS = {
    "work_hashtags": "hashtag_name",
    "work_mentions": "position",
    "work_images": "position",
    "work_categories": "level",
}


def _write_children(conn: Connection, merged: Mapping[int, MergedRow]) -> None:
    """Sync each child table of the works whose children field took a new value."""
    pending: dict[Table, tuple[list[int], _ChildRows]] = {}
    for aweme_id in sorted(merged):
        row = merged[aweme_id]
        for name in _CHILDREN:
            if name not in row.changed:
                continue
            for child, rows in _child_rows(name, row.values[name]).items():
                ids, all_rows = pending.setdefault(child, ([], []))
                ids.append(aweme_id)
                all_rows.extend(rows)
    for child in sorted(pending, key=lambda t: t.name):
        ids, rows = pending[child]
        _sync_children(conn, child, ids, rows, _CHILD_KEYS[child.name])


def _sync_children(
    conn: Connection,
    child: Table,
    aweme_ids: Sequence[int],
    rows: Sequence[Mapping[str, Any]],
    second_key: str,
) -> None:
    """Make the children of `aweme_ids` exactly `rows`, touching only rows that differ."""
    keep = tuple_(child.c.aweme_id, child.c[second_key]).in_(
        [(r["aweme_id"], r[second_key]) for r in rows]
    )
    stale = child.delete().where(child.c.aweme_id.in_(aweme_ids))
    conn.execute(stale.where(~keep) if rows else stale)
    if not rows:
        return
    stmt = pg_insert(child)
    other = [c.name for c in child.columns if c.name not in ("aweme_id", second_key)]
    conn.execute(
        stmt.on_conflict_do_update(
            index_elements=[child.c.aweme_id, child.c[second_key]],
            set_={c: stmt.excluded[c] for c in other},
            where=tuple_(*(child.c[c] for c in other)).is_distinct_from(
                tuple_(*(stmt.excluded[c] for c in other))
            ),
        ),
        sorted(rows, key=lambda r: (r["aweme_id"], r[second_key])),
    )


# --- change-only snapshots --------------------------------------------------------------------

_WORK_COUNTS = (
    "digg_count", "comment_count", "share_count", "collect_count", "play_count", "admire_count",
)  # fmt: skip
_AUTHOR_COUNTS = (
    "follower_count", "following_count", "total_favorited", "aweme_count", "favoriting_count",
)  # fmt: skip


def _work_stats(works: Sequence[FlatWork]) -> list[dict[str, Any]]:
    return [
        {
            "key": s.aweme_id,
            "captured_at": s.captured_at,
            **{c: getattr(s, c) for c in _WORK_COUNTS},
        }
        for s in (w.stats for w in works)
        if s is not None
    ]


def _author_counts(works: Sequence[FlatWork]) -> list[dict[str, Any]]:
    rows = []
    for w in works:
        a = w.author
        if a is None:
            continue
        counts = {c: getattr(a, c) for c in _AUTHOR_COUNTS}
        if any(v is not None for v in counts.values()):
            rows.append({"key": a.uid, "captured_at": a.seen_at, **counts})
    return rows


def _append_snapshots(
    conn: Connection, target: Table, key: str, rows: Sequence[Mapping[str, Any]]
) -> int:
    """Append a snapshot per row newer than the latest stored one in which some known count
    differs from it. A count the payload does not carry (NULL) is no change: it neither adds a
    row nor reads as a drop. Returns how many rows were added."""
    if not rows:
        return 0
    counts = [c.name for c in target.columns if c.name not in (key, "captured_at")]
    latest = _latest_snapshots(conn, target, key, sorted({r["key"] for r in rows}))
    added: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda r: (r["key"], r["captured_at"])):
        before = latest.get(row["key"])
        if before is not None and (
            before["captured_at"] >= row["captured_at"]  # only the future is appended
            or all(row[c] is None or row[c] == before[c] for c in counts)
        ):
            continue
        snapshot = {key: row["key"], "captured_at": row["captured_at"]}
        snapshot.update({c: row[c] for c in counts})
        added.append(snapshot)
        latest[row["key"]] = snapshot
    if added:
        conn.execute(pg_insert(target).on_conflict_do_nothing(), added)
    return len(added)


def _latest_snapshots(
    conn: Connection, target: Table, key: str, keys: Sequence[int]
) -> dict[int, Mapping[Any, Any]]:
    """The newest snapshot of each key: one backward step on the primary key per key."""
    wanted = (
        func.unnest(bindparam("snapshot_keys", list(keys), type_=ARRAY(BigInteger)))
        .table_valued("k")
        .render_derived()
    )
    newest = (
        select(target)
        .where(target.c[key] == wanted.c.k)
        .order_by(target.c.captured_at.desc())
        .limit(1)
        .lateral()
    )
    stmt = select(newest).select_from(wanted.join(newest, true()))
    return {row[key]: row for row in conn.execute(stmt).mappings()}
