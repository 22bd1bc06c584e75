"""`grant_readonly` against a real PostgreSQL: a session logged in as the role reads every table
and view (and tables created later) and every kind of write fails with a permission error."""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import click
import psycopg.errors
import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from helpers import load_fetched
from pipeline.cli_readonly import register
from pipeline.config import Secret
from pipeline.db.readonly import grant_readonly, validate_role_name
from pipeline.errors import UsageError
from pipeline.flatten import flatten

PASSWORD = "s3cret-Pa55 word"
_names = itertools.count()


def _relations(conn: Connection) -> list[str]:
    return list(
        conn.execute(
            text(
                "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p', 'v', 'm') ORDER BY 1"
            )
        ).scalars()
    )


@pytest.fixture
def role_name() -> str:
    return f"ro_{os.getpid()}_{next(_names)}"


@pytest.fixture
def admin(db_url: str, role_name: str, fixtures_dir: Path) -> Iterator[Engine]:
    """An engine as the database owner on a fresh database holding the real fixtures; drops the
    test role afterwards (roles are cluster-wide)."""
    engine = create_engine(db_url)
    detail = json.loads((fixtures_dir / "video_detail_7071967230287744267.json").read_text())
    with engine.begin() as conn:
        load_fetched(conn, [flatten(detail["aweme_detail"], datetime(2026, 11, 1, tzinfo=UTC))])
    try:
        yield engine
    finally:
        with engine.begin() as conn:
            exists = conn.execute(
                text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role_name}
            ).scalar()
            if exists:
                conn.execute(text(f"DROP OWNED BY {role_name}"))
                conn.execute(text(f"DROP ROLE {role_name}"))
        engine.dispose()


def _as_role(db_url: str, role: str) -> Engine:
    url = make_url(db_url).set(username=role, password=PASSWORD)
    return create_engine(url)


def _denied(engine: Engine, sql: str) -> None:
    with engine.connect() as conn, pytest.raises(DBAPIError) as caught:
        conn.execute(text(sql))
    assert isinstance(caught.value.orig, psycopg.errors.InsufficientPrivilege), caught.value


def test_role_reads_every_table_and_view_and_writes_nothing(
    admin: Engine, db_url: str, role_name: str
) -> None:
    with admin.begin() as conn:
        grant = grant_readonly(conn, role_name, Secret(PASSWORD))
        relations = _relations(conn)
    assert (grant.created, grant.login) == (True, True)
    assert {"works", "work_stats", "share_links", "works_enriched", "work_stats_daily"} <= set(
        relations
    )

    reader = _as_role(db_url, role_name)
    try:
        with reader.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar_one() == role_name
            for relation in relations:
                conn.execute(text(f"SELECT * FROM {relation} LIMIT 1")).all()
            assert conn.execute(text("SELECT count(*) FROM works_enriched")).scalar_one() == 1
        for sql in (
            "INSERT INTO hashtags (name) VALUES ('x')",
            "UPDATE works SET description = 'x'",
            "DELETE FROM work_stats",
            "TRUNCATE raw_payloads",
            "CREATE TABLE mine (x int)",
            "CREATE VIEW mine AS SELECT 1",
            "CREATE SCHEMA mine",
            "DROP TABLE works CASCADE",
            "DROP VIEW works_enriched",
            "ALTER TABLE works ADD COLUMN x int",
            "CREATE INDEX ix_mine ON works (region)",
            "COMMENT ON TABLE works IS 'x'",
        ):
            _denied(reader, sql)
        with admin.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM works")).scalar_one() == 1
    finally:
        reader.dispose()


def test_tables_and_views_created_later_are_readable_too(
    admin: Engine, db_url: str, role_name: str
) -> None:
    with admin.begin() as conn:
        grant_readonly(conn, role_name, Secret(PASSWORD))
    with admin.begin() as conn:
        conn.execute(text("CREATE TABLE later_table (x int)"))
        conn.execute(text("INSERT INTO later_table VALUES (42)"))
        conn.execute(text("CREATE VIEW later_view AS SELECT x + 1 AS y FROM later_table"))
    reader = _as_role(db_url, role_name)
    try:
        with reader.connect() as conn:
            assert conn.execute(text("SELECT x FROM later_table")).scalar_one() == 42
            assert conn.execute(text("SELECT y FROM later_view")).scalar_one() == 43
        _denied(reader, "INSERT INTO later_table VALUES (1)")
    finally:
        reader.dispose()


def _scram_matches(verifier: str, password: str) -> bool:
    """Check a stored SCRAM-SHA-256 verifier (RFC 5802/7677) against a plain ASCII password."""
    method, rest = verifier.split("$", 1)
    params, keys = rest.split("$")
    iterations, salt = params.split(":")
    stored_key, server_key = (base64.b64decode(k) for k in keys.split(":"))
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    return (
        method == "SCRAM-SHA-256"
        and hashlib.sha256(client_key).digest() == stored_key
        and hmac.digest(salted, b"Server Key", "sha256") == server_key
    )


def test_password_is_stored_hashed_and_a_regrant_keeps_login(admin: Engine, role_name: str) -> None:
    with admin.begin() as conn:
        grant_readonly(conn, role_name, Secret(PASSWORD))
        encryption = conn.execute(text("SHOW password_encryption")).scalar_one()
        stored = conn.execute(
            text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"), {"r": role_name}
        ).scalar_one()
    assert PASSWORD not in stored
    if encryption == "scram-sha-256":
        assert _scram_matches(stored, PASSWORD)
        assert not _scram_matches(stored, PASSWORD + "x")
    else:
        assert encryption == "md5"
        assert stored == "md5" + hashlib.md5((PASSWORD + role_name).encode()).hexdigest()
    # Again without a password: the role is updated in place and can still log in.
    with admin.begin() as conn:
        again = grant_readonly(conn, role_name, None)
        can_login = conn.execute(
            text("SELECT rolcanlogin FROM pg_roles WHERE rolname = :r"), {"r": role_name}
        ).scalar_one()
    assert (again.created, again.login, can_login) == (False, True, True)


def test_without_a_password_a_new_role_cannot_log_in(db: Connection, role_name: str) -> None:
    grant = grant_readonly(db, role_name, None)
    assert (grant.created, grant.login) == (True, False)
    assert (
        db.execute(
            text("SELECT rolcanlogin FROM pg_roles WHERE rolname = :r"), {"r": role_name}
        ).scalar_one()
        is False
    )


def test_an_existing_role_loses_its_write_privileges(db: Connection, role_name: str) -> None:
    db.execute(text(f"CREATE ROLE {role_name}"))
    db.execute(text(f"GRANT INSERT, UPDATE, DELETE ON works TO {role_name}"))
    db.execute(text(f"GRANT CREATE ON SCHEMA public TO {role_name}"))
    grant_readonly(db, role_name, None)
    can = db.execute(
        text(
            "SELECT has_table_privilege(:r, 'works', 'INSERT, UPDATE, DELETE'), "
            "has_schema_privilege(:r, 'public', 'CREATE'), has_table_privilege(:r, 'works', "
            "'SELECT')"
        ),
        {"r": role_name},
    ).one()
    assert tuple(can) == (False, False, True)


def test_write_privileges_inherited_from_another_role_are_refused(
    db: Connection, role_name: str
) -> None:
    db.execute(text(f"CREATE ROLE {role_name}_writer"))
    db.execute(text(f"GRANT INSERT ON works TO {role_name}_writer"))
    db.execute(text(f"CREATE ROLE {role_name} INHERIT IN ROLE {role_name}_writer"))
    with pytest.raises(UsageError, match="could still write"):
        grant_readonly(db, role_name, None)


def test_a_superuser_or_the_current_user_is_refused(db: Connection, role_name: str) -> None:
    db.execute(text(f"CREATE ROLE {role_name} SUPERUSER"))
    with pytest.raises(UsageError, match="superuser"):
        grant_readonly(db, role_name, None)
    me = db.execute(text("SELECT current_user")).scalar_one()
    with pytest.raises(UsageError, match="running this command"):
        grant_readonly(db, me, None)


@pytest.mark.parametrize(
    "name",
    [
        "",
        "Analyst",
        "1reader",
        "read-only",
        "reader; DROP TABLE works",
        'reader"',
        "pg_reader",
        "public",
        "current_user",
        "r" * 64,
        "读者",
    ],
)
def test_invalid_role_names_are_rejected_before_any_sql(name: str) -> None:
    with pytest.raises(UsageError):
        validate_role_name(name)


def test_valid_role_names_pass() -> None:
    assert validate_role_name("analyst_ro") == "analyst_ro"
    assert validate_role_name("_r" + "x" * 61) == "_r" + "x" * 61


def test_cli_command_grants_with_a_password_from_the_environment(
    admin: Engine, db_url: str, role_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    group = click.Group("db")
    register(group)
    monkeypatch.setenv("RO_PASSWORD", PASSWORD)
    runner = CliRunner()
    result = runner.invoke(
        group,
        ["grant-readonly", role_name, "--password-env", "RO_PASSWORD", "--database-url", db_url],
    )
    assert result.exit_code == 0, result.output
    assert f"role {role_name} created" in result.output
    assert PASSWORD not in result.output
    with admin.connect() as conn:
        assert conn.execute(
            text("SELECT has_table_privilege(:r, 'works_enriched', 'SELECT')"), {"r": role_name}
        ).scalar_one()

    missing = runner.invoke(
        group,
        ["grant-readonly", role_name, "--password-env", "NOT_SET_X", "--database-url", db_url],
    )
    assert missing.exit_code != 0
    assert isinstance(missing.exception, UsageError)
    assert "NOT_SET_X is not set" in str(missing.exception)
