"""`ingest reprocess` as it was before it streamed and parallelised (commit 8f8a72a), kept so
`bench.reprocess_speed` can compare the two side by side: keyset pages of 500 read with
`SELECT raw_payloads …` (psycopg decodes the JSONB with `json.loads`), flattened in this
process, merged with `load_works(reprocess=True)`, one transaction per page."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import Engine, Table, select, update

from pipeline.db.load import load_works, table
from pipeline.db.models import RawPayload
from pipeline.db.payloads import LOADER_VERSION, stored_payloads
from pipeline.flatten import FlatWork, NotAWork, flatten


def reprocess(engine: Engine, batch_size: int = 500) -> Counter[str]:
    counts: Counter[str] = Counter()
    raw: Table = table(RawPayload)
    after = -(2**63)
    while True:
        with engine.begin() as conn:
            query = select(raw).where(raw.c.aweme_id > after)
            rows = conn.execute(query.order_by(raw.c.aweme_id).limit(batch_size)).mappings().all()
            if not rows:
                return counts
            works: list[FlatWork] = []
            for row in rows:
                for fetched_at, payload in stored_payloads(row):
                    try:
                        works.append(flatten(payload, fetched_at))
                    except NotAWork:
                        counts["not_a_work"] += 1
            result = load_works(conn, works, reprocess=True)
            ids = [row["aweme_id"] for row in rows]
            conn.execute(
                update(raw)
                .where(raw.c.aweme_id.in_(ids), raw.c.loader_version != LOADER_VERSION)
                .values(loader_version=LOADER_VERSION)
            )
            counts["payloads"] += len(rows)
            counts["works_updated"] += result.works_updated
            after = ids[-1]
