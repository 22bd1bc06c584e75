"""Does `ingest` use the upstream's rate limit fully without ever tripping it?

The real `IngestJob` (in-process, real `UpstreamClient`, real database) fetches M works from the
fake upstream on 127.0.0.1, which answers after `--latency` seconds and admits at most N
requests in any trailing 1-second window (429 + Retry-After beyond that). Side by side, against
a second fake with the same settings, a naive loop: plain aiohttp GETs paced by
`aiolimiter.AsyncLimiter(N, 1)` (a leaky bucket that starts full), same concurrency.

Sustained rate = (requests - N) / (last arrival - first arrival): the first window's N are
free for any limiter, so this is the long-run rate whether starts come evenly spaced or in
bursts of N per window.

    python -m bench.fetch_rate --rate 20 --works 80 --repeat 3
"""

from __future__ import annotations

import argparse
import asyncio
import io
import math
import time
from collections import Counter
from dataclasses import dataclass

import aiohttp
from aiolimiter import AsyncLimiter
from sqlalchemy import Engine

from bench.common import Result, create_database, drop_database, median, pg_server, print_results
from pipeline.config import FetchSettings, Settings
from pipeline.ingest import IngestJob, InputSource
from pipeline.testing.fake_upstream import SEED_PATH, FakeUpstream, FaultConfig
from pipeline.testing.payloads import sample_aweme_ids

DB = "bench_fetch_rate"
CONCURRENCY = 8


class _Quiet:
    def update(self, counts: Counter[str]) -> None:
        pass


@dataclass(frozen=True, slots=True)
class Arm:
    requests: int
    rate_limited: int
    max_in_window: int
    sustained: float
    seconds: float


def _measure(fake: FakeUpstream, limit: int, seconds: float) -> Arm:
    times = sorted(r.t for r in fake.served)
    span = times[-1] - times[0]
    sustained = (len(times) - limit) / span if span > 0 else math.inf
    return Arm(
        requests=len(times),
        rate_limited=sum(1 for r in fake.served if r.status == 429),
        max_in_window=fake.max_requests_in_window(1.0),
        sustained=sustained,
        seconds=seconds,
    )


def _links(ids: list[int]) -> bytes:
    return "".join(f"https://www.douyin.com/video/{i}\n" for i in ids).encode()


async def ingest_arm(engine: Engine, faults: FaultConfig, rate: int, ids: list[int]) -> Arm:
    async with FakeUpstream(seed=3, faults=faults) as fake:
        base = await fake.start()
        settings = Settings(
            database_url=None,
            fetch=FetchSettings(api_base=base, resolve_base=base, rate=rate, concurrency=8),
            batch_seconds=0.2,
        )
        source = InputSource("bench", io.BytesIO(_links(ids)))
        job = IngestJob(settings, engine, _Quiet(), [source])
        start = time.perf_counter()
        summary = await job.run()
        seconds = time.perf_counter() - start
        if summary.counts["loaded"] != len(ids):
            raise RuntimeError(f"ingest did not load every work: {dict(summary.counts)}")
        return _measure(fake, rate, seconds)


async def naive_arm(faults: FaultConfig, rate: int, ids: list[int]) -> Arm:
    async with FakeUpstream(seed=3, faults=faults) as fake:
        base = await fake.start()
        limiter = AsyncLimiter(rate, 1)
        gate = asyncio.Semaphore(CONCURRENCY)

        async def get(session: aiohttp.ClientSession, aweme_id: int) -> None:
            async with gate:
                async with limiter:
                    pass
                url = f"https://www.douyin.com/video/{aweme_id}"
                async with session.get(base + SEED_PATH, params={"url": url}) as response:
                    await response.read()

        start = time.perf_counter()
        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(get(session, i) for i in ids))
        return _measure(fake, rate, time.perf_counter() - start)


def _show(name: str, arm: Arm, rate: int) -> str:
    return (
        f"{name}: {arm.requests} requests in {arm.seconds:.2f} s, sustained "
        f"{arm.sustained:.1f}/s ({arm.sustained / rate:.2f} of {rate}/s), "
        f"{arm.rate_limited} x 429, max {arm.max_in_window} in any 1 s"
    )


async def _run(engine: Engine, rate: int, works: int, latency: float, repeat: int) -> list[Result]:
    faults = FaultConfig(rate_limit=rate, latency_s=latency, retry_after_s=1)
    ids = sample_aweme_ids(works * repeat, seed=3)
    ours: list[Arm] = []
    naive: list[Arm] = []
    for i in range(repeat):
        batch = ids[i * works : (i + 1) * works]
        arms = [("ingest", ours), ("naive", naive)]
        for name, arms_list in arms if i % 2 == 0 else reversed(arms):
            if name == "ingest":
                arm = await ingest_arm(engine, faults, rate, batch)
            else:
                arm = await naive_arm(faults, rate, batch)
            arms_list.append(arm)
            print(f"run {i + 1}: {_show(name, arm, rate)}")
    use = median([a.sustained / rate for a in ours])
    print(
        f"-> ingest: {use:.2f} of the limit used, {sum(a.rate_limited for a in ours)} x 429 "
        f"in {repeat} runs; max {max(a.max_in_window for a in ours)} requests in any 1 s"
    )
    print(
        f"-> naive AsyncLimiter({rate}, 1): {sum(a.rate_limited for a in naive)} x 429 in "
        f"{repeat} runs; max {max(a.max_in_window for a in naive)} requests in any 1 s "
        f"(limit {rate})"
    )
    return [
        Result(
            "fetch_rate",
            f"ingest: sustained rate / limit {rate}/s ({latency * 1000:.0f} ms latency)",
            use,
            f"{median([a.sustained for a in ours]):.1f}/s, "
            f"{sum(a.rate_limited for a in ours)} x 429, "
            f"max {max(a.max_in_window for a in ours)} in any 1 s",
        ),
        Result(
            "fetch_rate",
            f"naive AsyncLimiter({rate}, 1): max in any 1 s / limit",
            median([a.max_in_window / rate for a in naive]),
            f"{sum(a.rate_limited for a in naive)} x 429 in {repeat * works} requests, "
            f"max {max(a.max_in_window for a in naive)} in any 1 s",
        ),
    ]


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rate", type=int, default=20, help="the fake's limit N, requests/s")
    parser.add_argument("--works", type=int, default=80, help="works fetched per arm and run")
    parser.add_argument("--latency", type=float, default=0.05, help="fake answer delay, s")
    parser.add_argument("--repeat", type=int, default=3, help="runs per arm")
    args = parser.parse_args(argv)
    with pg_server() as server_url:
        engine = create_database(server_url, DB)
        try:
            return asyncio.run(_run(engine, args.rate, args.works, args.latency, args.repeat))
        finally:
            engine.dispose()
            drop_database(server_url, DB)


if __name__ == "__main__":
    print_results(main())
