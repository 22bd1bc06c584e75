"""Alembic environment: the URL comes from the caller's connection, -x url=, DATABASE_URL, or
the embedded default, in that order (the same rules as the `ingest` command)."""

from __future__ import annotations

import os
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import Connection

import pipeline.db.tracking  # noqa: F401  (registers the bookkeeping tables)
from pipeline.config import default_data_dir
from pipeline.db.engine import embedded_url, make_db_engine
from pipeline.db.models import Base

config = context.config
if config.config_file_name is not None and not config.attributes.get("connection"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("DATABASE_URL")
    if url:
        return url
    data_dir = os.environ.get("INGEST_DATA_DIR")
    return embedded_url(default_data_dir() if not data_dir else Path(data_dir))


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        compare_server_default=True,
        include_schemas=False,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_db_engine(_url())
    try:
        with engine.connect() as conn:
            _run(conn)
    finally:
        engine.dispose()


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    run_migrations_online()
