"""Alembic from code: upgrade, current revision, and the "is the schema behind?" check."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from pipeline.errors import SchemaBehind

_ROOT = Path(__file__).resolve().parents[2]


def alembic_config(connection: Connection | None = None) -> Config:
    cfg = Config(str(_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(_ROOT / "migrations"))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> int:
    """Apply migrations; at head, also rebuild the content of payloads loaded by an older
    flattener (the repair step of data-fixing migrations). Returns how many were rebuilt."""
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)
    if revision != "head":
        return 0
    from pipeline.reprocess import repair_stale_content  # needs the models at head

    return repair_stale_content(engine)


def require_current(engine: Engine) -> None:
    """Refuse to write to a database whose schema is not at this code's head revision."""
    with engine.connect() as conn:
        current = current_revision(conn)
    head = head_revision()
    if current != head:
        raise SchemaBehind(
            f"the database schema is at revision {current or 'none (empty database)'}, "
            f"this version of ingest needs {head}: run `ingest db upgrade` first"
        )
