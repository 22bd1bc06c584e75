"""Claims with leases: how several processes share work on one database (docs/scaling.md).

A claim is a row saying "run R is on this work (or link) until `lease_until`". Claims are
scheduler state with tables of their own, and this module is their one writer: `works` only
gets a row lock for the instant of a claim, never a new row version. The holder renews its
leases while alive (`renew`) and deletes a claim in the very transaction that commits the
work's fate (`settle_works`, `settle_links`), so another process either sees the claim or sees
the fate, never neither. A process that dies stops renewing: its claims expire
and the others take the work. Every time is the database's clock (`clock_timestamp()`), so
hosts with skewed clocks agree on when a lease ends.

Why no queue library (procrastinate, pgqueuer, pgmq): the refresh queue already exists, it is
`works.next_check_at`, written by one owner (`pipeline.db.state`). A job queue would copy the
schedule into rows of its own (a million jobs a day, enqueued by someone who must not enqueue
twice), keep a second truth about each work, mark jobs done in its own transaction rather than
in the batch that loads the work, and bring its own schema outside Alembic (pgmq needs a server
extension besides). A claim is one INSERT … ON CONFLICT; the leases need three short statements.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Mapping
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Row,
    Table,
    any_,
    delete,
    func,
    select,
    text,
    update,
)

from pipeline.db.outage import first_line
from pipeline.db.params import ids_param, insert_recordset, recordset_param, texts_param
from pipeline.db.tracking import LinkClaim, WorkClaim

log = logging.getLogger(__name__)

DEFAULT_LEASE = timedelta(minutes=2)

# A claim holds while its lease lasts and its run is running: a run the next run found dead
# (`pipeline.db.runs.abandon_dead_runs`: a dead pid on this host, a silent heartbeat elsewhere)
# holds nothing, so its work is taken before the lease ends. A claim of no run (a work resting
# after a failed fetch) holds until its lease ends. `{c}`: the claims table's name or alias.
LIVE_CLAIM_SQL = (
    "({c}.lease_until > clock_timestamp() AND ({c}.run_id IS NULL OR EXISTS "
    "(SELECT 1 FROM ingest_runs r WHERE r.run_id = {c}.run_id AND r.status = 'running')))"
)

_work_claims = cast(Table, WorkClaim.__table__)
_link_claims = cast(Table, LinkClaim.__table__)


def lease_end(lease: timedelta) -> ColumnElement[Any]:
    return func.clock_timestamp() + lease


def renew(conn: Connection, run_id: int, lease: timedelta) -> None:
    """Extend every claim this run holds: it is alive."""
    for table in (_work_claims, _link_claims):
        conn.execute(
            update(table).where(table.c.run_id == run_id).values(lease_until=lease_end(lease))
        )


def release(conn: Connection, run_id: int) -> None:
    """Drop every claim this run still holds (at its end, whatever ended it)."""
    for table in (_work_claims, _link_claims):
        conn.execute(delete(table).where(table.c.run_id == run_id))


def drop_stale(conn: Connection) -> None:
    """Forget claims that hold nothing any more: their lease ended (the holder died elsewhere,
    or a failed work's rest is over), or their run is no longer running (it ended, or was
    found dead). Run at the start of every run, so the tables stay as small as the work in
    flight."""
    for name in ("work_claims", "link_claims"):
        conn.execute(text(f"DELETE FROM {name} WHERE NOT {LIVE_CLAIM_SQL.format(c=name)}"))


async def renew_claims(engine: Engine, run_id: int | None, lease: timedelta) -> None:
    """Renew a run's leases a few times per lease, for as long as the run lives (a task of
    the run). A renewal lost to a database outage is tried again at the next turn."""
    assert run_id is not None
    every = max(0.2, lease.total_seconds() / 4)
    while True:
        await asyncio.sleep(every)
        try:
            await asyncio.to_thread(
                _in_transaction, engine, lambda conn: renew(conn, run_id, lease)
            )
        except Exception as exc:
            log.debug("leases not renewed: %s", first_line(exc))


async def release_claims(engine: Engine, run_id: int | None) -> None:
    """Drop the claims a run still holds (work it never got to), whatever ended it. If the
    database is gone, their leases simply end."""
    if run_id is None:
        return
    try:
        await asyncio.to_thread(_in_transaction, engine, lambda conn: release(conn, run_id))
    except Exception as exc:
        log.debug("claims not released (their leases will end): %s", first_line(exc))


def _in_transaction(engine: Engine, fn: Callable[[Connection], None]) -> None:
    with engine.begin() as conn:
        fn(conn)


# -- works (refresh) ---------------------------------------------------------------------------


def claim_works(
    conn: Connection,
    due: str,
    params: Mapping[str, object],
    run_id: int,
    lease: timedelta,
) -> list[Row[Any]]:
    """Claim for this run the works `due` selects, in one statement, and return them (with the
    link each was loaded from) in due order. `due` (with its `params`) is the caller's SELECT of
    `aweme_id, due_key`, locking its rows `FOR UPDATE SKIP LOCKED` and leaving out works a live
    claim holds (`LIVE_CLAIM_SQL`). ON CONFLICT has the final word: a claim another worker
    committed after this statement's snapshot still wins, so two workers never both get a
    work."""
    sql = (
        f"WITH due AS ({due}), "
        "claimed AS (INSERT INTO work_claims (aweme_id, run_id, lease_until) "
        "  SELECT aweme_id, :run_id, clock_timestamp() + :lease FROM due "
        "  ON CONFLICT (aweme_id) DO UPDATE "
        "  SET run_id = excluded.run_id, lease_until = excluded.lease_until "
        f"  WHERE NOT ({LIVE_CLAIM_SQL.format(c='work_claims')}) RETURNING aweme_id) "
        "SELECT d.aweme_id, "
        "(SELECT s.url FROM share_links s WHERE s.aweme_id = d.aweme_id "
        "  AND s.last_outcome = 'loaded' ORDER BY s.last_seen_at DESC LIMIT 1) AS link "
        "FROM due d JOIN claimed USING (aweme_id) ORDER BY d.due_key, d.aweme_id"
    )
    return list(conn.execute(text(sql), {**params, "run_id": run_id, "lease": lease}))


def settle_works(
    conn: Connection,
    run_id: int,
    done: Collection[int],
    failed: Collection[int],
    rest: timedelta,
) -> None:
    """In the transaction that records the fetches: works done are released; works whose fetch
    failed rest for `rest` under a claim of nobody's, so no worker (this one included) asks
    again at once, whichever way `due` is defined (--stale-after does not look at the
    failure's reschedule)."""
    if done:
        conn.execute(
            delete(_work_claims).where(
                _work_claims.c.aweme_id == any_(ids_param("ids")), _work_claims.c.run_id == run_id
            ),
            {"ids": sorted(set(done))},
        )
    if failed:
        conn.execute(
            update(_work_claims)
            .where(
                _work_claims.c.aweme_id == any_(ids_param("ids")), _work_claims.c.run_id == run_id
            )
            .values(run_id=None, lease_until=lease_end(rest)),
            {"ids": sorted(set(failed))},
        )


# -- links (ingest FILE) -----------------------------------------------------------------------


def claim_links(conn: Connection, run_id: int, keys: Collection[str], lease: timedelta) -> set[str]:
    """Claim these links for this run; returns those it holds now. A link another live run
    holds is not returned. Keys are inserted in sorted order, so two processes claiming
    overlapping sets wait on each other in one order and never deadlock."""
    if not keys:
        return set()
    insert = insert_recordset(_link_claims, ("link_key", "run_id", "lease_until"))
    stmt = insert.on_conflict_do_update(
        index_elements=[_link_claims.c.link_key],
        set_={"run_id": insert.excluded.run_id, "lease_until": insert.excluded.lease_until},
        # Free when no live run holds it, or this run does (renewed). Text, not an expression:
        # SQLAlchemy does not correlate a subquery with the conflicting row of ON CONFLICT.
        where=text(
            f"NOT {LIVE_CLAIM_SQL.format(c='link_claims')} OR link_claims.run_id = excluded.run_id"
        ),
    ).returning(_link_claims.c.link_key)
    until = conn.execute(select(lease_end(lease))).scalar_one()
    rows = [{"link_key": k, "run_id": run_id, "lease_until": until} for k in sorted(set(keys))]
    return set(conn.execute(stmt, recordset_param(rows)).scalars())


def settle_links(conn: Connection, run_id: int, keys: Collection[str]) -> None:
    """Release the claims on links whose fate this transaction records."""
    if keys:
        conn.execute(
            delete(_link_claims).where(
                _link_claims.c.link_key == any_(texts_param("keys")),
                _link_claims.c.run_id == run_id,
            ),
            {"keys": sorted(set(keys))},
        )
