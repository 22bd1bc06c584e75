"""Queries for the bookkeeping tables: run records and the fate of every input link."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from pipeline.db.tracking import IngestRun, ShareLinkRecord


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """What became of one distinct input link (or rejected line) in this run."""

    link_key: str
    url: str
    aweme_id: int | None
    outcome: str  # loaded | gone | invalid | failed
    reason: str | None
    attempts: int
    source: str | None


def start_run(conn: Connection, kind: str, options: Mapping[str, Any]) -> int:
    return int(
        conn.execute(
            pg_insert(IngestRun)
            .values(
                kind=kind,
                status="running",
                host=socket.gethostname(),
                pid=os.getpid(),
                options=dict(options),
            )
            .returning(IngestRun.run_id)
        ).scalar_one()
    )


def save_progress(conn: Connection, run_id: int, counts: Mapping[str, int]) -> None:
    conn.execute(
        update(IngestRun)
        .where(IngestRun.run_id == run_id)
        .values(counts=dict(counts), heartbeat_at=func.now())
    )


def finish_run(
    conn: Connection, run_id: int, status: str, counts: Mapping[str, int], message: str | None
) -> None:
    conn.execute(
        update(IngestRun)
        .where(IngestRun.run_id == run_id)
        .values(
            status=status,
            counts=dict(counts),
            message=message,
            finished_at=func.now(),
            heartbeat_at=func.now(),
        )
    )


def record_links(conn: Connection, run_id: int, records: Sequence[LinkRecord]) -> None:
    """Upsert the outcome of each link; sorted by key like every other writer."""
    if not records:
        return
    latest: dict[str, LinkRecord] = {r.link_key: r for r in records}
    stmt = pg_insert(ShareLinkRecord)
    stmt = stmt.on_conflict_do_update(
        index_elements=[ShareLinkRecord.link_key],
        set_={
            "url": stmt.excluded.url,
            "aweme_id": func.coalesce(stmt.excluded.aweme_id, ShareLinkRecord.aweme_id),
            "last_outcome": stmt.excluded.last_outcome,
            "last_reason": stmt.excluded.last_reason,
            "attempts": ShareLinkRecord.attempts + stmt.excluded.attempts,
            "source": stmt.excluded.source,
            "last_seen_at": func.now(),
            "last_run_id": stmt.excluded.last_run_id,
        },
    )
    conn.execute(
        stmt,
        [
            {
                "link_key": r.link_key,
                "url": r.url,
                "aweme_id": r.aweme_id,
                "last_outcome": r.outcome,
                "last_reason": r.reason,
                "attempts": r.attempts,
                "source": r.source,
                "last_run_id": run_id,
            }
            for r in (latest[k] for k in sorted(latest))
        ],
    )


_KNOWN = text(
    """
    SELECT link_key, aweme_id FROM share_links
     WHERE (link_key = ANY(CAST(:keys AS text[])) OR aweme_id = ANY(CAST(:ids AS bigint[])))
       AND last_outcome IN ('loaded', 'gone')
    UNION ALL
    SELECT NULL, aweme_id FROM works WHERE aweme_id = ANY(CAST(:ids AS bigint[]))
    """
)


def known_links(conn: Connection, keys: Sequence[str], aweme_ids: Sequence[int]) -> set[str]:
    """The subset of `keys` (and `aweme:<id>` keys) already loaded or known gone."""
    known: set[str] = set()
    for link_key, aweme_id in conn.execute(_KNOWN, {"keys": list(keys), "ids": list(aweme_ids)}):
        if link_key is not None:
            known.add(link_key)
        if aweme_id is not None:
            known.add(f"aweme:{aweme_id}")
    return known


def recent_runs(conn: Connection, limit: int) -> list[Row[Any]]:
    runs = IngestRun.__table__
    return list(conn.execute(select(runs).order_by(runs.c.run_id.desc()).limit(limit)))


def failed_links(conn: Connection, run_id: int | None) -> list[Row[Any]]:
    links = ShareLinkRecord.__table__
    stmt = select(links).where(links.c.last_outcome.in_(("invalid", "failed")))
    if run_id is not None:
        stmt = stmt.where(links.c.last_run_id == run_id)
    return list(conn.execute(stmt.order_by(links.c.link_key)))
