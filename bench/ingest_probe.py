"""`ingest` with a probe: times the cyclic garbage collector (`gc.callbacks`) and, with
`--default-gc`, runs with CPython's default collector settings instead of `pipeline.runtime`'s.

    python -m bench.ingest_probe [--default-gc] OUT.json -- run links.txt --database-url …

Writes {"gc_s", "collections", "full_collections", "cpu_s", "peak_rss_mb"} to OUT.json when the
command exits.
`BENCH_GC_THRESHOLDS=50000,5,5` tries other thresholds than `pipeline.runtime.RUN_THRESHOLDS`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def _untuned() -> Iterator[None]:
    yield


def _peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM). Not `ru_maxrss` from the parent's `wait4`: that
    counts the parent's pages the child shared between fork and exec, so a big benchmark
    process would set it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main() -> None:
    args = sys.argv[1:]
    default_gc = "--default-gc" in args
    args = [a for a in args if a != "--default-gc"]
    out, rest = args[0], args[args.index("--") + 1 :]
    stats: dict[str, Any] = {"gc_s": 0.0, "collections": 0, "full_collections": 0}
    started: list[float] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started.append(time.perf_counter())
        elif started:
            stats["gc_s"] += time.perf_counter() - started.pop()
            stats["collections"] += 1
            stats["full_collections"] += info["generation"] == 2

    gc.callbacks.append(on_gc)
    if thresholds := os.environ.get("BENCH_GC_THRESHOLDS"):  # e.g. "50000,5,5": try others
        import pipeline.runtime

        pipeline.runtime.RUN_THRESHOLDS = tuple(int(t) for t in thresholds.split(","))  # type: ignore[assignment]
    if default_gc:
        import pipeline.cli.refresh
        import pipeline.cli.run

        pipeline.cli.run.steady_gc = _untuned  # type: ignore[assignment]
        pipeline.cli.refresh.steady_gc = _untuned  # type: ignore[assignment]
    from pipeline.cli import main as ingest

    try:
        ingest(rest)
    finally:
        stats["cpu_s"] = time.process_time()
        stats["peak_rss_mb"] = _peak_rss_mb()
        with open(out, "w") as f:
            json.dump(stats, f)


if __name__ == "__main__":
    main()
