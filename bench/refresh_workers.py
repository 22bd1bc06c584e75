"""How `ingest refresh` scales with worker processes on one database (docs/scaling.md).

N works (default 3,000) are all due; F fake services (default 4, each its own process,
amagi style, `rate` 1,000/s each, so their summed limit is far above what one worker's CPU
can use) serve them through one `--upstreams` file. Then, side by side in one run and
repeated with the order rotated, the same refresh is done by 1, 2 and 4 `ingest refresh`
processes started together (each claims its own pages of due works), and timed from the
start to the last exit, process start-up included. Every timed refresh finds the counts
unchanged (an untimed refresh before them recorded the snapshots), so each does the same
database work.

Reported: works per second, each as a ratio to 1 worker, and the workers' CPU time per 1,000
works. Workers add throughput only while the machine has idle cores: on a machine with fewer
cores than workers + services + PostgreSQL, the ratio shows the CPU, not the claims (one short
statement per page of works); the CPU per work shows what the extra processes cost.

    python -m bench.refresh_workers --works 3000 --services 4 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

from bench.common import Result, create_database, drop_database, median, pg_server, with_database
from pipeline.testing.payloads import sample_aweme_ids

DB = "bench_refresh_workers"
WORKERS = (1, 2, 4)
SERVICE_RATE = 1000
SERVICE_CONCURRENCY = 8
# Authors spread like a real catalogue's (the fake's default, 200, makes every batch write
# the same few author rows, and batches of different workers then queue on their locks).
AUTHORS = 100_000


@contextmanager
def fake_service(latency: float) -> Iterator[str]:
    """One fake service in a process of its own (so it does not share a GIL with anyone)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.testing.fake_upstream", "--port", "0",
         "--style", "amagi", "--latency", str(latency), "--author-pool", str(AUTHORS)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(10)


def pool_file(directory: Path, bases: list[str]) -> Path:
    path = directory / "upstreams.toml"
    path.write_text(
        "".join(
            f'[[upstream]]\nname = "svc{i}"\nbase = "{base}"\nstyle = "amagi"\n'
            f"rate = {SERVICE_RATE}\nconcurrency = {SERVICE_CONCURRENCY}\n\n"
            for i, base in enumerate(bases)
        )
    )
    return path


def make_due(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM work_claims"))
        conn.execute(text("UPDATE works SET next_check_at = now() - interval '1 hour'"))


def refresh(url: str, pool: Path, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the workers) for `workers` processes started together to
    refresh every due work."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DOUYIN_")}
    env["DATABASE_URL"] = url
    args = [sys.executable, "-m", "pipeline", "refresh", "--upstreams", str(pool), "--no-progress"]
    start = time.perf_counter()
    procs = [
        subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        for _ in range(workers)
    ]
    errors = [p.communicate()[1] for p in procs]
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the workers only: waited for
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    if any(p.returncode != 0 for p in procs):
        raise RuntimeError(f"a refresh worker failed: {[e[-500:] for e in errors]}")
    return seconds, cpu


def fetched_by_last_runs(engine: Engine, workers: int) -> int:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT coalesce((counts->>'fetched')::int, 0) FROM ingest_runs "
                "ORDER BY run_id DESC LIMIT :n"
            ),
            {"n": workers},
        )
        return sum(rows.scalars())


def run(server_url: str, works: int, services: int, repeat: int, latency: float) -> list[Result]:
    engine = create_database(server_url, DB)
    url = with_database(server_url, DB)
    ids = sample_aweme_ids(works, seed=7)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO works (aweme_id, kind, last_fetched_at, next_check_at) "
                "SELECT unnest(CAST(:ids AS bigint[])), 'video', now() - interval '2 days', "
                "now() - interval '1 hour'"
            ),
            {"ids": ids},
        )
    times: dict[int, list[float]] = {k: [] for k in WORKERS}
    cpus: dict[int, list[float]] = {k: [] for k in WORKERS}
    try:
        with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
            bases = [stack.enter_context(fake_service(latency)) for _ in range(services)]
            pool = pool_file(Path(tmp), bases)
            refresh(url, pool, 1)  # untimed: records the snapshots once
            for i in range(repeat):
                order = WORKERS[i % len(WORKERS) :] + WORKERS[: i % len(WORKERS)]
                for k in order:
                    make_due(engine)
                    seconds, cpu = refresh(url, pool, k)
                    done = fetched_by_last_runs(engine, k)
                    if done != works:
                        raise RuntimeError(f"{k} workers refreshed {done} of {works} works")
                    times[k].append(seconds)
                    cpus[k].append(cpu)
                    print(
                        f"  {k} worker(s): {works / seconds:,.0f} works/s ({seconds:.2f} s), "
                        f"workers' CPU {cpu:.2f} s"
                    )
    finally:
        engine.dispose()
        drop_database(server_url, DB)
    base = median(times[1])
    results = []
    print(f"\n{works:,} due works, {services} services x {SERVICE_RATE}/s, {os.cpu_count()} CPUs:")
    for k in WORKERS:
        t = median(times[k])
        per_k = 1000 * median(cpus[k]) / works
        print(
            f"-> {k} worker(s): {works / t:,.0f} works/s, {base / t:.2f}x one worker; "
            f"workers' CPU {per_k:.1f} s per 1,000 works (process start-up included)"
        )
        results.append(
            Result(
                "refresh_workers",
                f"refresh {works:,} due works: {k} workers vs 1",
                base / t,
                f"{works / t:,.0f} works/s, CPU {per_k:.1f} s/1k works ({os.cpu_count()} CPUs, "
                f"load {os.getloadavg()[0]:.1f})",
            )
        )
    return results


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--works", type=int, default=3000, help="due works to refresh")
    parser.add_argument("--services", type=int, default=4, help="fake services in the pool")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per worker count")
    parser.add_argument("--latency", type=float, default=0.0, help="fake answer delay, seconds")
    args = parser.parse_args(argv)
    with pg_server() as server_url:
        return run(server_url, args.works, args.services, args.repeat, args.latency)


if __name__ == "__main__":
    from bench.common import print_results

    print_results(main())
