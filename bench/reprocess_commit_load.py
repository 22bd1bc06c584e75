"""Load generated works into a fresh database with whatever `pipeline` is first on the path.

Run by `bench.reprocess_commits` as a script (`python bench/reprocess_commit_load.py URL FILE
TREE`) with `PYTHONPATH=TREE`, where TREE is a commit's `git archive` of `pipeline/`,
`migrations/` and `alembic.ini` (or the working tree): the database is migrated by that
commit's own migrations and filled by that commit's own flattener and loader, so the schema and
the stored values are exactly what that commit's `ingest` would have written. It imports only
the standard library, SQLAlchemy and that `pipeline`, nothing from `bench` (which an old tree
does not have). FILE holds one `aweme_detail` per line (JSON). Prints the seconds spent in
`load_works` (flatten excluded, as in `bench.reprocess_speed`).
"""

from __future__ import annotations

import itertools
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine

BATCH = 200
# The same stamp for every commit, so each database holds the same facts.
FETCHED_AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def main(url: str, payloads: Path, tree: Path) -> float:
    import pipeline
    from pipeline.db.load import load_works
    from pipeline.db.migrate import upgrade
    from pipeline.flatten import flatten

    # An editable install of today's project must not win over the tree under test.
    if not Path(pipeline.__file__).resolve().is_relative_to(tree.resolve()):
        raise SystemExit(f"pipeline imported from {pipeline.__file__}, not from {tree}")
    engine = create_engine(url)
    try:
        upgrade(engine)
        seconds = 0.0
        with payloads.open(encoding="utf-8") as lines:
            while batch := [json.loads(line) for line in itertools.islice(lines, BATCH)]:
                works = [flatten(detail, FETCHED_AT) for detail in batch]
                start = time.perf_counter()
                with engine.begin() as conn:
                    load_works(conn, works)
                seconds += time.perf_counter() - start
        return seconds
    finally:
        engine.dispose()


if __name__ == "__main__":
    print(main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])))
