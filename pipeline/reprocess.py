"""Rebuild the content of every table from `raw_payloads`, without fetching (after the
flattener improved, or as the repair step of a migration).

Only content is rebuilt: work state (gone, schedule, check times) is never touched, and facts
the stored payloads no longer carry are kept (the loader never writes "unknown" over a value).
"""

from __future__ import annotations

import logging
from collections import Counter

from sqlalchemy import Connection, Engine, Table, func, select, update

from pipeline.db.load import load_works, table
from pipeline.db.models import RawPayload
from pipeline.db.payloads import LOADER_VERSION, stored_payloads
from pipeline.db.runs import finish_run, start_run
from pipeline.flatten import FlatWork, NotAWork, flatten

log = logging.getLogger(__name__)


def reprocess(engine: Engine, batch_size: int = 500, *, stale_only: bool = False) -> Counter[str]:
    """Flatten every stored payload again (`stale_only`: those loaded by an older flattener)
    and merge it in; one transaction per batch, keyset paged, so memory stays bounded and a
    crash keeps the batches already done."""
    counts: Counter[str] = Counter()
    with engine.begin() as conn:
        run_id = start_run(conn, "reprocess", {"batch_size": batch_size, "stale": stale_only})
    after = -(2**63)
    while True:
        with engine.begin() as conn:
            done, after = reprocess_batch(conn, after, batch_size, counts, stale_only=stale_only)
        if not done:
            break
    with engine.begin() as conn:
        finish_run(conn, run_id, "succeeded", counts, None)
    return counts


def repair_stale_content(engine: Engine) -> int:
    """Rebuild the content of every payload loaded by an older flattener (after an upgrade);
    returns how many payloads that was (0, and no run record, when there were none)."""
    raw = table(RawPayload)
    with engine.connect() as conn:
        stale = conn.execute(
            select(func.count()).where(raw.c.loader_version < LOADER_VERSION)
        ).scalar_one()
    if not stale:
        return 0
    log.warning("rebuilding the content of %d stored payloads (repair after upgrade)", stale)
    return reprocess(engine, stale_only=True)["payloads"]


def reprocess_batch(
    conn: Connection, after: int, batch_size: int, counts: Counter[str], *, stale_only: bool
) -> tuple[int, int]:
    """Rebuild the next `batch_size` payloads with aweme_id > `after`; returns how many were
    read and the last id (the next `after`)."""
    raw: Table = table(RawPayload)
    query = select(raw).where(raw.c.aweme_id > after)
    if stale_only:
        query = query.where(raw.c.loader_version < LOADER_VERSION)
    rows = conn.execute(query.order_by(raw.c.aweme_id).limit(batch_size)).mappings().all()
    if not rows:
        return 0, after
    works: list[FlatWork] = []
    for row in rows:
        for fetched_at, payload in stored_payloads(row):
            try:
                works.append(flatten(payload, fetched_at))
            except NotAWork as exc:
                counts["not_a_work"] += 1
                log.warning("raw payload %s is not a work: %s", row["aweme_id"], exc)
    result = load_works(conn, works, reprocess=True)
    ids = [row["aweme_id"] for row in rows]
    conn.execute(
        update(raw)
        .where(raw.c.aweme_id.in_(ids), raw.c.loader_version != LOADER_VERSION)
        .values(loader_version=LOADER_VERSION)
    )
    counts["payloads"] += len(rows)
    counts["works_updated"] += result.works_updated
    counts["works_new"] += result.works_inserted
    counts["snapshots_added"] += result.snapshots_added
    return len(rows), ids[-1]
