"""`python -m pipeline.testing.fake_upstream`: serve the fake upstream from a shell, for the
demo by hand, benchmarks, or a service under test in another process."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os

from pipeline.testing.fake_upstream import FakeUpstream, FaultConfig
from pipeline.testing.hostile import Hostile


def _ids(text: str) -> frozenset[int]:
    return frozenset(int(part) for part in text.split(",") if part.strip())


def _hostile(text: str) -> tuple[Hostile, frozenset[int]]:
    kind, _, ids = text.partition("=")
    try:
        return Hostile(kind.strip()), _ids(ids)
    except ValueError:
        choices = ", ".join(k.value for k in Hostile)
        raise argparse.ArgumentTypeError(f"expected KIND=ID[,ID…], KIND one of {choices}") from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.testing.fake_upstream",
        description="Serve the fake Douyin upstream (seed and amagi routes, short links).",
    )
    add = parser.add_argument
    add("--host", default="127.0.0.1", help="address to listen on")
    add("--port", type=int, default=8000, help="port to listen on (0 = any free port)")
    add("--seed", type=int, default=0, help="payload seed (same seed, same payloads)")
    add("--rate", type=float, default=None, help="requests/s admitted before HTTP 429")
    add("--retry-after", type=int, default=1, help="Retry-After seconds sent with 429")
    add("--latency", type=float, default=0.0, help="seconds added to every answer")
    add("--error-rate", type=float, default=0.0, help="fraction answered HTTP 500/502/503")
    add("--timeout-rate", type=float, default=0.0, help="fraction that hang for --hang seconds")
    add("--hang", type=float, default=30.0, help="seconds a hanging answer waits")
    add("--reset-rate", type=float, default=0.0, help="fraction whose connection is reset")
    add("--truncated-rate", type=float, default=0.0, help="fraction with a half JSON body")
    add("--non-json-rate", type=float, default=0.0, help="fraction answered with an HTML page")
    add("--soft-failure-rate", type=float, default=0.0, help="fraction of in-contract failures")
    add("--fail-attempts", type=int, default=1, help="faults hit only this many tries per work")
    add("--gone-ids", type=_ids, default=frozenset(), help="comma-separated deleted work ids")
    add("--null-detail-ids", type=_ids, default=frozenset(), help="ids answered with no detail")
    add("--cookie-expired", action="store_true", help="answer every fetch: cookie expired")
    add(
        "--hostile", type=_hostile, action="append", default=[], metavar="KIND=ID[,ID…]",
        help="answer these works with a hostile answer (see pipeline.testing.hostile); repeatable",
    )  # fmt: skip
    add("--redirect-target", default=None, help="base URL that off-host redirects point to")
    add("--sim-time", type=float, default=0.0, help="initial simulated time in seconds")
    add("--author-pool", type=int, default=None, help="distinct authors (default: the payloads')")
    add(
        "--style", choices=("seed", "amagi"), default=None,
        help="serve only this contract, like the real service, with short links on a port of "
        "their own (printed second); default: both contracts and short links on one port",
    )  # fmt: skip
    parser.epilog = "Set FAKE_UPSTREAM_TOKEN to require `Authorization: Bearer <token>`."
    return parser


def _faults(args: argparse.Namespace) -> FaultConfig:
    return FaultConfig(
        latency_s=args.latency, rate_limit=args.rate, retry_after_s=args.retry_after,
        error_5xx_rate=args.error_rate, timeout_rate=args.timeout_rate, hang_s=args.hang,
        reset_rate=args.reset_rate, truncated_rate=args.truncated_rate,
        non_json_rate=args.non_json_rate, soft_failure_rate=args.soft_failure_rate,
        fail_attempts=args.fail_attempts, gone_ids=args.gone_ids,
        null_detail_ids=args.null_detail_ids, cookie_expired=args.cookie_expired,
        require_token=os.environ.get("FAKE_UPSTREAM_TOKEN") or None,
        hostile={i: kind for kind, ids in args.hostile for i in ids},
        redirect_target=args.redirect_target,
    )  # fmt: skip


async def _serve(args: argparse.Namespace) -> None:
    pool = {} if args.author_pool is None else {"author_pool": args.author_pool}
    async with FakeUpstream(
        seed=args.seed, faults=_faults(args), sim_time=args.sim_time, style=args.style, **pool
    ) as fake:
        print(await fake.start(args.host, args.port), flush=True)
        if fake.short_link_base != fake.base_url:
            print(fake.short_link_base, flush=True)
        await asyncio.Event().wait()  # until Ctrl-C


def main(argv: list[str] | None = None) -> None:
    """Entry point: print the base URL, then serve until interrupted."""
    args = _parser().parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args))
