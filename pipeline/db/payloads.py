"""raw_payloads: the newest payload of each work, and the newest complete one while the newest
is degraded, so `ingest reprocess` can always rebuild the best-known truth.

    newest   = the payload with the greatest fetch time
    complete = the newest payload with an author, statistics and a description, kept only
               while `newest` lacks one of them (NULL otherwise: no payload is stored twice)

Both follow from the set of payloads loaded, in any order; the SQL below and `_worth_sending`
apply the same rules, the latter only to skip sending ~40 KB payloads that would change nothing.
The SQL decides on the row as stored when it runs, so no lock is needed for correctness.

A payload goes to PostgreSQL as JSON text with the path of the work's object in it, and
PostgreSQL takes that path (`CAST(text AS jsonb) #> path`): the body's text as received
(`pipeline.rows.JsonText`, cleaned at the escape level by `pipeline.douyin.received_text`;
path `data.aweme_detail`), so Python never encodes the payload again, or, for a body only its
decoded value can say faithfully, that value encoded by `pipeline.douyin.json_text` (empty
path). Both give the same JSONB (tests/test_stored_values.py). One parameter per row, in one
prepared statement run for every row (psycopg's pipelined executemany): one array of ~40 KB
texts would be escaped element by element in Python, four times slower (2026-11-30 audit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import cache
from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    Boolean,
    Connection,
    DateTime,
    Integer,
    Table,
    Text,
    and_,
    any_,
    bindparam,
    case,
    literal,
    or_,
    select,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert

from pipeline.db.models import RawPayload
from pipeline.douyin import json_text
from pipeline.rows import FlatWork, JsonText

# Bumped whenever the flattener learns to read payloads better; `ingest db upgrade` and
# `ingest reprocess --stale` rebuild the content of payloads loaded by an older version.
LOADER_VERSION = 2

_RAW = cast(Table, RawPayload.__table__)


@cache
def _upsert() -> Any:
    # INSERT ... SELECT of one row per parameter set: SQLAlchemy hands a list of them to the
    # driver's executemany as is (an INSERT ... VALUES would be rewritten into one long
    # statement per batch, which psycopg re-parses every time and never prepares).
    row = select(
        sql_cast(bindparam("aweme_id", type_=BigInteger), BigInteger),
        sql_cast(bindparam("fetched_at", type_=DateTime(timezone=True)), DateTime(timezone=True)),
        sql_cast(bindparam("payload", type_=Text), JSONB).op("#>", return_type=JSONB)(
            # The path as an array literal in one text: psycopg dumps a list element by
            # element in Python, for every row (3% of the loader's time for a constant).
            sql_cast(bindparam("path", type_=Text), ARRAY(Text))
        ),
        sql_cast(bindparam("is_complete", type_=Boolean), Boolean),
        literal(LOADER_VERSION, Integer),
    )
    stmt = pg_insert(_RAW).from_select(
        ["aweme_id", "fetched_at", "payload", "is_complete", "loader_version"], row
    )
    new, cur = stmt.excluded, _RAW.c
    newer = new.fetched_at > cur.fetched_at
    better_complete = and_(
        new.is_complete,
        ~cur.is_complete,
        or_(cur.complete_fetched_at.is_(None), new.fetched_at > cur.complete_fetched_at),
    )

    def complete(incoming: Any, stored: Any, kept: Any) -> Any:
        return case(
            (and_(newer, new.is_complete), None),
            (and_(newer, cur.is_complete), stored),
            (newer, kept),
            (better_complete, incoming),
            else_=kept,
        )

    return stmt.on_conflict_do_update(
        index_elements=[cur.aweme_id],
        set_={
            "fetched_at": case((newer, new.fetched_at), else_=cur.fetched_at),
            "payload": case((newer, new.payload), else_=cur.payload),
            "is_complete": case((newer, new.is_complete), else_=cur.is_complete),
            "complete_fetched_at": complete(
                new.fetched_at, cur.fetched_at, cur.complete_fetched_at
            ),
            "complete_payload": complete(new.payload, cur.payload, cur.complete_payload),
        },
        where=or_(newer, better_complete),
    )


_State = tuple[datetime, bool, datetime | None] | None


@cache
def _stored_states() -> Any:
    """What `_worth_sending` needs of the stored payloads of :ids (built once)."""
    keys = sql_cast(bindparam("ids", type_=ARRAY(BigInteger)), ARRAY(BigInteger))
    return select(
        _RAW.c.aweme_id, _RAW.c.fetched_at, _RAW.c.is_complete, _RAW.c.complete_fetched_at
    ).where(_RAW.c.aweme_id == any_(keys))


def store(conn: Connection, works: Sequence[FlatWork]) -> None:
    """Keep the payloads of `works` that are newer, or newer complete ones, than those stored."""
    if not works:
        return
    ids = sorted({w.work.aweme_id for w in works})
    stored: dict[int, _State] = {
        row.aweme_id: (row.fetched_at, row.is_complete, row.complete_fetched_at)
        for row in conn.execute(_stored_states(), {"ids": ids}).all()
    }
    rounds: list[dict[int, dict[str, Any]]] = []
    for w in sorted(works, key=lambda w: (w.work.aweme_id, w.work.fetched_at)):
        state = stored.get(w.work.aweme_id)
        if not _worth_sending(state, w.work.fetched_at, w.complete):
            continue
        stored[w.work.aweme_id] = _after(state, w.work.fetched_at, w.complete)
        raw = w.raw if isinstance(w.raw, JsonText) else JsonText(json_text(w.raw))
        row = {
            "aweme_id": w.work.aweme_id,
            "fetched_at": w.work.fetched_at,
            "payload": raw.data,
            "path": _array_literal(raw.path),
            "is_complete": w.complete,
        }
        # A key may appear once per statement: another payload of one work goes a round later.
        free = next((r for r in rounds if w.work.aweme_id not in r), None)
        if free is None:
            free = {}
            rounds.append(free)
        free[w.work.aweme_id] = row
    for batch in rounds:
        conn.execute(_upsert(), [batch[k] for k in sorted(batch)])


@cache
def _array_literal(path: tuple[str, ...]) -> str:
    """`path` as a PostgreSQL text[] literal (every element quoted)."""
    quoted = ('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in path)
    return "{" + ",".join(quoted) + "}"


def _worth_sending(state: _State, at: datetime, complete: bool) -> bool:
    if state is None:
        return True
    fetched_at, is_complete, complete_at = state
    if at > fetched_at:
        return True
    return complete and not is_complete and (complete_at is None or at > complete_at)


def _after(state: _State, at: datetime, complete: bool) -> _State:
    if state is None:
        return (at, complete, None)
    fetched_at, is_complete, complete_at = state
    if at > fetched_at:
        if complete:
            return (at, True, None)
        return (at, False, fetched_at if is_complete else complete_at)
    return (fetched_at, is_complete, at)


def stored_payloads(row: Mapping[Any, Any]) -> list[tuple[datetime, Any]]:
    """The payloads a raw_payloads row holds, oldest first."""
    found = [(row["fetched_at"], row["payload"])]
    if row["complete_payload"] is not None:
        found.insert(0, (row["complete_fetched_at"], row["complete_payload"]))
    return found
