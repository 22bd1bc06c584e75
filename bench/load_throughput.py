"""Works per second of `pipeline.db.load.load_works`: batched vs one transaction per work, and
the cost of loading the same batch again (idempotent: it must change, and cost, far less).

Payloads are generated (`pipeline.testing.payloads.make_aweme_detail`, the real templates with
varied ids, authors, music, hashtags, mentions, album images) and flattened before timing; only
the database load is timed. Side by side in one run, repeated, median reported:

- the same N works into two fresh databases: batches of 200 (one transaction each, as `ingest`
  does by default) vs batches of 1;
- then the same batches again into the batched database (every upsert finds nothing to change).

    python -m bench.load_throughput --works 1000 --repeat 3
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, text

from bench.common import (
    Result,
    create_database,
    drop_database,
    fmt_s,
    median,
    pg_server,
    print_results,
)
from pipeline.db.load import LoadResult, load_works
from pipeline.flatten import FlatWork, flatten
from pipeline.testing.payloads import make_aweme_detail, sample_aweme_ids

SEED = 7
FETCHED_AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
BATCHED, SINGLE = "bench_load_batched", "bench_load_single"


def make_works(n: int) -> list[FlatWork]:
    return [
        flatten(make_aweme_detail(aweme_id, seed=SEED, sim_t=0.0), FETCHED_AT)
        for aweme_id in sample_aweme_ids(n, seed=SEED)
    ]


def load(engine: Engine, works: Sequence[FlatWork], batch: int) -> tuple[float, LoadResult]:
    """Seconds to load `works` in transactions of `batch` works, and what was written."""
    total = LoadResult()
    start = time.perf_counter()
    for i in range(0, len(works), batch):
        with engine.begin() as conn:
            total += load_works(conn, works[i : i + batch])
    return time.perf_counter() - start, total


def empty(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE works, authors, music, hashtags CASCADE"))


def run(server_url: str, n: int, batch: int, repeat: int) -> list[Result]:
    started = time.perf_counter()
    works = make_works(n)
    children = sum(
        len(w.hashtags or ()) + len(w.mentions or ()) + len(w.images or ()) for w in works
    )
    print(
        f"generated and flattened {n:,} works ({children:,} hashtag/mention/image rows) "
        f"in {time.perf_counter() - started:.1f} s"
    )
    batched, single = create_database(server_url, BATCHED), create_database(server_url, SINGLE)
    try:
        load(batched, works[:batch], batch)  # warm up both pools and plan caches
        load(single, works[:batch], 1)
        first: list[float] = []
        one: list[float] = []
        again: list[float] = []
        for i in range(repeat):
            empty(batched)
            empty(single)
            arms = [(batched, batch, first), (single, 1, one)]
            for engine, size, times in arms if i % 2 == 0 else reversed(arms):
                seconds, result = load(engine, works, size)
                assert result.works_inserted == n, result  # a fresh load inserts every work
                times.append(seconds)
            seconds, result = load(batched, works, batch)
            assert result == LoadResult(), result  # nothing changed: nothing written
            again.append(seconds)
            print(
                f"run {i + 1}: batches of {batch}: {n / first[-1]:,.0f} works/s "
                f"({fmt_s(first[-1])}); batches of 1: {n / one[-1]:,.0f} works/s "
                f"({fmt_s(one[-1])}); re-load of the same batches: {fmt_s(again[-1])}"
            )
    finally:
        batched.dispose()
        single.dispose()
        drop_database(server_url, BATCHED)
        drop_database(server_url, SINGLE)
    speedup = median([o / f for o, f in zip(one, first, strict=True)])
    reload_ratio = median([f / a for f, a in zip(first, again, strict=True)])
    print(
        f"-> batches of {batch} vs batches of 1: {speedup:.1f}x the throughput "
        f"(median {n / median(first):,.0f} vs {n / median(one):,.0f} works/s)"
    )
    print(
        f"-> first load vs idempotent re-load of the same batches: {reload_ratio:.1f}x cheaper "
        f"(median {fmt_s(median(first))} vs {fmt_s(median(again))} for {n:,} works)"
    )
    return [
        Result(
            "load",
            f"load_works {n:,} works: batches of {batch} vs batches of 1",
            speedup,
            f"{n / median(first):,.0f} vs {n / median(one):,.0f} works/s",
        ),
        Result(
            "load",
            f"first load vs idempotent re-load (batches of {batch})",
            reload_ratio,
            f"{fmt_s(median(first))} vs {fmt_s(median(again))} for {n:,} works",
        ),
    ]


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--works", type=int, default=1_000, help="works to load per run")
    parser.add_argument("--batch", type=int, default=200, help="works per transaction")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs")
    args = parser.parse_args(argv)
    with pg_server() as server_url:
        return run(server_url, args.works, args.batch, args.repeat)


if __name__ == "__main__":
    print_results(main())
