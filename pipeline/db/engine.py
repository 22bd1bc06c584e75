"""Engines and the embedded PostgreSQL default.

With no database URL the job runs against an embedded PostgreSQL (the `pgserver` package ships
the server binaries in its wheel, so nothing is installed by hand). Its data lives in a per-user
directory and the server stops when the last process using it exits.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pipeline.errors import DatabaseError, UsageError

log = logging.getLogger(__name__)

_servers: dict[Path, Any] = {}


def normalize_url(url: str) -> str:
    """Accept `postgres://` and `postgresql://` URLs and select the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError("database URL is not a valid URL (expected postgresql://…)") from None
    if parsed.drivername in ("postgres", "postgresql", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if not parsed.drivername.startswith("postgresql"):
        raise UsageError(f"only PostgreSQL is supported, not {parsed.drivername!r}")
    return parsed.render_as_string(hide_password=False)


def redact_url(url: str) -> str:
    """The URL with its password replaced by ***, safe to print."""
    return make_url(url).render_as_string(hide_password=True)


def embedded_server(data_dir: Path) -> Any:
    """Start (or reuse) the embedded server whose data lives in `data_dir/pg`."""
    pgdata = (data_dir / "pg").resolve()
    if pgdata in _servers:
        return _servers[pgdata]
    pgdata.mkdir(parents=True, exist_ok=True)
    # pgserver logs every step at INFO; keep our own output readable.
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    import pgserver

    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
    except Exception as exc:  # pgserver raises bare subprocess/assert errors
        raise DatabaseError(
            f"could not start the embedded PostgreSQL in {pgdata}: {exc.__class__.__name__}; "
            f"see {pgdata / 'log'}"
        ) from None
    _servers[pgdata] = server
    return server


def embedded_url(data_dir: Path) -> str:
    server = embedded_server(data_dir)
    return normalize_url(server.get_uri())


def make_db_engine(url: str, **kwargs: Any) -> Engine:
    kwargs.setdefault("pool_pre_ping", True)
    kwargs.setdefault("connect_args", {"application_name": f"douyin-ingest[{os.getpid()}]"})
    return create_engine(normalize_url(url), **kwargs)
