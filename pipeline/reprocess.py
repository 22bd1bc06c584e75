"""Rebuild the tables from `raw_payloads` without fetching (after the flattener improved)."""

from __future__ import annotations

import logging
from collections import Counter

from sqlalchemy import Engine, select

from pipeline.db.load import load_works
from pipeline.db.models import RawPayload
from pipeline.db.runs import finish_run, start_run
from pipeline.flatten import FlatWork, NotAWork, flatten

log = logging.getLogger(__name__)


def reprocess(engine: Engine, batch_size: int = 500) -> Counter[str]:
    """Flatten every stored payload again and load it; one transaction per batch (keyset paged,
    so memory stays bounded and a crash keeps the batches already done)."""
    counts: Counter[str] = Counter()
    with engine.begin() as conn:
        run_id = start_run(conn, "reprocess", {"batch_size": batch_size})
    raw = RawPayload.__table__
    after = -(2**63)
    while True:
        with engine.begin() as conn:
            rows = conn.execute(
                select(raw.c.aweme_id, raw.c.fetched_at, raw.c.payload)
                .where(raw.c.aweme_id > after)
                .order_by(raw.c.aweme_id)
                .limit(batch_size)
            ).all()
            if not rows:
                break
            works: list[FlatWork] = []
            for row in rows:
                try:
                    works.append(flatten(row.payload, row.fetched_at))
                except NotAWork as exc:
                    counts["not_a_work"] += 1
                    log.warning("raw payload %s is not a work: %s", row.aweme_id, exc)
            result = load_works(conn, works, resync_children=True)
            counts["payloads"] += len(rows)
            counts["works_updated"] += result.works_updated
            counts["works_new"] += result.works_inserted
            counts["snapshots_added"] += result.snapshots_added
            after = rows[-1].aweme_id
    with engine.begin() as conn:
        finish_run(conn, run_id, "succeeded", counts, None)
    return counts
