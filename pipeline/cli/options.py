"""Options shared by several commands, each group handed to the command as one typed value.

`@database_options` gives the command a `database: DatabaseOptions`, `@output_options` an
`output: OutputOptions`, `@fetch_options` a `fetch: FetchSettings` (checked here, so a bad URL
is a usage error before anything starts). Defaults live in the click options only;
`build_settings` just assembles.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import click
from click.core import ParameterSource

from pipeline.config import (
    FetchSettings,
    LogFormat,
    Secret,
    Settings,
    check_api_credentials,
    check_base_url,
    default_data_dir,
)
from pipeline.errors import UsageError

R = TypeVar("R")
Command = Callable[..., R]


@dataclass(frozen=True, slots=True)
class DatabaseOptions:
    url: Secret | None
    data_dir: Path


@dataclass(frozen=True, slots=True)
class OutputOptions:
    log_format: LogFormat
    verbosity: int  # -1 quiet, 0 normal, 1 one line per link, 2 every HTTP attempt
    debug: bool  # library logs too
    progress: bool | None  # None: a bar when stderr is a terminal

    @property
    def json(self) -> bool:
        return self.log_format == "json"

    @property
    def show_progress_bar(self) -> bool:
        """A bar only on a terminal (or when asked), never with JSON logs or -q."""
        if self.json or self.verbosity < 0:
            return False
        return sys.stderr.isatty() if self.progress is None else self.progress


def _apply(func: Callable[..., Any], *decorators: Callable[[Any], Any]) -> Any:
    for decorator in reversed(decorators):
        func = decorator(func)
    return func


def database_options(func: Command[R]) -> Command[R]:
    @functools.wraps(func)
    def wrapper(*args: Any, database_url: str | None, data_dir: Path, **kwargs: Any) -> R:
        url = Secret(database_url) if database_url else None
        return func(*args, database=DatabaseOptions(url, data_dir), **kwargs)

    return _apply(  # type: ignore[no-any-return]
        wrapper,
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


def output_options(func: Command[R]) -> Command[R]:
    @functools.wraps(func)
    def wrapper(
        *args: Any,
        progress: bool | None,
        log_format: LogFormat,
        quiet: bool,
        verbose: int,
        debug: bool,
        **kwargs: Any,
    ) -> R:
        verbosity = -1 if quiet else min(verbose, 2)
        output = OutputOptions(log_format, verbosity, debug, progress)
        return func(*args, output=output, **kwargs)

    return _apply(  # type: ignore[no-any-return]
        wrapper,
        click.option(
            "--progress/--no-progress",
            default=None,
            help="Show a progress bar on stderr. Default: on when stderr is a terminal "
            "(never with --log-format json).",
        ),
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"]),
            default="text",
            envvar="INGEST_LOG_FORMAT",
            show_envvar=True,
            show_default=True,
            help="text: log lines on stderr and tables on stdout. json: JSON lines on stderr "
            "and one JSON summary object on stdout.",
        ),
        click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors."),
        click.option(
            "-v",
            "--verbose",
            count=True,
            help="-v: one line per link outcome (link, id, outcome, attempts, reason); "
            "-vv: every HTTP attempt too.",
        ),
        click.option(
            "--debug", is_flag=True, help="Debug logs of the libraries too (aiohttp, asyncio…)."
        ),
    )


# The options a pool file replaces (each service sets its own); --timeout and --retries are
# defaults every service of the file may override.
_SINGLE_SERVICE = ("api_base", "api_style", "api_token", "rate", "concurrency", "resolve_base")


def fetch_options(func: Command[R]) -> Command[R]:
    @functools.wraps(func)
    def wrapper(
        *args: Any,
        upstreams: Path | None,
        api_base: str,
        api_style: Any,
        api_token: str | None,
        rate: float,
        concurrency: int,
        timeout: float,
        retries: int,
        resolve_base: str | None,
        **kwargs: Any,
    ) -> R:
        if upstreams is not None and not _env_pool_overridden():
            return func(*args, fetch=_pool_settings(upstreams, timeout, retries), **kwargs)
        base = check_base_url(api_base, "--api-base")
        check_api_credentials(base, api_token)
        fetch = FetchSettings(
            api_base=base,
            api_style=api_style,
            api_token=Secret(api_token) if api_token else None,
            rate=rate,
            concurrency=concurrency,
            timeout_s=timeout,
            retries=retries,
            resolve_base=check_base_url(resolve_base, "--resolve-base") if resolve_base else None,
        )
        return func(*args, fetch=fetch, **kwargs)

    return _apply(  # type: ignore[no-any-return]
        wrapper,
        click.option(
            "--upstreams",
            envvar="INGEST_UPSTREAMS",
            show_envvar=True,
            metavar="FILE",
            type=click.Path(dir_okay=False, path_type=Path),
            help="A pool of upstream services (TOML, docs/upstreams.md): each with its own "
            "rate, concurrency and token; used together, a troubled one parked. Replaces "
            "--api-base, --api-style, --api-token, --rate, --concurrency and --resolve-base.",
        ),
        click.option(
            "--api-base",
            envvar="DOUYIN_API_BASE",
            metavar="URL",
            show_envvar=True,
            default="http://127.0.0.1:8000",
            show_default=True,
            help="Base URL of the parsing service, http(s)://host[:port][/path] (its redirects "
            "are not followed).",
        ),
        api_style_option(envvar="DOUYIN_API_STYLE"),
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
            help="Requests per second across the whole run (fractions allowed, e.g. 0.5); "
            "short-link lookups count too.",
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


def _given_single_service_options() -> list[str]:
    ctx = click.get_current_context()
    return [
        "--" + name.replace("_", "-")
        for name in _SINGLE_SERVICE
        if ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE
    ]


def _env_pool_overridden() -> bool:
    """A pool from INGEST_UPSTREAMS gives way to single-service options typed on the command
    line (a one-off run against one service, in a shell that exports the pool)."""
    ctx = click.get_current_context()
    from_env = ctx.get_parameter_source("upstreams") is ParameterSource.ENVIRONMENT
    return from_env and bool(_given_single_service_options())


def _pool_settings(path: Path, timeout: float, retries: int) -> FetchSettings:
    """The pool a `--upstreams` file describes. Single-service options given on the command
    line with `--upstreams` are a usage error (which would win is a guess); their environment
    variables are ignored, so a shell that exports DOUYIN_API_BASE can still use a pool file."""
    from pipeline.upstream.services import load_upstreams

    if given := _given_single_service_options():
        raise UsageError(
            f"{given[0]} and --upstreams are two ways to name the upstream: use one (in a "
            "pool file each service sets its own base, style, rate and concurrency)"
        )
    services = load_upstreams(path, timeout_s=timeout, retries=retries)
    return FetchSettings(
        timeout_s=timeout, retries=retries, upstreams=services, upstreams_file=str(path)
    )


def api_style_option(envvar: str | None) -> Callable[[Command[R]], Command[R]]:
    return click.option(
        "--api-style",
        type=click.Choice(["seed", "amagi"]),
        envvar=envvar,
        show_envvar=envvar is not None,
        default="seed",
        show_default=True,
        help=(
            "seed: GET /douyin/fetch_one_work?url=…; "
            "amagi: GET /api/douyin/fetch_one_work?aweme_id=…."
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


def batch_size_option(default: int, what: str) -> Callable[[Command[R]], Command[R]]:
    return click.option(
        "--batch-size",
        type=click.IntRange(1, 10_000),
        default=default,
        show_default=True,
        help=f"{what} per database transaction.",
    )


def build_settings(
    database: DatabaseOptions,
    output: OutputOptions,
    fetch: FetchSettings | None = None,
    *,
    batch_size: int | None = None,
    db_outage_seconds: float | None = None,
    force: bool = False,
    dry_run: bool = False,
) -> Settings:
    """The one place options become Settings (values only: every default is the option's)."""
    extra: dict[str, Any] = {}
    if batch_size is not None:
        extra["batch_size"] = batch_size
    if db_outage_seconds is not None:
        extra["db_outage_seconds"] = db_outage_seconds
    return Settings(
        database_url=database.url,
        data_dir=database.data_dir,
        fetch=fetch or FetchSettings(),
        progress=output.show_progress_bar,
        log_format=output.log_format,
        verbosity=output.verbosity,
        force=force,
        dry_run=dry_run,
        **extra,
    )


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
