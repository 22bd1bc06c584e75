"""`ingest` end to end vs a bare aiohttp loop against the same fake, same concurrency, with each
of two fakes.

Side by side in one run, order rotated between repeats, for each fake and each size N:

- `ingest`: the real command in a subprocess (`python -m pipeline run links.txt --rate 100000
  --concurrency 64`) into a fresh database (`CREATE DATABASE … TEMPLATE` a migrated one);
  works/s = N / (finished_at − started_at) of its run record (start-up excluded), CPU of the
  process from `wait4`, its own peak RSS (VmHWM) from `bench.ingest_probe`;
- bare loops: 64 workers GET the same links from the same fake, then `json.loads` (or
  `orjson.loads`) the body. No flatten, no database: the ceiling of fetch + parse in Python.

Two fakes, each in a process of its own, and each ratio names the one it was measured against:

- `bundled`: `python -m pipeline.testing.fake_upstream`, which builds and serialises every
  payload per request (~1.6 ms of CPU): the setup of issue 14's table and its >= 0.6 target.
  It caps any client near 600 requests/s on 2 cores, so the bare loops mostly measure the fake;
- `prerendered` (`bench.prerendered_fake`): the same answers rendered before timing, ~0.35 ms
  per request: the bare loops run near their own ceiling, the harder ratio.

    python -m bench.end_to_end --links 5000 20000 --repeat 3
    python -m bench.end_to_end --links 5000 --fakes bundled        # the issue's setup only
    python -m bench.end_to_end --links 20000 200000 --repeat 1 --no-bare --fakes prerendered
                                                                   # RSS at 200k (~12 min)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from sqlalchemy import text

from bench.common import (
    Result,
    create_database,
    drop_database,
    median,
    pg_server,
    postgres_cpu_s,
    print_results,
    with_database,
)
from pipeline.testing.fake_upstream import SEED_PATH
from pipeline.testing.payloads import sample_aweme_ids

TEMPLATE_DB, RUN_DB = "bench_e2e_template", "bench_e2e_run"
CONCURRENCY = 64
IDS_SEED = 11


@dataclass(frozen=True, slots=True)
class IngestArm:
    works_per_s: float
    cpu_ms_per_work: float
    peak_rss_mb: float
    gc_share: float  # of the process's CPU time, in the cyclic garbage collector
    pg_ms_per_work: float | None  # PostgreSQL's CPU (embedded server only)


def link(aweme_id: int) -> str:
    return f"https://www.douyin.com/video/{aweme_id}"


@contextlib.contextmanager
def prerendered_fake(templates: int = 256) -> Iterator[str]:
    """Base URL of `bench.prerendered_fake` in a subprocess; stopped on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.prerendered_fake", "--templates", str(templates)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def bundled_fake() -> Iterator[str]:
    """Base URL of `python -m pipeline.testing.fake_upstream` (any free port); stopped on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.testing.fake_upstream", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip()
    finally:
        proc.send_signal(signal.SIGINT)  # it serves until Ctrl-C
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


FAKES: dict[str, Callable[[], contextlib.AbstractContextManager[str]]] = {
    "bundled": bundled_fake,
    "prerendered": prerendered_fake,
}


def run_ingest(
    server_url: str, base: str, links_file: Path, n: int, *, default_gc: bool = False
) -> IngestArm:
    """One `ingest` run (through `bench.ingest_probe`, which times the garbage collector) into
    a fresh copy of the migrated template database."""
    engine = create_database(server_url, RUN_DB, template=TEMPLATE_DB)
    probe = links_file.with_suffix(".probe.json")
    try:
        cmd = [
            sys.executable, "-m", "bench.ingest_probe", str(probe),
            *(["--default-gc"] if default_gc else []),
            "--", "run", str(links_file),
            "--database-url", with_database(server_url, RUN_DB), "--api-base", base,
            "--rate", "100000", "--concurrency", str(CONCURRENCY), "--no-progress", "-q",
        ]  # fmt: skip
        pg_before = postgres_cpu_s(server_url)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        pg_after = postgres_cpu_s(server_url)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise RuntimeError(f"ingest exited {proc.returncode}")
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT extract(epoch FROM finished_at - started_at), counts "
                    "FROM ingest_runs ORDER BY run_id DESC LIMIT 1"
                )
            ).one()
        seconds, counts = float(row[0]), row[1]
        if counts.get("loaded") != n:
            raise RuntimeError(f"ingest did not load every work: {counts}")
        cpu = usage.ru_utime + usage.ru_stime
        probed = json.loads(probe.read_text())
        pg = None if pg_before is None or pg_after is None else (pg_after - pg_before) * 1000 / n
        gc_share = probed["gc_s"] / cpu
        return IngestArm(n / seconds, cpu * 1000 / n, probed["peak_rss_mb"], gc_share, pg)
    finally:
        engine.dispose()
        drop_database(server_url, RUN_DB)


async def bare_loop(base: str, ids: list[int], loads: Callable[[bytes], Any]) -> float:
    """Works/s of 64 workers doing GET + `loads` over the same links."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for aweme_id in ids:
        queue.put_nowait(aweme_id)
    url = base + SEED_PATH
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            aweme_id = queue.get_nowait()
            async with session.get(url, params={"url": link(aweme_id)}) as response:
                body = await response.read()
            if loads(body)["code"] != 0:
                raise RuntimeError("the fake did not answer a work")

    start = time.perf_counter()
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(worker(session) for _ in range(CONCURRENCY)))
    return len(ids) / (time.perf_counter() - start)


def run(
    server_url: str, sizes: list[int], repeat: int, bare: bool, gc_arm: int, fakes: list[str]
) -> list[Result]:
    results: list[Result] = []
    rss: dict[int, float] = {}
    ratios: list[str] = []
    eng = create_database(server_url, TEMPLATE_DB)
    if os.environ.get("BENCH_RAW_STORAGE"):
        with eng.begin() as c:
            c.execute(text(f"ALTER TABLE raw_payloads ALTER COLUMN payload SET STORAGE {os.environ['BENCH_RAW_STORAGE']}"))
    eng.dispose()
    try:
        for fake in fakes:
            with FAKES[fake]() as base, tempfile.TemporaryDirectory() as tmp:
                for n in sizes:
                    ids = sample_aweme_ids(n, seed=IDS_SEED)
                    links_file = Path(tmp) / f"links-{n}.txt"
                    links_file.write_text("".join(link(i) + "\n" for i in ids))
                    arms = Arms(server_url, base, links_file, ids, fake)
                    # The GC comparison is made once, with the last fake (pre-rendered by default).
                    gc = n <= gc_arm and fake == fakes[-1]
                    results += arms.compare(repeat, bare=bare, gc_arm=gc)
                    rss[n] = max(rss.get(n, 0.0), arms.peak_rss_mb)
                    ratios.append(arms.summary)
    finally:
        drop_database(server_url, TEMPLATE_DB)
    if bare:
        print("\ningest / bare loops, side by side (medians of per-run ratios):")
        print("\n".join(ratios), flush=True)
    if len(rss) > 1:
        small, big = min(rss), max(rss)
        results.append(
            Result(
                "end_to_end",
                f"ingest peak RSS: {big:,} links / {small:,} links",
                rss[big] / rss[small],
                f"{rss[big]:.0f} vs {rss[small]:.0f} MB",
            )
        )
    return results


@dataclass
class Arms:
    server_url: str
    base: str
    links_file: Path
    ids: list[int]
    fake: str  # a key of FAKES
    peak_rss_mb: float = 0.0
    summary: str = ""

    def compare(self, repeat: int, *, bare: bool, gc_arm: bool) -> list[Result]:
        n = len(self.ids)
        runs: dict[str, list[Any]] = {"ingest": [], "default_gc": [], "json": [], "orjson": []}
        arms: dict[str, Callable[[], Any]] = {
            "ingest": lambda: run_ingest(self.server_url, self.base, self.links_file, n)
        }
        if gc_arm:
            arms["default_gc"] = lambda: run_ingest(
                self.server_url, self.base, self.links_file, n, default_gc=True
            )
        if bare:
            arms["json"] = lambda: asyncio.run(bare_loop(self.base, self.ids, json.loads))
            arms["orjson"] = lambda: asyncio.run(bare_loop(self.base, self.ids, orjson.loads))
        names = list(arms)
        for i in range(repeat):
            shift = i % len(names)
            for name in names[shift:] + names[:shift]:
                runs[name].append(arms[name]())
            print(f"{self.fake} fake, {n:,} links, run {i + 1}: " + "; ".join(
                f"{name} {_show(runs[name][-1])}" for name in names
            ), flush=True)  # fmt: skip
        return self._results(n, runs)

    def _results(self, n: int, runs: dict[str, list[Any]]) -> list[Result]:
        ours: list[IngestArm] = runs["ingest"]
        speed = median([a.works_per_s for a in ours])
        self.peak_rss_mb = max(a.peak_rss_mb for a in ours)
        results = [
            Result(
                "end_to_end",
                f"ingest {n:,} links (c={CONCURRENCY}, {self.fake} fake)",
                None,
                f"{speed:,.0f} works/s, peak RSS {self.peak_rss_mb:.0f} MB, "
                f"{median([a.cpu_ms_per_work for a in ours]):.2f} ms CPU/work"
                f"{_pg(ours)}, GC {median([a.gc_share for a in ours]):.1%} of CPU",
            )
        ]
        if untuned := runs["default_gc"]:
            results.append(
                Result(
                    "end_to_end",
                    f"ingest {n:,} links, {self.fake} fake: runtime GC settings / defaults",
                    _ratio(ours, untuned),
                    f"{speed:,.0f} vs {median([b.works_per_s for b in untuned]):,.0f} works/s; "
                    f"GC {median([a.gc_share for a in ours]):.1%} vs "
                    f"{median([b.gc_share for b in untuned]):.1%} of CPU",
                )
            )
        shown = [f"{self.fake:>11} fake, {n:>7,} links: ingest {speed:,.0f} works/s"]
        for name, call in (("json", "json.loads"), ("orjson", "orjson.loads")):
            if bare := runs[name]:
                ratio = median([a.works_per_s / b for a, b in zip(ours, bare, strict=True)])
                results.append(
                    Result(
                        "end_to_end",
                        f"ingest / bare GET+{call} loop, {n:,} links, {self.fake} fake",
                        ratio,
                        f"{speed:,.0f} vs {median(bare):,.0f} works/s",
                    )
                )
                shown.append(f"{name} {median(bare):,.0f}/s ({ratio:.2f})")
        self.summary = "; ".join(shown)
        return results


def _pg(arms: list[IngestArm]) -> str:
    known = [a.pg_ms_per_work for a in arms if a.pg_ms_per_work is not None]
    return f" (+ PostgreSQL {median(known):.2f})" if known else ""


def _ratio(ours: list[IngestArm], other: list[IngestArm]) -> float:
    return median([a.works_per_s / b.works_per_s for a, b in zip(ours, other, strict=True)])


def _show(arm: IngestArm | float) -> str:
    if isinstance(arm, IngestArm):
        return (
            f"{arm.works_per_s:,.0f} works/s ({arm.cpu_ms_per_work:.2f} ms CPU/work{_pg([arm])}, "
            f"GC {arm.gc_share:.1%}, peak RSS {arm.peak_rss_mb:.0f} MB)"
        )
    return f"{arm:,.0f}/s"


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--links", type=int, nargs="+", default=[5_000, 20_000], help="sizes N")
    parser.add_argument("--repeat", type=int, default=3, help="runs per arm and size")
    parser.add_argument(
        "--no-bare", dest="bare", action="store_false", help="ingest only (for RSS at 200k)"
    )
    parser.add_argument(
        "--gc-arm",
        type=int,
        default=5_000,
        help="also run ingest with CPython's default GC settings at sizes up to this",
    )
    parser.add_argument(
        "--fakes",
        nargs="+",
        choices=list(FAKES),
        default=list(FAKES),
        help="the fakes to measure against, in this order (default: both)",
    )
    args = parser.parse_args(argv)
    with pg_server() as server_url:
        return run(server_url, args.links, args.repeat, args.bare, args.gc_arm, args.fakes)


if __name__ == "__main__":
    print_results(main())
