"""Load flattened works into PostgreSQL: the content of every table, merged so that facts only
ever get newer or better (`pipeline.db.merge`). Work *state* (gone, schedule, check times) is
not written here: see `pipeline.db.state`.

Rules every writer here follows:
- The caller owns the transaction: nothing in this module commits.
- Two writers of one row serialize instead of overwriting each other's merge, and cannot
  deadlock. Works (rarely shared) take transaction-scoped advisory locks, in key order, before
  they are read. Authors, tracks, collections and places (shared by many batches) are locked as
  late as possible: an unlocked look tells which rows the batch changes (a row it leaves alone
  is never locked: the merge only moves facts forward, so what does not change the row as read
  does not change a later state of it either); new rows are inserted first (works point to
  them; a row another writer inserts first is waited for); the existing rows the batch changes
  are locked (`FOR NO KEY UPDATE`, in key order), merged again and written last, so another
  writer of the same authors waits only for this short tail of the transaction.
- One small writer per table; a row is written only when the merge changed it, so loading the
  same payloads twice changes nothing (and locks nothing but its works).
- Every write is one set-based statement per table: `INSERT ... SELECT FROM
  json_to_recordset(:given) ... ON CONFLICT`, the rows as one JSON text typed by the table's
  columns (encoded by orjson in C, where arrays would be dumped by psycopg in Python), built
  once and prepared by the driver: the batch's size does not change the SQL text. Raw
  payloads go one row per parameter set (`pipeline.db.payloads`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from operator import itemgetter
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Connection,
    Row,
    Select,
    Table,
    any_,
    exists,
    func,
    select,
    true,
    tuple_,
)
from sqlalchemy.dialects.postgresql import Insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.sql.dml import ReturningInsert

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
from pipeline.db.params import (
    array_param,
    ids_param,
    insert_recordset,
    recordset,
    recordset_param,
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
_CHILDREN = ("text_extra", "images", "video_tag")  # children fields: see _CHILD_TABLES

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
    if w.hashtags is not None and w.mentions is not None:
        hashtags = [(h.name, h.position, h.start, h.end) for h in w.hashtags]
        mentions = [(m.position, m.uid, m.sec_uid, m.nickname, m.start, m.end) for m in w.mentions]
        values["text_extra"] = (_in_key_order(hashtags), _in_key_order(mentions))
    if w.images is not None:
        values["images"] = (_in_key_order([(i.position, i.uri, i.width, i.height, i.url)
                                           for i in w.images]),)  # fmt: skip
    if w.categories is not None:
        values["video_tag"] = (_in_key_order([(c.level, c.category_id) for c in w.categories]),)
    return values


# --- children: the value of a children field is what its child tables hold ---------------------


@dataclass(frozen=True, eq=False)  # eq=False: hashed by identity (one instance per table)
class _ChildTable:
    """A table of a work's children. A row is `columns` (all but aweme_id, in table order: the
    first one is the second key column) as a tuple."""

    table: Table
    columns: tuple[str, ...] = field(init=False)
    keyed_columns: tuple[str, ...] = field(init=False)  # ("aweme_id", *columns)

    def __post_init__(self) -> None:
        columns = tuple(c.name for c in self.table.columns if c.name != "aweme_id")
        object.__setattr__(self, "columns", columns)
        object.__setattr__(self, "keyed_columns", ("aweme_id", *columns))


# Per children field, its tables; its value is one tuple of rows (in key order) per table.
_CHILD_TABLES = {
    "text_extra": (_ChildTable(table(WorkHashtag)), _ChildTable(table(WorkMention))),
    "images": (_ChildTable(table(WorkImage)),),
    "video_tag": (_ChildTable(table(WorkCategory)),),
}
_ChildRow = tuple[Any, ...]


_first = itemgetter(0)


def _in_key_order(rows: list[_ChildRow]) -> tuple[_ChildRow, ...]:
    return tuple(sorted(rows, key=_first))


# --- locking and merging ----------------------------------------------------------------------

# Advisory lock classes: a lock id is the class in the top byte and the key's low 56 bits below
# (two keys that share a lock id merely wait for each other). Works only, now; 1-4 were the
# authors, music, collections and places, which are locked as rows instead (see load_works).
_LOCK_CLASSES = {"works": 5}
_LOW_56_BITS = (1 << 56) - 1


def _lock(conn: Connection, keys: Mapping[str, Iterable[int]]) -> None:
    """Serialize writers of the same keys, taking every lock in one global order (so writers
    cannot deadlock). ON CONFLICT alone would let two transactions that read the same row (or
    no row) each write their own merge, and the second would drop the first's facts. A lock
    on the key, not the row, also covers a work that has no row yet."""
    lock_ids = sorted(
        {(_LOCK_CLASSES[name] << 56) | (k & _LOW_56_BITS) for name, ks in keys.items() for k in ks}
    )
    if lock_ids:
        conn.execute(_LOCK_STATEMENT, {"lock_ids": lock_ids})


def _keys_array() -> Any:
    return ids_param("keys")


def _lock_statement() -> Select[Any]:
    x = func.unnest(array_param("lock_ids", BigInteger())).column_valued("x")
    ordered = select(x.label("x")).order_by(x).subquery()
    return select(func.count(func.pg_advisory_xact_lock(ordered.c.x)))


_LOCK_STATEMENT = _lock_statement()


@dataclass(frozen=True, eq=False)
class _Merged:
    """One merged table: where it lives, its key and how its fields merge."""

    table: Table
    key: str
    spec: MergeSpec
    unique: tuple[str, ...] = ()  # other unique columns: "key" columns to row locks

    @property
    def written_columns(self) -> tuple[str, ...]:
        return (*self.spec.columns, "field_seen_at", "first_seen_at", "last_seen_at")


@cache
def _stored_query(merged: _Merged, lock: bool) -> Select[Any]:
    t = merged.table
    wanted = [t.c[c] for c in (merged.key, *merged.spec.columns)]
    wanted += [t.c.first_seen_at, t.c.last_seen_at, t.c.field_seen_at]
    query = select(*wanted).where(t.c[merged.key] == any_(_keys_array()))
    # Rows are locked as they are returned, so in key order: two writers cannot deadlock. NO
    # KEY: a foreign-key check of another writer's new work (KEY SHARE) need not wait.
    if lock:  # key_share=True: FOR NO KEY UPDATE on PostgreSQL
        return query.order_by(t.c[merged.key]).with_for_update(key_share=True)
    return query


@cache
def _insert_new_statement(merged: _Merged) -> ReturningInsert[Any]:
    t, columns = merged.table, (merged.key, *merged.written_columns)
    stmt = insert_recordset(t, columns).on_conflict_do_nothing(index_elements=[t.c[merged.key]])
    return stmt.returning(t.c[merged.key])


def _insert_new(conn: Connection, merged: _Merged, rows: Mapping[int, MergedRow]) -> set[int]:
    """Insert these rows (merged from no row) where no row exists yet; returns the keys
    inserted. A row another writer is inserting is waited for, and then left to it."""
    if not rows:
        return set()
    given = [{merged.key: k, **merged.spec.columns_of(rows[k])} for k in sorted(rows)]
    return set(conn.execute(_insert_new_statement(merged), recordset_param(given)).scalars())


@cache
def _merged_upsert(merged: _Merged) -> Insert:
    t, columns = merged.table, merged.written_columns
    stmt = pg_insert(t).from_select([merged.key, *columns], recordset(t, (merged.key, *columns)))
    return stmt.on_conflict_do_update(
        index_elements=[t.c[merged.key]], set_={c: stmt.excluded[c] for c in columns}
    )


def _read_stored(
    conn: Connection, merged: _Merged, keys: Sequence[int], *, lock: bool = False
) -> dict[int, Row[Any]]:
    """The stored rows of these keys (absent keys: no row yet); `lock`: locked until commit."""
    if not keys:
        return {}
    rows = conn.execute(_stored_query(merged, lock), {"keys": list(keys)}).all()
    return {row[0]: row for row in rows}


def _merge(
    merged: _Merged,
    stored: Mapping[int, Row[Any]],
    candidates: Mapping[int, list[Candidate]],
    *,
    replace_ties: bool,
    children: Mapping[int, Mapping[str, Any]] | None = None,
) -> dict[int, MergedRow]:
    """Merge the candidates into the stored rows (nothing is written): every merged row by
    key; `written` tells which would change. `children`: stored children values read back."""
    spec = merged.spec
    result = {}
    for k in sorted(candidates):
        row = stored.get(k)
        known = children.get(k) if children else None
        before = None if row is None else spec.stored(row._mapping, known)
        result[k] = spec.merge(before, candidates[k], replace_ties=replace_ties)
    return result


def _write_merged(conn: Connection, merged: _Merged, rows: Mapping[int, MergedRow]) -> None:
    """Upsert the rows whose own columns change (a children value replaced at the same fetch
    time changes only the child rows: `_write_children`)."""
    spec = merged.spec
    changed = [
        {merged.key: k, **spec.columns_of(rows[k])}
        for k in sorted(rows)
        if spec.columns_changed(rows[k])
    ]
    if changed:
        conn.execute(_merged_upsert(merged), recordset_param(changed))


def _update_locked(
    conn: Connection, merged: _Merged, rows: Mapping[int, MergedRow], now: Mapping[int, Row[Any]]
) -> None:
    """Write the changed rows among `rows`, which this transaction has locked (`now`).

    An UPDATE that sets a unique column (authors.sec_uid) takes the strongest row lock, which
    waits for, and makes wait, every other writer's foreign-key check on the row (works and
    snapshots pointing to an author): two writers would deadlock. So a unique column is set
    only on the rows where it changes (Douyin never changes one: in practice, never)."""
    changed = [k for k in sorted(rows) if rows[k].written]
    missing = {k: rows[k] for k in changed if k not in now}  # no row to lock: cannot happen,
    _write_merged(conn, merged, missing)  # as every late key exists; kept as a safe fallback
    given = [{merged.key: k, **merged.spec.columns_of(rows[k])} for k in changed if k in now]
    if not given:
        return
    conn.execute(_update_statement(merged, merged.unique), recordset_param(given))
    moved = [g for g in given if any(g[c] != now[g[merged.key]]._mapping[c] for c in merged.unique)]
    if moved:
        conn.execute(_update_statement(merged, ()), recordset_param(moved))


@cache
def _update_statement(merged: _Merged, leave: tuple[str, ...]) -> Any:
    """UPDATE the table's written columns but `leave` from `_given` rows (FROM the rows)."""
    t = merged.table
    columns = [c for c in merged.written_columns if c not in leave]
    given = recordset(t, (merged.key, *columns)).subquery("given")
    return (
        t.update()
        .where(t.c[merged.key] == given.c[merged.key])
        .values({c: given.c[c] for c in columns})
    )


def _group(items: Iterable[tuple[int, Candidate]]) -> dict[int, list[Candidate]]:
    grouped: dict[int, list[Candidate]] = defaultdict(list)
    for key, candidate in items:
        grouped[key].append(candidate)
    return grouped


_AUTHORS = _Merged(table(Author), "uid", AUTHORS, unique=("sec_uid",))
_MUSIC = _Merged(table(Music), "music_id", MUSIC)
_COLLECTIONS = _Merged(table(Collection), "mix_id", COLLECTIONS)
_PLACES = _Merged(table(Place), "poi_id", PLACES)
_WORKS = _Merged(table(Work), "aweme_id", WORKS)
_DIMENSIONS = (_AUTHORS, _MUSIC, _COLLECTIONS, _PLACES)  # the order they are written in


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
    dimensions = {_AUTHORS: authors, _MUSIC: music, _COLLECTIONS: collections, _PLACES: places}
    ties = reprocess
    author_counts = _author_counts(works)

    # An unlocked look tells which dimension rows this batch changes. A row it leaves alone is
    # never locked: the merge only moves facts forward, so what does not change the row as
    # read does not change any later state of it either.
    looked = {dim: _read_stored(conn, dim, sorted(cands)) for dim, cands in dimensions.items()}
    first = {
        dim: _merge(dim, looked[dim], cands, replace_ties=ties) for dim, cands in dimensions.items()
    }
    late = {
        dim: {k for k, r in first[dim].items() if r.written and not r.inserted} for dim in first
    }
    # An author with no row has no snapshot (author_snapshots refers to authors): not looked up.
    # (If another writer adds the author meanwhile, the key goes late below anyway.)
    unseen = {k for k, r in first[_AUTHORS].items() if r.inserted}
    changed = _new_snapshots(conn, _AUTHOR_SNAPSHOTS, author_counts, new=unseen)
    late[_AUTHORS].update(r["key"] for r in changed)
    _lock(conn, {"works": work_candidates})

    # New dimension rows now (works point to them), as merged from no row. Where another
    # writer's row got there first, the key joins the existing rows below.
    new_authors: set[int] = set()
    for dim in _DIMENSIONS:
        new = {k: r for k, r in first[dim].items() if r.inserted}
        added = _insert_new(conn, dim, new)
        late[dim].update(set(new) - added)
        late[dim].difference_update(added)  # ours until commit: written, nothing to lock
        if dim is _AUTHORS:
            new_authors = added

    _write_masters(conn, works)
    stored_works = _read_stored(conn, _WORKS, sorted(work_candidates))
    # A re-flattened children value replaces a stored one of the same fetch time (a tie): the
    # stored children are read back so that only those that differ are written.
    children = _read_children(conn, _with_children(stored_works)) if ties else {}
    merged = _merge(_WORKS, stored_works, work_candidates, replace_ties=ties, children=children)
    _write_merged(conn, _WORKS, merged)
    _write_children(conn, merged)

    # A work new to the table has no snapshot yet (work_stats refers to works): not looked up.
    new_works = {k for k, row in merged.items() if row.inserted}
    snapshots = _append_snapshots(conn, _WORK_STATS, _work_stats(works), new=new_works)
    if not reprocess:  # reprocess reads the stored payloads: nothing new to keep
        raw_writer.store(conn, works)

    # Last, the existing rows the batch changes: locked (FOR NO KEY UPDATE, in key order) only
    # from here to commit, so another writer of the same authors waits for this short tail,
    # not for the whole batch. Merged again where another writer changed one since the look.
    for dim in _DIMENSIONS:
        keys = sorted(late[dim])
        now = _read_stored(conn, dim, keys, lock=True)
        moved = {k: dimensions[dim][k] for k in keys if now.get(k) != looked[dim].get(k)}
        again = _merge(dim, now, moved, replace_ties=ties)
        _update_locked(conn, dim, {k: again.get(k) or first[dim][k] for k in keys}, now)
    author_keys = new_authors | late[_AUTHORS]
    _append_snapshots(
        conn,
        _AUTHOR_SNAPSHOTS,
        [r for r in author_counts if r["key"] in author_keys],
        new=new_authors,  # inserted by this transaction: no snapshot yet
    )
    inserted = sum(1 for row in merged.values() if row.inserted)
    updated = sum(1 for row in merged.values() if row.written and not row.inserted)
    return LoadResult(inserted, updated, snapshots)


def _plain(row: Any, spec: MergeSpec) -> Mapping[str, Any]:
    return {c: getattr(row, c) for c in spec.columns}


def _write_masters(conn: Connection, works: Sequence[FlatWork]) -> None:
    """Hashtag and category names that children rows point to. Insert-only facts: a tag keeps
    the first id it was seen with; `first_seen_at` is the oldest sighting.

    Only rows the batch changes are sent: ON CONFLICT DO UPDATE locks every row it meets until
    commit, even one its WHERE leaves alone, and popular tags are in every batch. The upserts
    decide on the rows as they are when they run, so they need no advisory lock."""
    tags: dict[str, tuple[int | None, datetime]] = {}
    for w in works:
        for h in w.hashtags or ():
            known = tags.get(h.name)
            hashtag_id = h.hashtag_id if known is None or known[0] is None else known[0]
            first = w.work.fetched_at if known is None else min(known[1], w.work.fetched_at)
            tags[h.name] = (hashtag_id, first)
    if tags:
        names = sorted(tags)
        stored = {
            row.name: (row.hashtag_id, row.first_seen_at)
            for row in conn.execute(_STORED_TAGS, {"names": names}).all()
        }
        new = [n for n in names if n not in stored or _better_tag(tags[n], stored[n])]
        if new:
            conn.execute(
                _HASHTAG_UPSERT,
                recordset_param(
                    [
                        {"name": n, "hashtag_id": tags[n][0], "first_seen_at": tags[n][1]}
                        for n in new
                    ]
                ),
            )
    categories = {c.category_id: c for w in works for c in w.categories or ()}
    if categories:
        ids = sorted(categories)
        names_of = {
            r.category_id: r.name for r in conn.execute(_STORED_CATEGORIES, {"keys": ids}).all()
        }
        new_ids = [
            k
            for k in ids
            if k not in names_of or (categories[k].name is not None
                                     and categories[k].name != names_of[k])
        ]  # fmt: skip
        if new_ids:
            conn.execute(
                _CATEGORY_UPSERT,
                recordset_param(
                    [
                        {"category_id": k, "name": categories[k].name, "level": categories[k].level}
                        for k in new_ids
                    ]
                ),
            )


def _better_tag(new: tuple[int | None, datetime], stored: tuple[int | None, datetime]) -> bool:
    """What the hashtag upsert's WHERE says, in Python: the row would change."""
    return (stored[0] is None and new[0] is not None) or new[1] < stored[1]


def _hashtag_upsert() -> Insert:
    stmt = insert_recordset(table(Hashtag), ("name", "hashtag_id", "first_seen_at"))
    return stmt.on_conflict_do_update(
        index_elements=[Hashtag.name],
        set_={
            "hashtag_id": func.coalesce(Hashtag.hashtag_id, stmt.excluded.hashtag_id),
            "first_seen_at": func.least(Hashtag.first_seen_at, stmt.excluded.first_seen_at),
        },
        where=(Hashtag.hashtag_id.is_(None) & stmt.excluded.hashtag_id.is_not(None))
        | (stmt.excluded.first_seen_at < Hashtag.first_seen_at),
    )


def _category_upsert() -> Insert:
    stmt = insert_recordset(table(Category), ("category_id", "name", "level"))
    return stmt.on_conflict_do_update(
        index_elements=[Category.category_id],
        set_={"name": func.coalesce(stmt.excluded.name, Category.name)},
        where=stmt.excluded.name.is_not(None) & stmt.excluded.name.is_distinct_from(Category.name),
    )


_HASHTAG_UPSERT = _hashtag_upsert()
_CATEGORY_UPSERT = _category_upsert()
_STORED_TAGS = select(Hashtag.name, Hashtag.hashtag_id, Hashtag.first_seen_at).where(
    Hashtag.name == any_(array_param("names", table(Hashtag).c.name.type))
)
_STORED_CATEGORIES = select(Category.category_id, Category.name).where(
    Category.category_id == any_(_keys_array())
)


def _with_children(stored: Mapping[int, Row[Any]]) -> list[int]:
    """The stored works that hold a value of some children field."""
    return sorted(
        k
        for k, row in stored.items()
        if (seen := row._mapping["field_seen_at"]) and any(name in seen for name in _CHILDREN)
    )


@cache
def _children_query(child: _ChildTable) -> Select[Any]:
    t = child.table
    return select(t.c.aweme_id, *(t.c[c] for c in child.columns)).where(
        t.c.aweme_id == any_(_keys_array())
    )


def _read_children(conn: Connection, keys: Sequence[int]) -> dict[int, dict[str, Any]]:
    """The stored value of every children field of these works, as `_work_values` gives it."""
    if not keys:
        return {}
    found: dict[_ChildTable, dict[int, list[_ChildRow]]] = {}
    for tables in _CHILD_TABLES.values():
        for child in tables:
            rows: dict[int, list[_ChildRow]] = defaultdict(list)
            for row in conn.execute(_children_query(child), {"keys": list(keys)}).all():
                rows[row[0]].append(tuple(row[1:]))
            found[child] = rows
    return {
        k: {
            name: tuple(_in_key_order(found[child].get(k, [])) for child in tables)
            for name, tables in _CHILD_TABLES.items()
        }
        for k in keys
    }


def _write_children(conn: Connection, merged: Mapping[int, MergedRow]) -> None:
    """Sync each child table of the works whose children field took a new value."""
    pending: dict[_ChildTable, tuple[list[int], list[dict[str, Any]]]] = {}
    for aweme_id in sorted(merged):
        row = merged[aweme_id]
        for name, tables in _CHILD_TABLES.items():
            if name not in row.changed:
                continue
            for child, rows in zip(tables, row.values[name], strict=True):
                ids, all_rows = pending.setdefault(child, ([], []))
                if not row.inserted:  # a work new to the table has no children to replace
                    ids.append(aweme_id)
                columns = child.keyed_columns
                all_rows.extend(dict(zip(columns, (aweme_id, *r), strict=True)) for r in rows)
    for child in sorted(pending, key=lambda c: c.table.name):
        ids, rows = pending[child]
        _sync_children(conn, child.table, ids, rows, child.columns[0])


def _sync_children(
    conn: Connection,
    child: Table,
    aweme_ids: Sequence[int],
    rows: Sequence[Mapping[str, Any]],
    second_key: str,
) -> None:
    """Make the children of `aweme_ids` exactly the `rows` they own, touching only rows that
    differ; `rows` of other works are inserted."""
    rows = sorted(rows, key=lambda r: (r["aweme_id"], r[second_key]))
    delete, upsert = _children_statements(child, second_key)
    if aweme_ids:
        replaced = set(aweme_ids)
        kept = [r for r in rows if r["aweme_id"] in replaced]
        conn.execute(
            delete,
            {
                "keys": list(aweme_ids),
                "keep_ids": [r["aweme_id"] for r in kept],
                "keep_keys": [r[second_key] for r in kept],
            },
        )
    if rows:
        conn.execute(upsert, recordset_param(rows))


@cache
def _children_statements(child: Table, second_key: str) -> tuple[Any, Insert]:
    """(delete the children of :keys not in the kept pairs, upsert the given rows)."""
    keep = (
        func.unnest(
            array_param("keep_ids", BigInteger()),
            array_param("keep_keys", child.c[second_key].type),
        )
        .table_valued("aweme_id", "k")
        .render_derived(name="keep")
    )
    kept = exists().where(keep.c.aweme_id == child.c.aweme_id, keep.c.k == child.c[second_key])
    delete = child.delete().where(child.c.aweme_id == any_(_keys_array()), ~kept)
    other = [c.name for c in child.columns if c.name not in ("aweme_id", second_key)]
    stmt = insert_recordset(child, [c.name for c in child.columns])
    upsert = stmt.on_conflict_do_update(
        index_elements=[child.c.aweme_id, child.c[second_key]],
        set_={c: stmt.excluded[c] for c in other},
        where=tuple_(*(child.c[c] for c in other)).is_distinct_from(
            tuple_(*(stmt.excluded[c] for c in other))
        ),
    )
    return delete, upsert


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


@dataclass(frozen=True, eq=False)  # hashed by identity, as _Merged
class _Snapshots:
    table: Table
    key: str

    @property
    def counts(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.table.columns if c.name not in (self.key, "captured_at"))


_WORK_STATS = _Snapshots(table(WorkStat), "aweme_id")
_AUTHOR_SNAPSHOTS = _Snapshots(table(AuthorSnapshot), "uid")


def _new_snapshots(
    conn: Connection,
    target: _Snapshots,
    rows: Sequence[Mapping[str, Any]],
    new: Iterable[int] = (),
) -> list[dict[str, Any]]:
    """The snapshots to append: per row newer than the latest stored one in which some known
    count differs from it. A count the payload does not carry (NULL) is no change: it neither
    adds a row nor reads as a drop. `new`: keys known to have no stored snapshot."""
    if not rows:
        return []
    key, counts = target.key, target.counts
    latest = _latest_snapshots(conn, target, sorted({r["key"] for r in rows} - set(new)))
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
        added.append(snapshot | {"key": row["key"]})
        latest[row["key"]] = snapshot
    return added


@cache
def _snapshot_insert(target: _Snapshots) -> Insert:
    columns = (target.key, "captured_at", *target.counts)
    return insert_recordset(target.table, columns).on_conflict_do_nothing()


def _append_snapshots(
    conn: Connection,
    target: _Snapshots,
    rows: Sequence[Mapping[str, Any]],
    new: Iterable[int] = (),
) -> int:
    """Append the new snapshots of `rows` (`_new_snapshots`); returns how many were added."""
    added = _new_snapshots(conn, target, rows, new)
    if added:
        conn.execute(_snapshot_insert(target), recordset_param(added))
    return len(added)


@cache
def _latest_query(target: _Snapshots) -> Select[Any]:
    """The newest snapshot of each key: one backward step on the primary key per key."""
    t = target.table
    wanted = func.unnest(_keys_array()).table_valued("k").render_derived()
    newest = (
        select(t)
        .where(t.c[target.key] == wanted.c.k)
        .order_by(t.c.captured_at.desc())
        .limit(1)
        .lateral()
    )
    return select(newest).select_from(wanted.join(newest, true()))


def _latest_snapshots(
    conn: Connection, target: _Snapshots, keys: Sequence[int]
) -> dict[int, Mapping[Any, Any]]:
    if not keys:
        return {}
    return {
        row[target.key]: row
        for row in conn.execute(_latest_query(target), {"keys": list(keys)}).mappings().all()
    }
