"""Engines and the embedded PostgreSQL default.

With no database URL the job runs against an embedded PostgreSQL (the `pgserver` package ships
the server binaries in its wheel, so nothing is installed by hand). Its data lives in a per-user
directory and the server stops when the last process using it exits.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from pipeline.config import Settings
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
    # pgserver logs every step at INFO; keep our own output readable (unless --debug).
    if logging.getLogger().level > logging.DEBUG:
        logging.getLogger("pgserver").setLevel(logging.WARNING)
    pgserver = _import_pgserver()
    try:
        pgdata.mkdir(parents=True, exist_ok=True)
        server = pgserver.get_server(pgdata, cleanup_mode="stop")
        _require_passwords(server, pgdata)
    except Exception as exc:  # pgserver raises bare subprocess/assert errors
        raise DatabaseError(_start_failure(pgdata, exc)) from None
    _servers[pgdata] = server
    return server


def _start_failure(pgdata: Path, exc: Exception) -> str:
    """Why the embedded server did not start, pointing at its log only when there is one
    (initdb failing, or a directory that cannot be written, leaves none)."""
    detail = first_line_of(exc)
    message = f"could not start the embedded PostgreSQL in {pgdata}: {exc.__class__.__name__}"
    if detail:
        message += f" ({detail})"
    log_file = pgdata / "log"
    if log_file.is_file():
        message += f"; see {log_file}"
    return message


def first_line_of(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:200] if lines else ""


# initdb gives every local connection `trust`; roles other than the owner must prove who they
# are, or `ingest db psql -U analyst` with any password (or none) would get in.
_HBA_MARKER = (
    "# douyin-ingest: the owner is trusted on the socket, every other role needs its password"
)
_HBA = f"""{_HBA_MARKER}
local all postgres trust
local all all scram-sha-256
host all postgres 127.0.0.1/32 trust
host all all 127.0.0.1/32 scram-sha-256
host all postgres ::1/128 trust
host all all ::1/128 scram-sha-256
"""


def _require_passwords(server: Any, pgdata: Path) -> None:
    hba = pgdata / "pg_hba.conf"
    if _HBA_MARKER in hba.read_text(encoding="utf-8"):
        return
    hba.write_text(_HBA, encoding="utf-8")  # in place: owner and mode stay the server's
    server.psql("SELECT pg_reload_conf();")


def _import_pgserver() -> Any:
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (cron, containers); pgserver then
        # uses /tmp/runtime-$UID, which is fine.
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        import pgserver
    return pgserver


def embedded_url(data_dir: Path) -> str:
    server = embedded_server(data_dir)
    return normalize_url(server.get_uri())


def make_db_engine(url: str, **kwargs: Any) -> Engine:
    kwargs.setdefault("pool_pre_ping", True)
    # A connect timeout, so a network that drops packets (instead of refusing connections)
    # cannot hang a run past its outage window (`--db-outage-seconds`).
    kwargs.setdefault(
        "connect_args",
        {"application_name": f"douyin-ingest[{os.getpid()}]", "connect_timeout": 10},
    )
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


def error_reason(exc: Exception, secret: str | None = None, *, public: Sequence[str] = ()) -> str:
    """The first line of the driver's message (never the SQL or its parameters), with the
    password masked should the server ever echo it: only where it stands as a whole word, and
    not where it is also a value printed on purpose (`public`: the user, host and database
    name), so a short or common password cannot garble the message."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    if not secret or secret in public:
        return reason
    return re.sub(rf"(?<![\w.-]){re.escape(secret)}(?![\w.-])", "***", reason)


def psql_binary() -> str | None:
    """The psql shipped with the embedded server, else one on PATH."""
    pgserver = _import_pgserver()
    bundled = Path(pgserver.__file__).parent / "pginstall" / "bin" / "psql"
    return str(bundled) if bundled.exists() else shutil.which("psql")


def open_database(
    settings: Settings, *, migrate_embedded: bool = True, require_schema: bool = True
) -> Database:
    """The engine the job writes to: the embedded default (migrated automatically), or the
    given URL (checked: never migrated silently)."""
    # Imported here: Alembic (with Mako and Pygments) is ~0.12 s of imports that a process
    # which only needs an engine (`ingest reprocess`'s helpers) does without.
    from pipeline.db.migrate import require_current, upgrade

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
        url = engine.url
        public = [str(v) for v in (url.username, url.host, url.database, url.port) if v]
        reason = error_reason(exc, url.password, public=public)
        raise DatabaseError(f"cannot connect to the database: {reason}") from None
    if require_schema:
        require_current(engine)
    return Database(engine, embedded=False)
