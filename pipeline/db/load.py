"""Load flattened works into PostgreSQL with set-based upserts.

Rules every statement here follows:
- The caller owns the transaction: nothing in this module commits.
- Rows are de-duplicated and sorted by key, and tables are written in one fixed order (authors,
  music, hashtags, works, children, stats, raw payloads), so concurrent writers take row locks
  in the same order and cannot deadlock.
- An upsert only writes when the incoming row is at least as new as the stored one *and*
  differs from it (`IS DISTINCT FROM`), so loading the same payload twice changes nothing and
  an older payload never overwrites a newer one.
- Children (hashtags, mentions, images) are synced only for works whose row was inserted or
  updated, and only the rows that differ are touched.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Table, and_, literal_column, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert

from pipeline.db.models import (
    Author,
    Base,
    Hashtag,
    Music,
    RawPayload,
    Work,
    WorkHashtag,
    WorkImage,
    WorkMention,
)
from pipeline.rows import AuthorRow, FlatWork, HashtagRow, MentionRow
from pipeline.schedule import next_check_at

T = TypeVar("T")
K = TypeVar("K")

_STAT_COLUMNS = (
    "digg_count",
    "comment_count",
    "share_count",
    "collect_count",
    "play_count",
    "admire_count",
)


def _table(model: type[Base]) -> Table:
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


def _newest_by_key(
    items: Iterable[T], key: Callable[[T], K], when: Callable[[T], datetime]
) -> list[T]:
    """One item per key (the newest), sorted by key: the lock order for every writer."""
    best: dict[K, T] = {}
    for item in items:
        k = key(item)
        if k not in best or when(item) >= when(best[k]):
            best[k] = item
    return [best[k] for k in sorted(best)]  # type: ignore[type-var]


def _strip_nul(value: Any) -> Any:
    """PostgreSQL text cannot hold U+0000 or lone UTF-16 surrogates (JSON escapes like
    "\\ud83d" decode to them): drop the first, replace the second with "?". Everything else is
    kept exactly."""
    if isinstance(value, str):
        if "\x00" in value:
            value = value.replace("\x00", "")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            value = value.encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, Mapping):
        return {_strip_nul(k): _strip_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_nul(v) for v in value]
    return value


def _upsert_newest(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    key: Sequence[str],
    newest_column: str,
    keep: Sequence[str] = ("first_seen_at",),
) -> list[Any]:
    """INSERT … ON CONFLICT DO UPDATE … WHERE newer AND IS DISTINCT FROM; returns written rows."""
    if not rows:
        return []
    stmt = pg_insert(table)
    updated = [c.name for c in table.columns if c.name not in key and c.name not in keep]
    target_cols = tuple_(*(table.c[c] for c in updated))
    incoming_cols = tuple_(*(stmt.excluded[c] for c in updated))
    upsert = stmt.on_conflict_do_update(
        index_elements=[table.c[k] for k in key],
        set_={c: stmt.excluded[c] for c in updated},
        where=and_(
            stmt.excluded[newest_column] >= table.c[newest_column],
            target_cols.is_distinct_from(incoming_cols),
        ),
    ).returning(*(table.c[k] for k in key), literal_column("(xmax = 0)").label("inserted"))
    return list(conn.execute(upsert, list(rows)))


def _sync_children(
    conn: Connection,
    table: Table,
    aweme_ids: Sequence[int],
    rows: Sequence[Mapping[str, Any]],
    second_key: str,
    key_type: str,
) -> None:
    """Make the children of `aweme_ids` exactly `rows`, touching only rows that differ."""
    keys = [(r["aweme_id"], r[second_key]) for r in rows]
    conn.execute(
        text(
            f"DELETE FROM {table.name} t WHERE t.aweme_id = ANY(CAST(:ids AS bigint[])) "
            f"AND (t.aweme_id, t.{second_key}) NOT IN ("
            f"SELECT * FROM unnest(CAST(:k1 AS bigint[]), CAST(:k2 AS {key_type}[])))"
        ),
        {"ids": list(aweme_ids), "k1": [k[0] for k in keys], "k2": [k[1] for k in keys]},
    )
    if not rows:
        return
    stmt = pg_insert(table)
    other = [c.name for c in table.columns if c.name not in ("aweme_id", second_key)]
    stmt = stmt.on_conflict_do_update(
        index_elements=[table.c.aweme_id, table.c[second_key]],
        set_={c: stmt.excluded[c] for c in other},
        where=tuple_(*(table.c[c] for c in other)).is_distinct_from(
            tuple_(*(stmt.excluded[c] for c in other))
        ),
    )
    conn.execute(stmt, list(rows))


_LOCK_AUTHORS = text(
    "SELECT count(pg_advisory_xact_lock(1095, h)) FROM ("
    "  SELECT DISTINCT hashtext(CAST(k AS text)) AS h"
    "  FROM unnest(CAST(:uids AS bigint[])) AS k ORDER BY h"
    ") sorted"
)


def _lock_new_author_keys(conn: Connection, uids: Sequence[int]) -> None:
    """Serialize writers that insert the same author. ON CONFLICT (uid) only arbitrates the
    primary key: two transactions inserting the same new author at once would otherwise collide
    on the UNIQUE sec_uid index and fail. Transaction-scoped advisory locks, taken in key order,
    make the second writer wait and then take the update path."""
    if uids:
        conn.execute(_LOCK_AUTHORS, {"uids": list(uids)})


_INSERT_CHANGED_STATS = text(
    f"""
    INSERT INTO work_stats (aweme_id, captured_at, {", ".join(_STAT_COLUMNS)})
    SELECT v.* FROM unnest(
        CAST(:aweme_id AS bigint[]), CAST(:captured_at AS timestamptz[]),
        {", ".join(f"CAST(:{c} AS bigint[])" for c in _STAT_COLUMNS)}
    ) AS v(aweme_id, captured_at, {", ".join(_STAT_COLUMNS)})
    WHERE NOT EXISTS (
        SELECT 1 FROM (
            SELECT * FROM work_stats s WHERE s.aweme_id = v.aweme_id
            ORDER BY s.captured_at DESC LIMIT 1
        ) latest
        WHERE latest.captured_at >= v.captured_at
           OR ({", ".join(f"latest.{c}" for c in _STAT_COLUMNS)})
              IS NOT DISTINCT FROM ({", ".join(f"v.{c}" for c in _STAT_COLUMNS)})
    )
    ON CONFLICT DO NOTHING
    RETURNING aweme_id
    """
)


def load_works(
    conn: Connection, batch: Iterable[FlatWork], *, resync_children: bool = False
) -> LoadResult:
    """Upsert a batch of flattened works (and everything they reference) in the caller's
    transaction. Idempotent: loading the same batch twice changes no row.

    `resync_children` also syncs hashtags, mentions and images of works whose own row did not
    change (used by `ingest reprocess` after the flattener learned something new)."""
    works = _newest_by_key(batch, lambda w: w.work.aweme_id, lambda w: w.work.fetched_at)
    if not works:
        return LoadResult()

    authors = _newest_by_key(
        (w.author for w in works if w.author is not None), lambda a: a.uid, lambda a: a.seen_at
    )
    _lock_new_author_keys(conn, [a.uid for a in authors])
    _upsert_newest(
        conn,
        _table(Author),
        [_author_row(a) for a in authors],
        key=("uid",),
        newest_column="last_seen_at",
    )

    music = _newest_by_key(
        ((w.music, w.work.fetched_at) for w in works if w.music is not None),
        lambda m: m[0].music_id,
        lambda m: m[1],
    )
    _upsert_newest(
        conn,
        _table(Music),
        [{**_strip_nul(asdict(m)), "first_seen_at": t, "last_seen_at": t} for m, t in music],
        key=("music_id",),
        newest_column="last_seen_at",
    )

    tags = _newest_by_key(
        ((h, w.work.fetched_at) for w in works for h in w.hashtags),
        lambda h: h[0].name,
        lambda h: h[1],
    )
    if tags:
        stmt = pg_insert(_table(Hashtag))
        stmt = stmt.on_conflict_do_update(
            index_elements=[Hashtag.name],
            set_={"hashtag_id": stmt.excluded.hashtag_id},
            where=and_(Hashtag.hashtag_id.is_(None), stmt.excluded.hashtag_id.is_not(None)),
        )
        conn.execute(
            stmt,
            [{"name": h.name, "hashtag_id": h.hashtag_id, "first_seen_at": t} for h, t in tags],
        )

    written = _upsert_newest(
        conn,
        _table(Work),
        [_work_row(w) for w in works],
        key=("aweme_id",),
        newest_column="last_fetched_at",
    )
    inserted = sum(1 for row in written if row.inserted)
    changed_ids = sorted(
        {w.work.aweme_id for w in works} if resync_children else {r.aweme_id for r in written}
    )
    if changed_ids:
        changed = set(changed_ids)
        current = [w for w in works if w.work.aweme_id in changed]
        _sync_children(
            conn,
            _table(WorkHashtag),
            changed_ids,
            [_hashtag_row(h) for w in current for h in w.hashtags],
            "hashtag_name",
            "text",
        )
        _sync_children(
            conn,
            _table(WorkMention),
            changed_ids,
            [_mention_row(m) for w in current for m in w.mentions],
            "position",
            "integer",
        )
        _sync_children(
            conn,
            _table(WorkImage),
            changed_ids,
            [_strip_nul(asdict(i)) for w in current for i in w.images],
            "position",
            "integer",
        )

    stats = [w.stats for w in works if w.stats is not None]
    added = 0
    if stats:
        params: dict[str, list[Any]] = {
            "aweme_id": [s.aweme_id for s in stats],
            "captured_at": [s.captured_at for s in stats],
        }
        for column in _STAT_COLUMNS:
            params[column] = [getattr(s, column) for s in stats]
        added = len(conn.execute(_INSERT_CHANGED_STATS, params).all())

    # Only works whose row was written can carry a newer payload (a newer fetch always moves
    # last_fetched_at); skipping the rest keeps idempotent re-loads cheap, since cleaning and
    # sending ~40 KB payloads is most of a load's cost.
    written_ids = {row.aweme_id for row in written}
    raw_rows = [
        {
            "aweme_id": w.work.aweme_id,
            "fetched_at": w.work.fetched_at,
            "payload": _strip_nul(w.raw),
        }
        for w in works
        if w.work.aweme_id in written_ids
    ]
    if raw_rows:
        stmt = pg_insert(_table(RawPayload))
        stmt = stmt.on_conflict_do_update(
            index_elements=[RawPayload.aweme_id],
            set_={"fetched_at": stmt.excluded.fetched_at, "payload": stmt.excluded.payload},
            where=stmt.excluded.fetched_at > RawPayload.fetched_at,
        )
        conn.execute(stmt, raw_rows)
    return LoadResult(
        works_inserted=inserted, works_updated=len(written) - inserted, snapshots_added=added
    )


def _author_row(a: AuthorRow) -> dict[str, Any]:
    row = _strip_nul(asdict(a))
    seen = row.pop("seen_at")
    return {**row, "first_seen_at": seen, "last_seen_at": seen}


def _work_row(w: FlatWork) -> dict[str, Any]:
    row = _strip_nul(asdict(w.work))
    fetched = row.pop("fetched_at")
    return {
        **row,
        "first_seen_at": fetched,
        "last_fetched_at": fetched,
        "next_check_at": next_check_at(fetched, w.work.created_at),
        # A work that loads again is available again.
        "gone_at": None,
        "gone_reason": None,
    }


def _hashtag_row(h: HashtagRow) -> dict[str, Any]:
    return {
        "aweme_id": h.aweme_id,
        "hashtag_name": h.name,
        "position": h.position,
        "start_offset": h.start,
        "end_offset": h.end,
    }


def _mention_row(m: MentionRow) -> dict[str, Any]:
    return {
        "aweme_id": m.aweme_id,
        "position": m.position,
        "uid": m.uid,
        "sec_uid": _strip_nul(m.sec_uid),
        "nickname": _strip_nul(m.nickname),
        "start_offset": m.start,
        "end_offset": m.end,
    }


def mark_gone(conn: Connection, works: Sequence[tuple[int, str]], at: datetime) -> None:
    """Mark known works that came back deleted, private or under review. They keep their
    last statistics and are no longer refreshed; a later successful load clears the mark.
    Works never loaded have no row to mark (their link records the outcome)."""
    if not works:
        return
    ordered = sorted(set(works))
    conn.execute(
        text(
            "UPDATE works SET gone_at = :at, gone_reason = v.reason "
            "FROM unnest(CAST(:ids AS bigint[]), CAST(:reasons AS text[])) AS v(aweme_id, reason) "
            "WHERE works.aweme_id = v.aweme_id AND works.gone_at IS NULL"
        ),
        {"at": at, "ids": [w[0] for w in ordered], "reasons": [w[1] for w in ordered]},
    )


def reschedule(conn: Connection, aweme_ids: Sequence[int], at: datetime) -> None:
    """Set the next refresh check of these works."""
    if aweme_ids:
        conn.execute(
            text(
                "UPDATE works SET next_check_at = :at WHERE aweme_id = ANY(CAST(:ids AS bigint[]))"
            ),
            {"at": at, "ids": sorted(set(aweme_ids))},
        )
