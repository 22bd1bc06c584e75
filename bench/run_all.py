"""Run every benchmark with modest defaults on one throwaway PostgreSQL, then print one table.

python -m bench.run_all            # or: make bench   (about 9 minutes on 2 quiet cores)

Bigger sizes are options of each benchmark (see bench/README.md), e.g. peak RSS at 200,000
links: `python -m bench.end_to_end --links 20000 200000 --repeat 1 --no-bare --gc-arm 0`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from bench import (
    end_to_end,
    fetch_rate,
    load_throughput,
    load_vs_copy,
    offload,
    profile,
    raw_storage,
    refresh_due,
    refresh_workers,
    reprocess_speed,
)
from bench.common import Result, pg_server, print_results

RUNS: tuple[tuple[str, Callable[[list[str]], list[Result]], list[str]], ...] = (
    ("refresh_due", refresh_due.main, ["--works", "1000000", "--repeat", "3"]),
    ("load_throughput", load_throughput.main, ["--works", "600", "--repeat", "3"]),
    ("load_vs_copy", load_vs_copy.main, ["--works", "2000", "--repeat", "3"]),
    ("raw_storage", raw_storage.main, ["--works", "1000", "--repeat", "2"]),
    ("fetch_rate", fetch_rate.main, ["--rate", "20", "--works", "80"]),
    ("end_to_end", end_to_end.main, ["--links", "5000", "--repeat", "3"]),
    ("end_to_end", end_to_end.main, ["--links", "20000", "--repeat", "1", "--gc-arm", "0"]),
    # The commits' arm at 20,000 works: the size the audit measured `8b616fd` at (issue 14).
    (
        "reprocess_speed",
        reprocess_speed.main,
        ["--works", "10000", "--repeat", "3", "--commit-works", "20000"],
    ),
    ("offload", offload.main, ["--works", "1000"]),
    ("profile", profile.main, ["--links", "5000"]),
    ("refresh_workers", refresh_workers.main, ["--works", "1500", "--repeat", "1"]),
)


def main() -> None:
    started = time.perf_counter()
    results: list[Result] = []
    with pg_server() as server_url:
        # Every benchmark honours BENCH_DATABASE_URL, so they all share this one server.
        os.environ["BENCH_DATABASE_URL"] = server_url
        try:
            for title, run, argv in RUNS:
                print(f"\n=== bench.{title} {' '.join(argv)}", flush=True)
                results += run(argv)
        finally:
            del os.environ["BENCH_DATABASE_URL"]
    print_results(results)
    print(f"\nall benchmarks: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
