"""Where `ingest`'s time goes: a sampling profile of one real run, summed by category.

One `ingest` of N links (the real command in a subprocess, against `bench.prerendered_fake`,
`--rate 100000 --concurrency 64`, fresh database) is sampled twice with py-spy (100 Hz):

1. `--gil --threads --nonblocking`: only the thread holding the interpreter lock is sampled,
   so the shares are shares of Python CPU. Each sample goes to the category of its innermost
   frame that has one (psycopg's Python code called by the loader counts as psycopg, ...).
2. `--idle --native --threads`: every thread, idle or not, native frames included, so the
   event-loop thread's wall time splits into idle in epoll / waiting for the GIL / running, and
   the writer thread's into waiting on PostgreSQL / running / idle.

py-spy is a dev dependency (`make setup` installs it); without it this benchmark says so and
returns nothing. It needs ptrace on its own child, which containers normally allow.

    python -m bench.profile --links 5000
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from bench.common import Result, create_database, drop_database, pg_server, print_results
from bench.common import with_database as url_of
from bench.end_to_end import RUN_DB, link, prerendered_fake
from pipeline.testing.payloads import sample_aweme_ids

# (category, what a frame's "function (file" text contains), innermost match wins.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("start-up (imports, GC freeze)", ("<frozen importlib", "settle_gc (")),
    ("JSON decode of responses", ("pipeline/upstream/decode.py", "json/decoder.py")),
    ("flatten", ("pipeline/flatten.py",)),
    ("psycopg (Python side)", ("psycopg/",)),
    ("SQLAlchemy", ("sqlalchemy/",)),
    ("loader: rows, merge, raw payload text", ("pipeline/db/load.py", "pipeline/db/merge.py",
                                               "pipeline/db/payloads.py", "pipeline/rows.py")),
    ("aiohttp / HTTP", ("aiohttp/", "yarl/", "multidict/")),
    ("upstream client (contracts, limiter, retries)", ("pipeline/upstream/",)),
    ("orchestration (run, batches, records)", ("pipeline/run.py", "pipeline/batches.py",
                                               "pipeline/ingest.py", "pipeline/db/",
                                               "pipeline/inputs.py", "pipeline/input_files.py")),
    ("asyncio", ("asyncio/",)),
    ("threads, queues, futures", ("threading.py", "concurrent/futures", "queue.py")),
)  # fmt: skip
UNATTRIBUTED = "no Python frame (interpreter start and exit)"


def record(flags: list[str], n: int, out: Path) -> None:
    """Run one `ingest` of n links under py-spy with `flags`, raw stacks into `out`."""
    with (
        pg_server() as server_url,
        prerendered_fake() as base,
        tempfile.TemporaryDirectory() as tmp,
    ):
        create_database(server_url, RUN_DB).dispose()
        try:
            links = Path(tmp) / "links.txt"
            links.write_text("".join(link(i) + "\n" for i in sample_aweme_ids(n, seed=3)))
            ingest = [
                sys.executable, "-m", "pipeline", "run", str(links),
                "--database-url", url_of(server_url, RUN_DB), "--api-base", base,
                "--rate", "100000", "--concurrency", "64", "--no-progress", "-q",
            ]  # fmt: skip
            spy = [_py_spy(), "record", "-r", "100", "--format", "raw", *flags, "-o", str(out)]
            subprocess.run([*spy, "--", *ingest], check=True, capture_output=True)
        finally:
            drop_database(server_url, RUN_DB)


def _py_spy() -> str:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or "py-spy"


def stacks(path: Path) -> list[tuple[list[str], int]]:
    """(frames root first, samples) per line of py-spy's raw output."""
    found = []
    for line in path.read_text().splitlines():
        stack, count = line.rsplit(" ", 1)
        found.append((stack.split(";"), int(count)))
    return found


def category(frames: list[str]) -> str:
    for frame in reversed(frames[1:]):  # frames[0] names the thread
        for name, marks in CATEGORIES:
            if any(mark in frame for mark in marks):
                return name
    return UNATTRIBUTED


def by_category(path: Path) -> tuple[Counter[str], Counter[str], int]:
    """Samples per category and per innermost Python function, and the total."""
    cats: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for frames, count in stacks(path):
        total += count
        cats[category(frames)] += count
        python = [f for f in frames[1:] if ".py" in f or "<frozen" in f]
        if python:
            leaves[python[-1].split(":")[0] + ")"] += count
    return cats, leaves, total


def thread_states(path: Path) -> dict[str, Counter[str]]:
    """Wall-time states of the event-loop thread (MainThread) and of the database writer (the
    `to_thread` worker that ran the most batches)."""
    loop: Counter[str] = Counter()
    workers: dict[str, Counter[str]] = {}
    for frames, count in stacks(path):
        thread, text = frames[0], ";".join(frames)
        tail = ";".join(frames[-4:])
        gil = "pthread_cond_timedwait" in tail or "take_gil" in tail
        if thread.endswith("MainThread"):
            state = "waiting for the GIL" if gil else "running"
            if not gil and "epoll_wait" in tail:
                state = "idle (epoll)"
            loop[state] += count
        elif "asyncio_" in thread:
            if "BatchCommitter.store" not in text:
                state = "idle or other work"
            elif "Connection.wait" in text and ("poll" in tail or "recv" in tail):
                state = "waiting on PostgreSQL"
            else:
                state = "waiting for the GIL" if gil else "running"
            workers.setdefault(thread, Counter())[state] += count
    writer = max(workers.values(), key=lambda c: c["running"] + c["waiting on PostgreSQL"])
    return {"event loop": loop, "writer": writer}


def run(n: int) -> list[Result]:
    if shutil.which(_py_spy()) is None:
        print("py-spy is not installed (pip install py-spy): no profile")
        return []
    with tempfile.TemporaryDirectory() as tmp:
        gil, idle = Path(tmp) / "gil.txt", Path(tmp) / "idle.txt"
        record(["--gil", "--threads", "--nonblocking"], n, gil)
        record(["--idle", "--native", "--threads"], n, idle)
        cats, leaves, total = by_category(gil)
        states = thread_states(idle)
    print(f"\nGIL-holding samples of one ingest of {n:,} links: {total:,} (100 Hz)")
    for name, count in cats.most_common():
        print(f"  {count / total:6.1%}  {name}")
    print("top functions (self):")
    for name, count in leaves.most_common(12):
        print(f"  {count / total:6.1%}  {name}")
    for thread, counter in states.items():
        seen = sum(counter.values())
        shares = ", ".join(f"{s} {c / seen:.0%}" for s, c in counter.most_common())
        print(f"{thread} thread, wall time: {shares}")
    top_name, top = cats.most_common(1)[0]
    loop = states["event loop"]
    return [
        Result(
            "profile",
            f"largest category of Python CPU, ingest {n:,} links",
            None,
            f"{top_name}: {top / total:.1%} of {total:,} GIL samples",
        ),
        Result(
            "profile",
            "event-loop thread waiting for the GIL, share of wall time",
            None,
            f"{loop['waiting for the GIL'] / max(1, sum(loop.values())):.0%} "
            f"(idle in epoll {loop['idle (epoll)'] / max(1, sum(loop.values())):.0%})",
        ),
    ]


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--links", type=int, default=5_000, help="links ingested per profile")
    args = parser.parse_args(argv)
    return run(args.links)


if __name__ == "__main__":
    print_results(main())
