"""Settings: built once at the edge (the CLI) from options and environment, then passed down.

Nothing here runs at import time and there is no module-level settings object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

import platformdirs

from pipeline.errors import UsageError

ApiStyle = Literal["seed", "amagi"]
LogFormat = Literal["text", "json"]

APP_NAME = "douyin-ingest"


class Secret:
    """A string that never shows itself in repr/str, so it cannot leak through logs or errors."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def without_userinfo(url: str) -> str:
    """The URL without any `user:password@` part, safe to record."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc))


def check_base_url(url: str, option: str) -> str:
    """`url` if it is `http(s)://host[:port][/path]`, else a `UsageError` saying what to fix.

    Messages never repeat the URL: it may carry a password."""
    text = url.strip()
    if "://" not in text:
        raise UsageError(f"{option}: the scheme is missing (expected http://host[:port][/path])")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise UsageError(f"{option}: not a valid URL (a bad port or [address])") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise UsageError(f"{option}: only http:// and https:// URLs are supported")
    if not parts.hostname:
        raise UsageError(f"{option}: the host is missing (expected http://host[:port][/path])")
    if port == 0:
        raise UsageError(f"{option}: port 0 is not a port")
    if parts.query or parts.fragment:
        raise UsageError(f"{option}: must not have a query (?…) or fragment (#…)")
    return text.rstrip("/")


def check_api_credentials(api_base: str, token: str | None) -> None:
    """A `user:password@` in the base URL and a token are two kinds of credentials: the client
    cannot send both (aiohttp refuses), and guessing which one is meant would be worse."""
    if token and (urlsplit(api_base).username or urlsplit(api_base).password):
        raise UsageError(
            "--api-base carries a user:password and --api-token is set too: use one of them"
        )


def default_data_dir() -> Path:
    """Per-user directory holding the embedded database (override with INGEST_DATA_DIR)."""
    return Path(platformdirs.user_data_dir(APP_NAME))


# A parked service is probed again after this long, then twice as long after each failed
# probe, up to the maximum (docs/upstreams.md).
DEFAULT_PARK_S = 30.0
DEFAULT_PARK_MAX_S = 600.0


@dataclass(frozen=True, slots=True)
class UpstreamService:
    """One parsing service of the pool (`--upstreams FILE`, docs/upstreams.md), or the one the
    single-service options describe. `name` is what logs, summaries and `ingest runs` call it."""

    name: str
    base: str
    style: ApiStyle = "seed"
    rate: float = 5.0  # requests per second to this service (short-link lookups included)
    concurrency: int = 8
    token: Secret | None = None
    token_env: str | None = None  # where the token came from (recorded; the token never is)
    shared: bool = False  # several hosts use it: the limit is kept in PostgreSQL
    timeout_s: float = 20.0
    retries: int = 4
    resolve_base: str | None = None
    park_s: float = DEFAULT_PARK_S
    park_max_s: float = DEFAULT_PARK_MAX_S

    def public(self) -> dict[str, object]:
        """What a run records about this service: no token, no user:password."""
        return {
            "name": self.name,
            "base": without_userinfo(self.base),
            "style": self.style,
            "rate": self.rate,
            "concurrency": self.concurrency,
            "token_set": self.token is not None,
            "token_env": self.token_env,
            "shared": self.shared,
            "timeout_s": self.timeout_s,
            "retries": self.retries,
        }


@dataclass(frozen=True, slots=True)
class FetchSettings:
    """The single-service options, and the pool (`upstreams`) when `--upstreams` gave one."""

    api_base: str = "http://127.0.0.1:8000"
    api_style: ApiStyle = "seed"
    api_token: Secret | None = None
    rate: float = 5.0
    concurrency: int = 8
    timeout_s: float = 20.0
    retries: int = 4
    resolve_base: str | None = None
    upstreams: tuple[UpstreamService, ...] = ()
    upstreams_file: str | None = None  # where the pool came from, for messages

    @property
    def pooled(self) -> bool:
        """A pool from `--upstreams` (even of one), rather than the single-service options."""
        return bool(self.upstreams)

    def services(self) -> tuple[UpstreamService, ...]:
        """The pool: the configured services, or the one the single-service options describe
        (a pool of one, behaving exactly as one service always did)."""
        if self.upstreams:
            return self.upstreams
        one = UpstreamService(
            name="upstream",
            base=self.api_base,
            style=self.api_style,
            rate=self.rate,
            concurrency=self.concurrency,
            token=self.api_token,
            timeout_s=self.timeout_s,
            retries=self.retries,
            resolve_base=self.resolve_base,
        )
        return (one,)

    @property
    def total_concurrency(self) -> int:
        return sum(s.concurrency for s in self.services())


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: Secret | None = None
    data_dir: Path = field(default_factory=default_data_dir)
    fetch: FetchSettings = field(default_factory=FetchSettings)
    batch_size: int = 200
    batch_seconds: float = 2.0
    db_outage_seconds: float = 120.0  # how long a run waits for the database to come back
    force: bool = False
    dry_run: bool = False
    progress: bool = False
    log_format: LogFormat = "text"
    verbosity: int = 0

    def public_options(self) -> dict[str, object]:
        """Options worth recording on a run, with every secret left out."""
        f = self.fetch
        fetch: dict[str, object] = {
            "api_base": without_userinfo(f.api_base),
            "api_style": f.api_style,
            "api_token_set": f.api_token is not None,
            "rate": f.rate,
            "concurrency": f.concurrency,
        }
        if f.pooled:
            fetch = {"upstreams": [s.public() for s in f.upstreams]}
        return {
            **fetch,
            "timeout_s": f.timeout_s,
            "retries": f.retries,
            "batch_size": self.batch_size,
            "db_outage_seconds": self.db_outage_seconds,
            "force": self.force,
            "dry_run": self.dry_run,
            "embedded_database": self.database_url is None,
        }
