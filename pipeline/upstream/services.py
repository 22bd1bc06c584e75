"""The upstream pool file (`--upstreams FILE`, env INGEST_UPSTREAMS): TOML, one `[[upstream]]`
table per parsing service. The reference is docs/upstreams.md.

```toml
[[upstream]]
name = "home-cookie"
base = "http://127.0.0.1:8000"
style = "seed"            # or "amagi"
rate = 5                  # requests per second, this service only
concurrency = 4
token_env = "HOME_TOKEN"  # optional: the token is read from this env var, never inline
shared = false            # optional: true = several hosts use it (limit kept in PostgreSQL)
```

Every problem is one `UsageError` line naming the file, the table and the key (exit 1): a typo
in a key must not silently fall back to a default, and a token must never sit in a file that
gets copied around. Messages never repeat a value that may be a secret (a URL, a token).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pipeline.config import (
    DEFAULT_PARK_MAX_S,
    DEFAULT_PARK_S,
    ApiStyle,
    Secret,
    UpstreamService,
    check_api_credentials,
    check_base_url,
)
from pipeline.errors import UsageError
from pipeline.upstream.pool import SHARED_LIMITER_AVAILABLE

_KEYS = frozenset(
    {
        "name",
        "base",
        "style",
        "rate",
        "concurrency",
        "token_env",
        "shared",
        "resolve_base",
        "timeout",
        "retries",
        "park_seconds",
        "park_max_seconds",
    }
)
_REQUIRED = ("name", "base", "style", "rate")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_MAX_CONCURRENCY = 256


def load_upstreams(
    path: str | Path,
    *,
    environ: Mapping[str, str] | None = None,
    timeout_s: float = 20.0,
    retries: int = 4,
) -> tuple[UpstreamService, ...]:
    """The services `path` lists, checked. `timeout_s` and `retries` (the command's --timeout
    and --retries) apply to every service that does not set its own."""
    env = os.environ if environ is None else environ
    where = str(path)
    try:
        with open(path, "rb") as stream:
            doc = tomllib.load(stream)
    except OSError as exc:
        raise UsageError(f"cannot read the upstreams file {where!r}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{where}: not valid TOML: {exc}") from None
    return parse_upstreams(doc, where, env, timeout_s=timeout_s, retries=retries)


def parse_upstreams(
    doc: Mapping[str, Any],
    where: str,
    environ: Mapping[str, str],
    *,
    timeout_s: float = 20.0,
    retries: int = 4,
) -> tuple[UpstreamService, ...]:
    extra = sorted(set(doc) - {"upstream"})
    if extra:
        raise UsageError(
            f"{where}: unknown top-level key {extra[0]!r} (expected [[upstream]] tables)"
        )
    tables = doc.get("upstream")
    if not isinstance(tables, list) or not tables:
        raise UsageError(f"{where}: no [[upstream]] table (list at least one service)")
    services: list[UpstreamService] = []
    seen: set[str] = set()
    for i, table in enumerate(tables, start=1):
        if not isinstance(table, dict):
            raise UsageError(f"{where}: upstream #{i} is not a table (write [[upstream]])")
        service = _service(table, f"{where}: upstream #{i}", environ, timeout_s, retries)
        if service.name in seen:
            raise UsageError(
                f"{where}: two upstreams are named {service.name!r}: names must differ"
            )
        seen.add(service.name)
        services.append(service)
    return tuple(services)


def _service(
    table: dict[str, Any], at: str, environ: Mapping[str, str], timeout_s: float, retries: int
) -> UpstreamService:
    if "token" in table:
        raise UsageError(
            f"{at}: an inline `token` is not allowed (files get copied and committed): put the "
            'token in an environment variable and name it with token_env = "VAR"'
        )
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise UsageError(f"{at}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    for key in _REQUIRED:
        if key not in table:
            raise UsageError(f"{at}: `{key}` is missing")
    name = table["name"]
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise UsageError(
            f"{at}: `name` must be 1-64 letters, digits, '_', '-' or '.', starting with a "
            "letter or digit"
        )
    at = f"{at} ({name})"
    base = check_base_url(_string(table, "base", at), f"{at}: base")
    style = table["style"]
    if style not in ("seed", "amagi"):
        raise UsageError(f'{at}: `style` must be "seed" or "amagi"')
    token, token_env = _token(table, at, environ)
    if token is not None:
        try:
            check_api_credentials(base, token.reveal())
        except UsageError:
            raise UsageError(
                f"{at}: base carries a user:password and token_env is set too: use one"
            ) from None
    resolve_base = table.get("resolve_base")
    shared = table.get("shared", False)
    if not isinstance(shared, bool):
        raise UsageError(f"{at}: `shared` must be true or false")
    if shared and not SHARED_LIMITER_AVAILABLE:
        raise UsageError(
            f"{at}: shared = true (a limit kept in PostgreSQL for several hosts) is not "
            "available in this version; use shared = false and give each host its share of "
            "the rate"
        )
    park_s = _number(table, "park_seconds", at, DEFAULT_PARK_S)
    return UpstreamService(
        name=name,
        base=base,
        style=_style(style),
        rate=_number(table, "rate", at, None),
        concurrency=_integer(table, "concurrency", at, 8, 1, _MAX_CONCURRENCY),
        token=token,
        token_env=token_env,
        shared=shared,
        timeout_s=_number(table, "timeout", at, timeout_s),
        retries=_integer(table, "retries", at, retries, 0, 20),
        resolve_base=(
            check_base_url(_string(table, "resolve_base", at), f"{at}: resolve_base")
            if resolve_base is not None
            else None
        ),
        park_s=park_s,
        park_max_s=max(park_s, _number(table, "park_max_seconds", at, DEFAULT_PARK_MAX_S)),
    )


def _style(value: str) -> ApiStyle:
    return "amagi" if value == "amagi" else "seed"


def _token(
    table: dict[str, Any], at: str, environ: Mapping[str, str]
) -> tuple[Secret | None, str | None]:
    if "token_env" not in table:
        return None, None
    var = table["token_env"]
    if not isinstance(var, str) or not _ENV_NAME.fullmatch(var):
        raise UsageError(
            f'{at}: `token_env` must be an environment variable name, e.g. "HOME_TOKEN"'
        )
    value = environ.get(var, "")
    if not value:
        raise UsageError(f"{at}: token_env names {var}, which is not set (or empty)")
    return Secret(value), var


def _string(table: dict[str, Any], key: str, at: str) -> str:
    value = table[key]
    if not isinstance(value, str):
        raise UsageError(f"{at}: `{key}` must be a string")
    return value


def _number(table: dict[str, Any], key: str, at: str, default: float | None) -> float:
    value = table.get(key, default)
    # bool is an int in Python; `rate = true` is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise UsageError(f"{at}: `{key}` must be a number")
    if not value > 0 or math.isinf(value):
        raise UsageError(f"{at}: `{key}` must be a positive number (got {value})")
    return float(value)


def _integer(table: dict[str, Any], key: str, at: str, default: int, low: int, high: int) -> int:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{at}: `{key}` must be a whole number")
    if not low <= value <= high:
        raise UsageError(f"{at}: `{key}` must be between {low} and {high} (got {value})")
    return value
