"""Work state: whether a work is gone, when it was last checked and when it is due again.

The owner rule (docs/schema.md): these columns are written only here, by the run that fetched
the work (`mark_fetched`, `mark_gone`) and by the refresh scheduler (`reschedule`). The loader
writes content only, so `ingest reprocess`, which rebuilds content from stored payloads, can
never bring a gone work back or move its schedule.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import cast

from sqlalchemy import Connection, Table, any_, update
from sqlalchemy.sql.dml import Update

from pipeline.db.models import Work
from pipeline.db.params import ids_param, recordset, recordset_param
from pipeline.douyin import canonical_gone_reason
from pipeline.rows import FlatWork
from pipeline.schedule import next_check_at

_WORKS = cast(Table, Work.__table__)


def mark_fetched(conn: Connection, works: Sequence[FlatWork]) -> None:
    """Record a successful fetch of each work: checked now, available (a work that loads again
    is no longer gone), next check by its age (publish time, or the id's estimate of it)."""
    newest: dict[int, FlatWork] = {}
    for w in works:
        known = newest.get(w.work.aweme_id)
        if known is None or w.work.fetched_at > known.work.fetched_at:
            newest[w.work.aweme_id] = w
    if not newest:
        return
    rows = []
    for aweme_id in sorted(newest):
        work = newest[aweme_id].work
        published = work.created_at or work.created_at_from_id
        rows.append(
            {
                "aweme_id": aweme_id,
                "last_fetched_at": work.fetched_at,
                "next_check_at": next_check_at(work.fetched_at, published),
            }
        )
    conn.execute(_MARK_FETCHED, recordset_param(rows))


def _mark_fetched() -> Update:
    # One statement per batch (the rows as one JSON text), not one UPDATE per work.
    given = recordset(_WORKS, ("aweme_id", "last_fetched_at", "next_check_at")).subquery()
    return (
        update(_WORKS)
        .where(_WORKS.c.aweme_id == given.c.aweme_id)
        .values(
            last_fetched_at=given.c.last_fetched_at,
            next_check_at=given.c.next_check_at,
            gone_at=None,
            gone_reason=None,
        )
    )


_MARK_FETCHED = _mark_fetched()


def mark_gone(conn: Connection, works: Sequence[tuple[int, str]], at: datetime) -> None:
    """Mark known works that came back deleted, private or under review, with the canonical
    reason (`pipeline.douyin.canonical_gone_reason`). They keep their content and last
    statistics and are no longer refreshed; a later successful fetch clears the mark. Works
    never loaded have no row to mark (their link records the outcome)."""
    if not works:
        return
    reasons = {aweme_id: canonical_gone_reason(reason) for aweme_id, reason in works}
    rows = [{"aweme_id": i, "gone_reason": reasons[i]} for i in sorted(reasons)]
    gone = recordset(_WORKS, ("aweme_id", "gone_reason")).subquery()
    conn.execute(
        update(_WORKS)
        .where(_WORKS.c.aweme_id == gone.c.aweme_id, _WORKS.c.gone_at.is_(None))
        .values(gone_at=at, gone_reason=gone.c.gone_reason),
        recordset_param(rows),
    )


def reschedule(conn: Connection, aweme_ids: Sequence[int], at: datetime) -> None:
    """Set the next refresh check of these works."""
    if aweme_ids:
        conn.execute(
            update(_WORKS)
            .where(_WORKS.c.aweme_id == any_(ids_param("ids")))
            .values(next_check_at=at),
            {"ids": sorted(set(aweme_ids))},
        )
