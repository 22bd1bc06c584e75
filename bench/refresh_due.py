"""How fast `ingest refresh` picks its due works out of a big `works` table.

Builds N works (default 1,000,000) with `INSERT … SELECT … FROM generate_series`: publish times
over six years (2% younger than a day, 8% younger than a month), each last checked at a random
moment within 1.03 of its policy interval (hourly / daily / weekly), so about 3% are due, and 2%
gone. Every work has its `share_links` row, since the page query looks its link up per row.

Then, in one run, side by side and repeated: pick 10,000 due works exactly as refresh does
(`pipeline.refresh.claim_due`, 500-work pages claimed in one transaction, rolled back after),
with the default policy (`next_check_at`) and with `--stale-after 7 days` (`last_fetched_at`),
against the same data in a twin database that lacks only the two partial due indexes, so
PostgreSQL must scan `works` sequentially for every page.

Why a twin database rather than `SET enable_indexscan = off; SET enable_bitmapscan = off`: those
settings also take the index away from the per-row `share_links` lookup in the page query,
which then scans all of `share_links` once per returned work (hours at 1M rows), so the ratio
would measure that lookup, not the due selection.

    python -m bench.refresh_due --works 1000000 --repeat 5
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, create_engine, text

from bench.common import (
    Result,
    create_database,
    drop_database,
    fmt_s,
    median,
    pg_server,
    print_results,
    timed,
    with_database,
)
from pipeline.refresh import RefreshOptions, _due_query, claim_due

DB, TWIN = "bench_refresh_due", "bench_refresh_due_noindex"
DUE_INDEXES = ("ix_works_next_check_at_available", "ix_works_last_fetched_at_available")
AS_OF = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

# Nested so that each random() is drawn once per row (PostgreSQL never flattens a subquery
# whose target list calls a volatile function).
_BUILD_WORKS = """
INSERT INTO works (aweme_id, kind, description, created_at, first_seen_at, last_fetched_at,
                   next_check_at, gone_at, gone_reason)
SELECT (extract(epoch FROM created_at)::bigint << 32) | g, 'video', '', created_at,
       created_at, last_fetched_at, last_fetched_at + every,
       CASE WHEN gone THEN last_fetched_at END, CASE WHEN gone THEN 'gone' END
FROM (
  SELECT g, created_at, every, gone,
         greatest(created_at, CAST(:as_of AS timestamptz) - random() * 1.03 * every)
           AS last_fetched_at
  FROM (
    SELECT g, gone,
           CAST(:as_of AS timestamptz) - CASE
             WHEN r < 0.02 THEN random() * interval '1 day'
             WHEN r < 0.10 THEN interval '1 day' + random() * interval '29 days'
             ELSE interval '30 days' + random() * interval '2160 days' END AS created_at,
           CASE WHEN r < 0.02 THEN interval '1 hour'
                WHEN r < 0.10 THEN interval '1 day'
                ELSE interval '7 days' END AS every
    FROM (SELECT g, random() AS r, random() < 0.02 AS gone
          FROM generate_series(1, :n) g) AS draws
  ) AS ages
) AS checks
"""
_BUILD_LINKS = """
INSERT INTO share_links (link_key, url, aweme_id, last_outcome, attempts, source,
                         first_seen_at, last_seen_at)
SELECT 'aweme:' || aweme_id, 'https://www.douyin.com/video/' || aweme_id, aweme_id, 'loaded',
       1, 'urls.txt:' || row_number() OVER (), first_seen_at, last_fetched_at
FROM works
"""

_FORCE_SEQ = "SET LOCAL enable_indexscan = off; SET LOCAL enable_bitmapscan = off"

VARIANTS = {
    "default policy": RefreshOptions(),
    "--stale-after 7d": RefreshOptions(stale_after=timedelta(days=7)),
}


def build(server_url: str, n: int) -> tuple[Engine, Engine]:
    """The indexed database with `n` works, and its twin without the due indexes."""
    engine = create_database(server_url, DB)
    seconds, _ = timed(lambda: _fill(engine, n))
    with engine.connect() as conn:
        total, gone, due, stale = conn.execute(
            text(
                "SELECT count(*), count(gone_at), "
                "count(*) FILTER (WHERE gone_at IS NULL AND next_check_at <= :t), "
                "count(*) FILTER (WHERE gone_at IS NULL AND last_fetched_at <= :t - :s) "
                "FROM works"
            ),
            {"t": AS_OF, "s": timedelta(days=7)},
        ).one()
    print(
        f"built {total:,} works + {total:,} share_links in {seconds:.1f} s: {gone:,} gone, "
        f"{due:,} due by the policy ({due / total:.1%}), {stale:,} by --stale-after 7d"
    )
    engine.dispose()  # a template database must have no connections
    twin = create_database(server_url, TWIN, template=DB)
    with twin.begin() as conn:
        for index in DUE_INDEXES:
            conn.execute(text(f"DROP INDEX {index}"))
    return create_engine(with_database(server_url, DB)), twin


def _fill(engine: Engine, n: int) -> None:
    with engine.begin() as conn:
        conn.execute(text("SELECT setseed(0.42)"))
        conn.execute(text(_BUILD_WORKS), {"as_of": AS_OF, "n": n})
        conn.execute(text(_BUILD_LINKS))
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE works"))
        conn.execute(text("VACUUM ANALYZE share_links"))


def pick(engine: Engine, options: RefreshOptions, want: int) -> int:
    """Collect `want` due works the way RefreshJob does; returns how many were found."""
    got = 0
    with engine.connect() as conn:
        while got < want and (page := claim_due(conn, options, AS_OF, run_id=0, page=500)):
            got += len(page)
        conn.rollback()  # the claims go: every pick starts from the same due works
    return got


def explain(
    engine: Engine, options: RefreshOptions, *, analyze: bool = True, setup: str = ""
) -> str:
    sql, _ = _due_query(options)
    params: dict[str, object] = {
        "as_of": AS_OF,
        "stale": options.stale_after,
        "max_age": None,
        "authors": [],
        "page": 500,
    }
    how = "(ANALYZE, BUFFERS) " if analyze else ""
    with engine.connect() as conn:
        for statement in filter(None, setup.split(";")):
            conn.execute(text(statement))
        rows = conn.execute(text(f"EXPLAIN {how}{sql}"), params).scalars()
        plan = "\n".join(rows)
        conn.rollback()  # ends any SET LOCAL of `setup`
        return plan


def _scans(plan: str) -> str:
    return "; ".join(line.strip(" ->") for line in plan.splitlines() if "Scan" in line)


def run(server_url: str, n: int, want: int, repeat: int) -> tuple[list[Result], bool]:
    indexed, twin = build(server_url, n)
    ok = True
    results: list[Result] = []
    try:
        for name, options in VARIANTS.items():
            plan = explain(indexed, options)
            uses_index = "Seq Scan on works" not in plan and "ix_works_" in plan
            ok = ok and uses_index
            print(f"\nEXPLAIN (ANALYZE, BUFFERS) of one page, {name}, indexed:\n{plan}")
            print(f"-> index scan, no 'Seq Scan on works': {'yes' if uses_index else 'NO'}")
            twin_plan = explain(twin, options)
            print(f"twin without the due indexes: {_scans(twin_plan)}")
            forced = explain(indexed, options, analyze=False, setup=_FORCE_SEQ)
            print(f"indexed db with {_FORCE_SEQ!r} (not timed): {_scans(forced)}")

        for name, options in VARIANTS.items():
            pick(indexed, options, want)  # warm caches and connection pools alike
            pick(twin, options, want)
            fast: list[float] = []
            slow: list[float] = []
            ratios: list[float] = []
            for i in range(repeat):
                # Alternate who goes first so neither always runs on a warmer machine.
                order = [(indexed, fast), (twin, slow)]
                for engine, times in order if i % 2 == 0 else reversed(order):
                    start = time.perf_counter()
                    got = pick(engine, options, want)
                    times.append(time.perf_counter() - start)
                ratios.append(slow[-1] / fast[-1])
            print(
                f"\n{name}: {got:,} due works per pick, {repeat} runs: "
                f"indexed {', '.join(fmt_s(t) for t in fast)}; "
                f"sequential {', '.join(fmt_s(t) for t in slow)}"
            )
            print(
                f"-> indexed due-selection vs forced sequential scan: "
                f"{median(ratios):.0f}x faster (median {fmt_s(median(fast))} vs "
                f"{fmt_s(median(slow))})"
            )
            results.append(
                Result(
                    "refresh_due",
                    f"pick {got:,} due of {n:,}, {name}: index vs seq scan",
                    median(ratios),
                    f"indexed {fmt_s(median(fast))}, seq scan {fmt_s(median(slow))}",
                )
            )
    finally:
        indexed.dispose()
        twin.dispose()
        drop_database(server_url, TWIN)
        drop_database(server_url, DB)
    return results, ok


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--works", type=int, default=1_000_000, help="rows in works")
    parser.add_argument("--pick", type=int, default=10_000, help="due works to collect")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per variant")
    args = parser.parse_args(argv)
    with pg_server() as server_url:
        results, ok = run(server_url, args.works, args.pick, args.repeat)
    if not ok:
        print("the indexed due selection did not use its index", file=sys.stderr)
    return results


if __name__ == "__main__":
    print_results(main())
