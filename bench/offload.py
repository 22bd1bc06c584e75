"""Would a process pool for decode + flatten take CPU off `ingest`'s event-loop thread?

It would move decoding and flattening to other processes, but the event-loop thread would then
pay to send each body (pickle) and to receive each result (unpickle a `FlatWork`, which carries
the decoded payload for `raw_payloads`). This measures, per work, on the same generated bodies:

- in place (what `ingest` does): `decode_body` + `flatten`;
- pool, parent's share: `pickle.dumps(body)` + `pickle.loads(pickle.dumps(flat_work))`
  (the result's `dumps` happens in the worker and is not counted).

    python -m bench.offload --works 1000
"""

from __future__ import annotations

import argparse
import json
import pickle
import time
from datetime import UTC, datetime

from bench.common import Result, median, print_results
from pipeline.flatten import flatten
from pipeline.runtime import steady_gc
from pipeline.testing.payloads import make_aweme_detail, sample_aweme_ids
from pipeline.upstream.decode import decode_body

FETCHED_AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def run(n: int, repeat: int) -> list[Result]:
    bodies = [
        json.dumps(make_aweme_detail(i, seed=4, sim_t=0.0), ensure_ascii=False).encode()
        for i in sample_aweme_ids(n, seed=4)
    ]
    in_place: list[float] = []
    parent: list[float] = []
    for _ in range(repeat):
        start = time.perf_counter()
        works = [flatten(decode_body(body), FETCHED_AT) for body in bodies]
        in_place.append((time.perf_counter() - start) / n)
        start = time.perf_counter()
        sent = [pickle.dumps(body) for body in bodies]
        send = time.perf_counter() - start
        results = [pickle.dumps(w) for w in works]  # the worker's part: not timed
        start = time.perf_counter()
        back = [pickle.loads(r) for r in results]
        parent.append((send + time.perf_counter() - start) / n)
        assert back == works  # the work happened
        assert len(sent) == n
    ratio = median([p / i for p, i in zip(parent, in_place, strict=True)])
    print(
        f"per work: decode + flatten in place {median(in_place) * 1e6:.0f} µs; with a pool the "
        f"event-loop thread would still spend {median(parent) * 1e6:.0f} µs (send + receive)"
    )
    return [
        Result(
            "offload",
            "process pool for decode+flatten: loop-thread cost / in place",
            ratio,
            f"{median(parent) * 1e6:.0f} vs {median(in_place) * 1e6:.0f} µs per work "
            "(>1: the pool costs the loop more)",
        )
    ]


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--works", type=int, default=1_000, help="payloads")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs")
    args = parser.parse_args(argv)
    with steady_gc():  # the collector settings `ingest` runs with
        return run(args.works, args.repeat)


if __name__ == "__main__":
    print_results(main())
