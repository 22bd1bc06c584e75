"""Shared `ingest` options, and the one place options become Settings."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click

from pipeline.config import (
    FetchSettings,
    Secret,
    Settings,
    check_api_credentials,
    check_base_url,
    default_data_dir,
)

F = TypeVar("F", bound=Callable[..., Any])


def _compose(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    def apply(func: F) -> F:
        for decorator in reversed(decorators):
            func = decorator(func)
        return func

    return apply


database_options = _compose(
    click.option(
        "--database-url",
        envvar="DATABASE_URL",
        show_envvar=True,
        metavar="URL",
        help="PostgreSQL URL. Default: the embedded database in --data-dir.",
    ),
    click.option(
        "--data-dir",
        envvar="INGEST_DATA_DIR",
        show_envvar=True,
        type=click.Path(file_okay=False, path_type=Path),
        default=default_data_dir,
        show_default="per-user data directory",
        help="Where the embedded database keeps its files.",
    ),
)

output_options = _compose(
    click.option(
        "--progress/--no-progress",
        default=None,
        help="Show a progress bar. Default: on when stderr is a terminal.",
    ),
    click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        envvar="INGEST_LOG_FORMAT",
        show_envvar=True,
        show_default=True,
        help="Log line format on stderr.",
    ),
    click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors."),
    click.option("-v", "--verbose", count=True, help="More detail (-vv for every request)."),
)

fetch_options = _compose(
    click.option(
        "--api-base",
        envvar="DOUYIN_API_BASE",
        metavar="URL",
        show_envvar=True,
        default="http://127.0.0.1:8000",
        show_default=True,
        help="Base URL of the parsing service, http(s)://host[:port][/path] (its redirects are "
        "not followed).",
    ),
    click.option(
        "--api-style",
        type=click.Choice(["seed", "amagi"]),
        envvar="DOUYIN_API_STYLE",
        show_envvar=True,
        default="seed",
        show_default=True,
        help=(
            "seed: GET /douyin/fetch_one_work?url=…; "
            "amagi: GET /api/douyin/fetch_one_work?aweme_id=…."
        ),
    ),
    click.option(
        "--api-token",
        envvar="DOUYIN_API_TOKEN",
        show_envvar=True,
        metavar="TOKEN",
        help="Bearer token for the service (prefer the env var; never printed or stored).",
    ),
    click.option(
        "--rate",
        type=click.FloatRange(min=0.01),
        default=5.0,
        show_default=True,
        help="Requests per second across the whole run (fractions allowed, e.g. 0.5).",
    ),
    click.option(
        "--concurrency",
        type=click.IntRange(1, 256),
        default=8,
        show_default=True,
        help="Requests in flight at most.",
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0.1),
        default=20.0,
        show_default=True,
        help="Seconds before one request is abandoned (then retried).",
    ),
    click.option(
        "--retries",
        type=click.IntRange(0, 20),
        default=4,
        show_default=True,
        help="Retries per link for temporary failures (5xx, timeouts, 429).",
    ),
    click.option(
        "--resolve-base",
        envvar="DOUYIN_RESOLVE_BASE",
        show_envvar=True,
        metavar="URL",
        help=(
            "amagi style: send short-link lookups here instead of https://v.douyin.com "
            "(a proxy or a test server)."
        ),
    ),
)


db_outage_option = click.option(
    "--db-outage-seconds",
    type=click.FloatRange(min=0),
    envvar="INGEST_DB_OUTAGE_SECONDS",
    show_envvar=True,
    default=120.0,
    show_default=True,
    help="How long a run waits for a lost database to come back (retrying with backoff, "
    "fetching paused) before it stops with exit code 3.",
)


def batch_size_option(default: int, what: str) -> Callable[[F], F]:
    return click.option(
        "--batch-size",
        type=click.IntRange(1, 10_000),
        default=default,
        show_default=True,
        help=f"{what} per database transaction.",
    )


def build_settings(params: dict[str, Any], **extra: Any) -> Settings:
    """The one place options become Settings."""
    token = params.get("api_token")
    url = params.get("database_url")
    defaults = FetchSettings()
    api_base = check_base_url(str(params.get("api_base") or defaults.api_base), "--api-base")
    check_api_credentials(api_base, token)
    resolve_base = params.get("resolve_base") or None
    if resolve_base is not None:
        resolve_base = check_base_url(resolve_base, "--resolve-base")
    fetch = FetchSettings(
        api_base=api_base,
        api_style=params.get("api_style") or defaults.api_style,
        api_token=Secret(token) if token else None,
        rate=float(params.get("rate") or defaults.rate),
        concurrency=int(params.get("concurrency") or defaults.concurrency),
        timeout_s=float(params.get("timeout") or defaults.timeout_s),
        retries=defaults.retries if params.get("retries") is None else int(params["retries"]),
        resolve_base=resolve_base,
    )
    progress = params.get("progress")
    if progress is None:
        progress = sys.stderr.isatty()
    return Settings(
        database_url=Secret(url) if url else None,
        data_dir=params.get("data_dir") or default_data_dir(),
        fetch=fetch,
        progress=bool(progress) and not params.get("quiet"),
        log_format=params.get("log_format") or "text",
        verbosity=-1 if params.get("quiet") else int(params.get("verbose") or 0),
        **_outage(params),
        **extra,
    )


def _outage(params: dict[str, Any]) -> dict[str, Any]:
    """db_outage_seconds, for the commands that have the option."""
    value = params.get("db_outage_seconds")
    return {} if value is None else {"db_outage_seconds": float(value)}


class Duration(click.ParamType):  # type: ignore[type-arg]
    """`90s`, `30m`, `6h`, `2d`, `1w` (a bare number means seconds)."""

    name = "duration"
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, timedelta):
            return value
        text = str(value).strip().lower()
        unit = text[-1:] if text[-1:] in self._UNITS else "s"
        number = text[:-1] if text[-1:] in self._UNITS else text
        try:
            amount = float(number)
        except ValueError:
            self.fail(f"{value!r} is not a duration like 90s, 30m, 6h, 2d or 1w", param, ctx)
        if amount <= 0:
            self.fail("a duration must be positive", param, ctx)
        return timedelta(seconds=amount * self._UNITS[unit])
