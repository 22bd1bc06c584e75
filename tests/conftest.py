"""Real PostgreSQL for every test that needs one.

Where the server comes from, first match wins:
1. TEST_DATABASE_URL (any PostgreSQL the tests may create databases on);
2. a PostgreSQL container via testcontainers, when a Docker engine answers;
3. an embedded PostgreSQL from the `pgserver` package (works offline, also as root).
If none can be had, the database tests fail (never skip): CI must not go green without them.

The schema is migrated once per session with Alembic into a template database. Tests that use
`db` get a connection inside a transaction that is rolled back afterwards; tests that need
commits (the CLI, concurrency, kill-and-resume) use `db_url`, a fresh database cloned from the
template.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url

from helpers import ThreadedFake
from pipeline.db.engine import normalize_url
from pipeline.db.migrate import upgrade

# In-repo copies of ../shared/fixtures/upstream (real bodies; see SOURCES.md there), so a clone
# of this repository alone can run the suite.
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "upstream"
TEMPLATE_DB = "ingest_template"


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    assert FIXTURES.is_dir(), f"shared fixtures not found at {FIXTURES}"
    return FIXTURES


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a maintenance database on a server where the tests may CREATE DATABASE."""
    if url := os.environ.get("TEST_DATABASE_URL"):
        yield normalize_url(url)
        return
    if _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("postgres:16-alpine", driver="psycopg") as pg:
            yield normalize_url(pg.get_connection_url())
        return
    import pgserver

    with tempfile.TemporaryDirectory(prefix="ingest-test-pg-") as tmp:
        server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="stop")
        try:
            yield normalize_url(server.get_uri())
        finally:
            server.cleanup()


def _with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def admin_engine(pg_server_url: str) -> Iterator[Engine]:
    engine = create_engine(pg_server_url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def template_url(admin_engine: Engine, pg_server_url: str) -> str:
    with admin_engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {TEMPLATE_DB} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {TEMPLATE_DB}"))
    url = _with_database(pg_server_url, TEMPLATE_DB)
    engine = create_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


def _clone_template(admin_engine: Engine, name: str) -> None:
    with admin_engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}"))


@pytest.fixture(scope="session")
def engine(admin_engine: Engine, pg_server_url: str, template_url: str) -> Iterator[Engine]:
    """Engine on a migrated database shared by the rollback-per-test `db` fixture."""
    _clone_template(admin_engine, "ingest_shared")
    engine = create_engine(_with_database(pg_server_url, "ingest_shared"))
    yield engine
    engine.dispose()


@pytest.fixture
def db(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that is rolled back after the test."""
    with engine.connect() as conn:
        trans = conn.begin()
        try:
            yield conn
        finally:
            trans.rollback()


_db_counter = itertools.count()


@pytest.fixture
def db_url(admin_engine: Engine, pg_server_url: str, template_url: str) -> Iterator[str]:
    """A fresh, migrated database of its own (cloned from the template), dropped afterwards."""
    name = f"ingest_t{os.getpid()}_{next(_db_counter)}"
    _clone_template(admin_engine, name)
    try:
        yield _with_database(pg_server_url, name)
    finally:
        with admin_engine.connect() as conn, contextlib.suppress(Exception):
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def pg_data_dir() -> Iterator[Path]:
    """A data directory for an embedded server started by the command under test.

    Not under `tmp_path`: as root the server runs as another OS user, which must be able to
    reach the directory, and a second pytest started at the same time resets pytest's per-user
    temp root (`pytest-of-<user>`) to mode 0700. A directory of our own keeps its mode."""
    parent = Path(tempfile.mkdtemp(prefix="ingest-data-"))
    parent.chmod(0o755)
    try:
        yield parent / "data"
    finally:
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def fake_server() -> Iterator[Callable[..., ThreadedFake]]:
    started: list[ThreadedFake] = []

    def start(**kwargs: object) -> ThreadedFake:
        server = ThreadedFake(**kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.close()
