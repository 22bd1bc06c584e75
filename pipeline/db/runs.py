"""Queries for the bookkeeping tables: run records and the fate of every input link."""

from __future__ import annotations

import os
import socket
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import (
    Connection,
    Row,
    Table,
    and_,
    any_,
    case,
    false,
    func,
    literal,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert

from pipeline.db.models import Work
from pipeline.db.params import ids_param, insert_recordset, recordset_param, texts_param
from pipeline.db.tracking import IngestRun, LinkOutcome, RunStatus, ShareLinkRecord
from pipeline.douyin import UNKNOWN_GONE_REASON

# A live run writes its heartbeat every HEARTBEAT_INTERVAL; one silent for ABANDONED_AFTER
# has died without closing its record (SIGKILL, power loss, a lost host).
HEARTBEAT_INTERVAL = timedelta(seconds=10)
ABANDONED_AFTER = timedelta(seconds=60)

RESOLVED_ELSEWHERE = "its work is loaded (through another link)"

_runs = cast(Table, IngestRun.__table__)
_links = cast(Table, ShareLinkRecord.__table__)


@dataclass(frozen=True, slots=True)
class LinkRecord:
    """What became of one distinct input link (or rejected line) in this run."""

    link_key: str
    url: str
    aweme_id: int | None
    outcome: str  # a LinkOutcome
    reason: str | None
    attempts: int
    source: str | None


@dataclass(frozen=True, slots=True)
class KnownFate:
    """What the database already knows of a link (or its work): why it need not be fetched."""

    aweme_id: int | None
    outcome: LinkOutcome  # LOADED, GONE; INVALID or FAILED (for good) for this very link
    reason: str | None  # what a fetch of the link would have recorded: None, or "gone: <why>"


def pg_text(value: str) -> str:
    """`value` as PostgreSQL text can hold it: no U+0000, no lone surrogates. Bookkeeping
    stores rejected input verbatim, and hostile input must not make that write fail."""
    if "\x00" in value:
        value = value.replace("\x00", "\\0")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


# -- runs ------------------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # exists but is not ours, or cannot be asked: assume alive
    return True


def _dead_here(conn: Connection) -> list[int]:
    """Running runs on this host whose process is gone."""
    rows = conn.execute(
        select(_runs.c.run_id, _runs.c.pid).where(
            _runs.c.status == RunStatus.RUNNING, _runs.c.host == socket.gethostname()
        )
    )
    return [r.run_id for r in rows if not pid_alive(r.pid)]


def abandon_dead_runs(conn: Connection) -> list[int]:
    """Mark `abandoned` every run still `running` whose process is gone: on this host, its pid
    no longer exists; elsewhere, its heartbeat is older than ABANDONED_AFTER. (On this host the
    pid has the final word: a live run stuck in a long database outage cannot beat, yet is
    alive.) Returns their ids."""
    here = socket.gethostname()
    stale_elsewhere = and_(
        _runs.c.host != here, _runs.c.heartbeat_at < func.now() - ABANDONED_AFTER
    )
    dead = _dead_here(conn)
    rows = conn.execute(
        update(_runs)
        .where(
            _runs.c.status == RunStatus.RUNNING,
            or_(stale_elsewhere, _runs.c.run_id.in_(dead) if dead else false()),
        )
        .values(
            status=RunStatus.ABANDONED,
            finished_at=_runs.c.heartbeat_at,
            message=func.coalesce(
                _runs.c.message,
                literal("the process ended without closing its run (killed or crashed); ")
                + literal("its committed batches are kept"),
            ),
        )
        .returning(_runs.c.run_id)
    )
    return sorted(r.run_id for r in rows)


def start_run(conn: Connection, kind: str, options: Mapping[str, Any]) -> int:
    """Open a run record (after closing the records of runs that died)."""
    abandon_dead_runs(conn)
    return int(
        conn.execute(
            pg_insert(IngestRun)
            .values(
                kind=kind,
                status=RunStatus.RUNNING,
                host=socket.gethostname(),
                pid=os.getpid(),
                options=dict(options),
            )
            .returning(IngestRun.run_id)
        ).scalar_one()
    )


def _alive() -> dict[str, Any]:
    """Columns of a sign of life. A run a newer run took for dead (it was stuck in a long
    database outage, say) is running after all."""
    revived = _runs.c.status == RunStatus.ABANDONED
    return {
        "heartbeat_at": func.now(),
        "status": case((revived, literal(str(RunStatus.RUNNING))), else_=_runs.c.status),
        "finished_at": case((revived, None), else_=_runs.c.finished_at),
    }


def beat(conn: Connection, run_id: int) -> None:
    """The heartbeat: this run is alive."""
    conn.execute(update(_runs).where(_runs.c.run_id == run_id).values(**_alive()))


def save_progress(conn: Connection, run_id: int, counts: Mapping[str, int]) -> None:
    conn.execute(
        update(_runs).where(_runs.c.run_id == run_id).values(counts=dict(counts), **_alive())
    )


def finish_run(
    conn: Connection, run_id: int, status: str, counts: Mapping[str, Any], message: str | None
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


def shown_status(run: Row[Any], now: datetime, host: str | None = None) -> str:
    """A run's status as `ingest runs` shows it: a `running` record whose process is plainly
    gone (a dead pid on this host, a silent heartbeat elsewhere) is `abandoned`, even before
    the next run marks it so."""
    if run.status != RunStatus.RUNNING:
        return str(run.status)
    if run.host == (host or socket.gethostname()):
        return RunStatus.RUNNING if pid_alive(run.pid) else RunStatus.ABANDONED
    return RunStatus.ABANDONED if now - run.heartbeat_at > ABANDONED_AFTER else RunStatus.RUNNING


def recent_runs(conn: Connection, limit: int) -> list[Row[Any]]:
    """The newest runs, with `now` (the database clock, to judge heartbeats by)."""
    return list(
        conn.execute(
            select(_runs, func.now().label("now")).order_by(_runs.c.run_id.desc()).limit(limit)
        )
    )


# -- links -----------------------------------------------------------------------------------


def record_links(
    conn: Connection,
    run_id: int,
    records: Sequence[LinkRecord],
    retryable: Collection[str] = (),
) -> None:
    """Upsert the outcome of each link; sorted by key like every other writer. `retryable`:
    keys of the links that failed temporarily (worth retrying later)."""
    if not records:
        return
    latest: dict[str, LinkRecord] = {r.link_key: r for r in records}
    stmt = insert_recordset(_links, _LINK_COLUMNS)
    stmt = stmt.on_conflict_do_update(
        index_elements=[ShareLinkRecord.link_key],
        set_={
            "url": stmt.excluded.url,
            "aweme_id": func.coalesce(stmt.excluded.aweme_id, ShareLinkRecord.aweme_id),
            "last_outcome": stmt.excluded.last_outcome,
            "last_reason": stmt.excluded.last_reason,
            "retryable": stmt.excluded.retryable,
            "attempts": ShareLinkRecord.attempts + stmt.excluded.attempts,
            "source": stmt.excluded.source,
            "last_seen_at": func.now(),
            "last_run_id": stmt.excluded.last_run_id,
        },
    )
    rows = [_link_row(run_id, latest[k], latest[k].link_key in retryable) for k in sorted(latest)]
    conn.execute(stmt, recordset_param(rows))


def record_skipped_links(conn: Connection, run_id: int, records: Sequence[LinkRecord]) -> None:
    """Links skipped because their work is already known: this run read them (run id, source,
    time), but their outcome and reason stay what the fetch that settled them recorded. A link
    with no row yet (its work known through another link) gets the work's fate, as a fetch
    would have written it, so the table is the same whichever link happened to be fetched."""
    if not records:
        return
    latest: dict[str, LinkRecord] = {r.link_key: r for r in records}
    stmt = insert_recordset(_links, _LINK_COLUMNS)
    stmt = stmt.on_conflict_do_update(
        index_elements=[ShareLinkRecord.link_key],
        set_={
            "aweme_id": func.coalesce(ShareLinkRecord.aweme_id, stmt.excluded.aweme_id),
            "source": stmt.excluded.source,
            "last_seen_at": func.now(),
            "last_run_id": stmt.excluded.last_run_id,
        },
    )
    conn.execute(stmt, recordset_param([_link_row(run_id, latest[k]) for k in sorted(latest)]))


_LINK_COLUMNS = (
    "link_key", "url", "aweme_id", "last_outcome", "last_reason", "retryable", "attempts",
    "source", "last_run_id",
)  # fmt: skip


def _link_row(run_id: int, r: LinkRecord, retryable: bool = False) -> dict[str, Any]:
    return {
        "link_key": r.link_key,
        "url": pg_text(r.url),
        "aweme_id": r.aweme_id,
        "last_outcome": r.outcome,
        "last_reason": None if r.reason is None else pg_text(r.reason),
        "retryable": retryable and r.outcome == LinkOutcome.FAILED,
        "attempts": r.attempts,
        "source": None if r.source is None else pg_text(r.source),
        "last_run_id": run_id,
    }


def resolve_through_other_links(conn: Connection, aweme_ids: Sequence[int]) -> list[Row[Any]]:
    """Links still `failed` whose work is loaded (through another link, its short link say)
    are `loaded` too: not failures to retry or export any more. Returns the rows changed
    (link_key, last_run_id)."""
    if not aweme_ids:
        return []
    works = cast(Table, Work.__table__)
    available = (
        select(works.c.aweme_id)
        .where(works.c.aweme_id == _links.c.aweme_id, works.c.gone_at.is_(None))
        .exists()
    )
    return list(
        conn.execute(
            update(_links)
            .where(
                _links.c.aweme_id == any_(ids_param("ids")),
                _links.c.last_outcome == LinkOutcome.FAILED,
                available,
            )
            .values(
                last_outcome=LinkOutcome.LOADED, last_reason=RESOLVED_ELSEWHERE, retryable=False
            )
            .returning(_links.c.link_key, _links.c.last_run_id),
            {"ids": sorted(set(aweme_ids))},
        )
    )


def known_links(
    conn: Connection, keys: Sequence[str], aweme_ids: Sequence[int]
) -> dict[str, KnownFate]:
    """Of `keys` (and `aweme:<id>` keys for `aweme_ids`), those whose work is already loaded or
    known gone, through this link or any other link to the same work, and that fate; and
    those an earlier run found invalid or failed on for good, not temporarily (this very link:
    another link to the same work may still be good)."""
    works = cast(Table, Work.__table__)
    settled = or_(
        _links.c.last_outcome == LinkOutcome.INVALID,
        and_(_links.c.last_outcome == LinkOutcome.FAILED, ~_links.c.retryable),
    )
    settled_rows = conn.execute(
        select(
            _links.c.link_key, _links.c.aweme_id, _links.c.last_outcome, _links.c.last_reason
        ).where(_links.c.link_key == any_(texts_param("keys")), settled),
        {"keys": list(keys)},
    ).all()
    link_rows = conn.execute(
        select(
            _links.c.link_key,
            _links.c.aweme_id,
            _links.c.last_outcome,
            works.c.aweme_id.is_not(None).label("has_work"),
            works.c.gone_at,
            works.c.gone_reason,
        )
        .select_from(_links.outerjoin(works, works.c.aweme_id == _links.c.aweme_id))
        .where(
            or_(
                _links.c.link_key == any_(texts_param("keys")),
                _links.c.aweme_id == any_(ids_param("ids")),
            ),
            _links.c.last_outcome.in_((LinkOutcome.LOADED, LinkOutcome.GONE)),
        ),
        {"keys": list(keys), "ids": list(aweme_ids)},
    ).all()
    work_rows = conn.execute(
        select(works.c.aweme_id, works.c.gone_at, works.c.gone_reason).where(
            works.c.aweme_id == any_(ids_param("ids"))
        ),
        {"ids": list(aweme_ids)},
    ).all()
    known: dict[str, KnownFate] = {
        r.link_key: KnownFate(r.aweme_id, LinkOutcome(r.last_outcome), r.last_reason)
        for r in settled_rows
    }
    # Settled links first, then links, works last: the works table has the final word on a
    # work's fate.
    for r in link_rows:
        fate = _fate(r.aweme_id, r.gone_at, r.gone_reason) if r.has_work else None
        if fate is None:
            outcome = LinkOutcome(r.last_outcome)
            fate = KnownFate(r.aweme_id, outcome, _skip_reason(outcome, None))
        known[r.link_key] = fate
        if r.aweme_id is not None:
            known.setdefault(f"aweme:{r.aweme_id}", fate)
    for w in work_rows:
        known[f"aweme:{w.aweme_id}"] = _fate(w.aweme_id, w.gone_at, w.gone_reason)
    wanted = set(keys)
    return {k: v for k, v in known.items() if k in wanted}


def _fate(aweme_id: int, gone_at: datetime | None, gone_reason: str | None) -> KnownFate:
    outcome = LinkOutcome.LOADED if gone_at is None else LinkOutcome.GONE
    return KnownFate(aweme_id, outcome, _skip_reason(outcome, gone_reason))


def _skip_reason(outcome: LinkOutcome, gone_reason: str | None) -> str | None:
    """The reason a fetch would have recorded (the contracts' "gone: <status>" form), so a
    link's row is the same whether this run fetched it or skipped it."""
    if outcome is LinkOutcome.LOADED:
        return None
    return f"gone: {gone_reason or UNKNOWN_GONE_REASON}"


def failed_links(
    conn: Connection, run_id: int | None, *, retryable_only: bool = False
) -> list[Row[Any]]:
    """Links (and rejected lines) left invalid or failed, optionally only those last seen by
    `run_id`, or only those worth retrying (failed temporarily)."""
    stmt = select(_links).where(
        _links.c.last_outcome.in_((LinkOutcome.INVALID, LinkOutcome.FAILED))
    )
    if run_id is not None:
        stmt = stmt.where(_links.c.last_run_id == run_id)
    if retryable_only:
        stmt = stmt.where(_links.c.retryable)
    return list(conn.execute(stmt.order_by(_links.c.link_key)))


def run_exists(conn: Connection, run_id: int) -> bool:
    return conn.execute(select(_runs.c.run_id).where(_runs.c.run_id == run_id)).first() is not None


def rejected_before(conn: Connection, run_id: int, keys: Sequence[str]) -> set[str]:
    """Of `keys`, those an earlier run already recorded as invalid: not new problems."""
    if not keys:
        return set()
    rows = conn.execute(
        select(_links.c.link_key).where(
            _links.c.link_key == any_(texts_param("keys")),
            _links.c.last_outcome == LinkOutcome.INVALID,
            _links.c.last_run_id != run_id,
        ),
        {"keys": sorted(set(keys))},
    )
    return set(rows.scalars())
