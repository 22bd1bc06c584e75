"""Engines and the embedded PostgreSQL default.

With no database URL the job runs against an embedded PostgreSQL (the `pgserver` package ships
the server binaries in its wheel, so nothing is installed by hand). Its data lives in a per-user
directory and the server stops when the last process using it exits.
"""

from __future__ import annotations

import logging
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from pipeline.config import Settings
from pipeline.db.migrate import require_current, upgrade
from pipeline.errors import DatabaseError, UsageError

log = logging.getLogger(__name__)

_servers: dict[Path, Any] = {}


def normalize_url(url: str) -> str:
    """Accept `postgres://` and `postgresql://` URLs and select the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UsageError("database URL is not a valid URL (expected postgresql://…)") from None
    except ValueError:  # SQLAlchemy converts the port with int(); the message would show it
        raise UsageError(
            "database URL has an invalid port (expected postgresql://user:password@host:PORT/db"
            " with a number for PORT)"
        ) from None
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
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (cron, containers); pgserver then
        # uses /tmp/runtime-$UID, which is fine.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver

    try:
        server = pgserver.get_server(pgdata, cleanup_mode="stop")  # type: ignore[attr-defined]
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


@dataclass(frozen=True, slots=True)
class Database:
    engine: Engine
    embedded: bool

    @property
    def safe_url(self) -> str:
        return redact_url(self.engine.url.render_as_string(hide_password=False))

    def describe(self) -> str:
        if self.embedded:
            socket_dir = self.engine.url.query.get("host", "")
            return f"embedded PostgreSQL (socket in {socket_dir}; `ingest db psql` to open it)"
        return self.safe_url


def error_reason(exc: Exception, secret: str | None = None) -> str:
    """The first line of the driver's message (never the SQL or its parameters), with the
    password masked should the server ever echo it."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return reason.replace(secret, "***") if secret else reason


def psql_binary() -> str | None:
    """The psql shipped with the embedded server, else one on PATH."""
    import pgserver

    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    return str(bundled) if bundled.exists() else shutil.which("psql")


def open_database(
    settings: Settings, *, migrate_embedded: bool = True, require_schema: bool = True
) -> Database:
    """The engine the job writes to: the embedded default (migrated automatically), or the
    given URL (checked: never migrated silently)."""
    if settings.database_url is None:
        engine = make_db_engine(embedded_url(settings.data_dir))
        if migrate_embedded:
            upgrade(engine)
        return Database(engine, embedded=True)
    engine = make_db_engine(settings.database_url.reveal())
    try:
        with engine.connect():
            pass
    except OperationalError as exc:
        engine.dispose()
        reason = error_reason(exc, engine.url.password)
        raise DatabaseError(f"cannot connect to the database: {reason}") from None
    if require_schema:
        require_current(engine)
    return Database(engine, embedded=False)
