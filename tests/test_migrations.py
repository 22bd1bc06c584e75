"""Models and migrations agree, and every revision can be undone."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, create_engine, inspect, text

import pipeline.db.tracking  # noqa: F401  (registers the bookkeeping tables)
from pipeline.db.migrate import alembic_config, current_revision, head_revision
from pipeline.db.models import Base


def test_upgrade_check_downgrade_roundtrip(db_url: str) -> None:
    engine: Engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            assert current_revision(conn) == head_revision()
            # `alembic check`: autogenerate finds nothing to add, drop or alter.
            command.check(alembic_config(conn))
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "base")
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names()) - {"alembic_version"}
            assert tables == set()
            views = conn.execute(
                text("SELECT count(*) FROM pg_views WHERE schemaname = 'public'")
            ).scalar_one()
            assert views == 0
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "head")
            command.check(alembic_config(conn))
    finally:
        engine.dispose()


def test_every_table_and_column_has_a_comment(db: object) -> None:
    from sqlalchemy import Connection

    assert isinstance(db, Connection)
    insp = inspect(db)
    for table in Base.metadata.tables:
        assert insp.get_table_comment(table)["text"], f"{table} has no comment"
        for column in insp.get_columns(table):
            assert column.get("comment"), f"{table}.{column['name']} has no comment"


def test_psql_describe_shows_a_comment_on_every_column(db_url: str) -> None:
    """What an analyst sees: `\\d+ works` in the psql that ships with the embedded server."""
    import subprocess

    from sqlalchemy.engine import make_url

    from pipeline.db.engine import psql_binary

    psql = psql_binary()
    assert psql, "no psql binary"
    url = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    for relation in ("works", "work_stats", "works_enriched", "work_stats_daily"):
        out = subprocess.run(
            [psql, url, "-X", "-A", "-F", "\t", "-c", f"\\d+ {relation}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
        header = out[1].split("\t")
        rows = [line.split("\t") for line in out[2:] if line.count("\t") == len(header) - 1]
        assert rows, out
        description = header.index("Description")
        missing = [r[0] for r in rows if not r[description].strip()]
        assert not missing, f"{relation}: columns without a comment: {missing}"


def test_raw_payloads_are_stored_without_pglz(db_url: str) -> None:
    """Migration 0010: lz4 where the server has it, else uncompressed; downgrade restores the
    defaults (pglz, EXTENDED)."""
    query = text(
        "SELECT attname, attstorage, attcompression FROM pg_attribute"
        " WHERE attrelid = 'raw_payloads'::regclass AND attname IN ('payload', 'complete_payload')"
    )
    lz4_query = text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
    engine: Engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            lz4 = "lz4" in conn.execute(lz4_query).scalar_one()
            stored = {r.attname: (r.attstorage, r.attcompression) for r in conn.execute(query)}
        expected = ("x", "l") if lz4 else ("e", "")
        assert stored == {"payload": expected, "complete_payload": expected}
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0009")
        with engine.connect() as conn:
            stored = {r.attname: (r.attstorage, r.attcompression) for r in conn.execute(query)}
        assert stored == {"payload": ("x", ""), "complete_payload": ("x", "")}
    finally:
        engine.dispose()
