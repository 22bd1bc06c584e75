"""Works/s of `ingest reprocess` (`pipeline.reprocess.reprocess`) vs the previous algorithm on
today's loader (`bench.reprocess_baseline`), vs the first load of the same works, and vs the
actual code of earlier commits (`bench.reprocess_commits`).

N generated works (`make_aweme_detail`, the real templates with varied ids, authors, hashtags)
are loaded once with `load_works` in batches of 200 (timed: the first load); then, side by side
on that database, order rotated between repeats, both reprocess implementations rebuild every
table from `raw_payloads` (nothing changed, so nothing is written: read + flatten + merge; a
run that reports a `works` row updated stops the benchmark). `bench.reprocess_baseline` calls
today's `load_works`, so that ratio leaves out every loader gain: it measures the read /
decode / pool changes only. The issue's "today's works/s" is the code on `main` when it was
filed: `bench.reprocess_commits` runs that commit's own `ingest reprocess` (its own schema,
loader and CLI) against today's, side by side (`--commits`, `--commit-works`).

    python -m bench.reprocess_speed --works 5000 --repeat 3 --commits 8b616fd 8f8a72a
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import Engine, func, select

from bench import reprocess_baseline, reprocess_commits
from bench.common import (
    Result,
    create_database,
    drop_database,
    fmt_s,
    median,
    pg_server,
    print_results,
)
from pipeline.db.load import load_works, table
from pipeline.db.models import RawPayload
from pipeline.flatten import flatten
from pipeline.reprocess import reprocess
from pipeline.runtime import steady_gc
from pipeline.testing.payloads import make_aweme_detail, sample_aweme_ids

DB = "bench_reprocess"
SEED = 5
FETCHED_AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def first_load(engine: Engine, n: int, batch: int = 200) -> float:
    """Seconds to load n generated works (flatten excluded, as the loader sees them)."""
    ids = sample_aweme_ids(n, seed=SEED)
    seconds = 0.0
    for i in range(0, n, batch):
        works = [
            flatten(make_aweme_detail(aweme_id, seed=SEED, sim_t=0.0), FETCHED_AT)
            for aweme_id in ids[i : i + batch]
        ]
        start = time.perf_counter()
        with engine.begin() as conn:
            load_works(conn, works)
        seconds += time.perf_counter() - start
    return seconds


def _as_the_command_runs_it(engine: Engine) -> Counter[str]:
    """`ingest reprocess` runs it under `pipeline.runtime.steady_gc` (the previous version
    ran with CPython's default collector settings)."""
    with steady_gc():
        return reprocess(engine)


def run(server_url: str, n: int, repeat: int) -> list[Result]:
    engine = create_database(server_url, DB)
    try:
        loaded = first_load(engine, n)
        with engine.connect() as conn:
            stored = conn.execute(select(func.count()).select_from(table(RawPayload))).scalar_one()
        print(f"first load: {n:,} works in {fmt_s(loaded)} ({n / loaded:,.0f} works/s)")
        arms: dict[str, Callable[[], object]] = {
            "reprocess": lambda: _as_the_command_runs_it(engine),
            "previous": lambda: reprocess_baseline.reprocess(engine),
        }
        times: dict[str, list[float]] = {name: [] for name in arms}
        for i in range(repeat):
            names = list(arms) if i % 2 == 0 else list(reversed(arms))
            for name in names:
                start = time.perf_counter()
                counts = arms[name]()
                times[name].append(time.perf_counter() - start)
                assert counts["payloads"] == stored, counts  # type: ignore[index]
                # Nothing changed since the load: a reprocess that writes a row is a bug.
                assert counts["works_updated"] == 0, counts  # type: ignore[index]
            print(
                f"run {i + 1}: reprocess {n / times['reprocess'][-1]:,.0f} works/s, "
                f"baseline (old algorithm, today's loader) {n / times['previous'][-1]:,.0f} works/s"
            )
    finally:
        engine.dispose()
        drop_database(server_url, DB)
    ours = n / median(times["reprocess"])
    speedup = median([p / r for p, r in zip(times["previous"], times["reprocess"], strict=True)])
    print(f"-> reprocess {speedup:.2f}x bench.reprocess_baseline; {ours / (n / loaded):.2f}x "
          f"the first load")  # fmt: skip
    return [
        Result(
            "reprocess",
            f"reprocess {n:,} works: now / 8f8a72a's algorithm on today's loader",
            speedup,
            f"{ours:,.0f} vs {n / median(times['previous']):,.0f} works/s",
        ),
        Result(
            "reprocess",
            f"reprocess {n:,} works / first load of the same works",
            ours / (n / loaded),
            f"{ours:,.0f} vs {n / loaded:,.0f} works/s",
        ),
    ]


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--works", type=int, default=5_000, help="works stored, then reprocessed")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per implementation")
    parser.add_argument(
        "--commits",
        nargs="*",
        default=reprocess_commits.DEFAULT_COMMITS,
        help="earlier commits whose own `ingest reprocess` runs against today's (none: skip)",
    )
    parser.add_argument(
        "--commit-works", type=int, help="works for the commits' arm (default: --works)"
    )
    args = parser.parse_args(argv)
    with pg_server() as server_url:
        results = run(server_url, args.works, args.repeat)
        if args.commits:
            n = args.commit_works or args.works
            results += reprocess_commits.run(server_url, n, args.repeat, args.commits)
        return results


if __name__ == "__main__":
    print_results(main())
