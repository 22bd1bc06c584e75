"""Run every benchmark with modest defaults on one throwaway PostgreSQL, then print one table.

python -m bench.run_all            # or: make bench   (about 1.5 minutes on 2 cores)
"""

from __future__ import annotations

import os
import time

from bench import fetch_rate, load_throughput, refresh_due, refresh_workers
from bench.common import Result, pg_server, print_results


def main() -> None:
    started = time.perf_counter()
    results: list[Result] = []
    with pg_server() as server_url:
        # Every benchmark honours BENCH_DATABASE_URL, so they all share this one server.
        os.environ["BENCH_DATABASE_URL"] = server_url
        try:
            for title, run, argv in (
                ("refresh_due", refresh_due.main, ["--works", "1000000", "--repeat", "3"]),
                ("load_throughput", load_throughput.main, ["--works", "600", "--repeat", "3"]),
                ("fetch_rate", fetch_rate.main, ["--rate", "20", "--works", "80"]),
                ("refresh_workers", refresh_workers.main, ["--works", "1500", "--repeat", "1"]),
            ):
                print(f"\n=== bench.{title} {' '.join(argv)}", flush=True)
                results += run(argv)
        finally:
            del os.environ["BENCH_DATABASE_URL"]
    print_results(results)
    print(f"\nall benchmarks: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
