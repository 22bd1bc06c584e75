"""Shared by the real-peer tests: plain HTTP to a peer, ingest runs against it, table snapshots."""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import MetaData, create_engine, select, text

from helpers import run_ingest

# Not content: when a run happened, and which run it was.
_RUN_TABLES = ("alembic_version", "ingest_runs")
CONTENT_TIMES = frozenset({"created_at"})  # publish time; every other `*_at` is wall-clock


def _is_content(name: str) -> bool:
    return name in CONTENT_TIMES or not (name.endswith("_at") or "run_id" in name)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def media_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()


def http_get(base_url: str, path_and_query: str) -> Answer:
    """One GET on 127.0.0.1, the answer whatever its status (no redirect followed)."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: Any, **kwargs: Any) -> None:
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(base_url + path_and_query, timeout=30) as response:
            return Answer(response.status, dict(response.headers), response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers), error.read())


def ingest(
    api_base: str,
    lines: Sequence[str],
    tmp_path: Path,
    db_url: str,
    *extra: str,
    style: str = "amagi",
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """`ingest run links.txt --api-style amagi --api-base …` into `db_url`, as a user runs it."""
    path = tmp_path / "links.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["run", str(path), "--api-base", api_base, "--api-style", style, "--no-progress"]
    return run_ingest([*args, *extra], env={"DATABASE_URL": db_url}, timeout=timeout)


def snapshot(db_url: str) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table but the run log, without wall-clock times (fetched, seen, due:
    `*_at` but the publish time) and run numbers, in a stable order."""
    engine = create_engine(db_url)
    metadata = MetaData()
    metadata.reflect(engine)
    tables: dict[str, list[tuple[Any, ...]]] = {}
    try:
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                if table.name in _RUN_TABLES:
                    continue
                columns = [c for c in table.columns if _is_content(c.name)]
                rows = [tuple(row) for row in conn.execute(select(*columns))]
                tables[table.name] = sorted(rows, key=repr)
    finally:
        engine.dispose()
    return tables


def empty_all_tables(db_url: str) -> None:
    engine = create_engine(db_url)
    metadata = MetaData()
    metadata.reflect(engine)
    names = ", ".join(t.name for t in metadata.sorted_tables if t.name != "alembic_version")
    try:
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    finally:
        engine.dispose()


def query(db_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]
    finally:
        engine.dispose()
