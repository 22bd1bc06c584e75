"""Shared by the benchmarks: a throwaway PostgreSQL, fresh migrated databases, timing, tables.

The server is `BENCH_DATABASE_URL` (any PostgreSQL on which the benchmark may CREATE and DROP
databases) or, by default, an embedded one from `pgserver` in a temporary directory that is
deleted afterwards. Each benchmark works in databases named `bench_*` that it creates fresh.
"""

from __future__ import annotations

import contextlib
import logging
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from pipeline.db.engine import normalize_url
from pipeline.db.migrate import upgrade


@dataclass(frozen=True, slots=True)
class Result:
    """One line of the summary table: what was compared, the ratio, and the absolute numbers."""

    bench: str
    comparison: str
    ratio: float | None  # None: an absolute figure, no comparison
    detail: str

    def line(self) -> str:
        if self.ratio is None:
            ratio = "-"
        else:
            ratio = f"{self.ratio:.2f}x" if self.ratio < 10 else f"{self.ratio:.1f}x"
        return f"{self.bench:<14} {self.comparison:<64} {ratio:>8}  {self.detail}"


@contextlib.contextmanager
def pg_server() -> Iterator[str]:
    """URL of a maintenance database on a server where databases may be created."""
    if url := os.environ.get("BENCH_DATABASE_URL"):
        yield normalize_url(url)
        return
    logging.getLogger("pgserver").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")  # platformdirs, via pgserver
    import pgserver

    with tempfile.TemporaryDirectory(prefix="ingest-bench-pg-") as tmp:
        server = pgserver.get_server(Path(tmp) / "pg", cleanup_mode="delete")  # type: ignore[attr-defined]
        try:
            yield normalize_url(server.get_uri())
        finally:
            server.cleanup()


def with_database(url: str, name: str) -> str:
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def _admin(server_url: str) -> Engine:
    return create_engine(server_url, isolation_level="AUTOCOMMIT")


def create_database(server_url: str, name: str, *, template: str | None = None) -> Engine:
    """A new database `name` (dropped first if it exists), migrated to head unless copied
    from `template`; returns an engine on it."""
    admin = _admin(server_url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            suffix = f' TEMPLATE "{template}"' if template else ""
            conn.execute(text(f'CREATE DATABASE "{name}"{suffix}'))
    finally:
        admin.dispose()
    engine = create_engine(with_database(server_url, name))
    if template is None:
        upgrade(engine)
    return engine


def drop_database(server_url: str, name: str) -> None:
    admin = _admin(server_url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def postgres_cpu_s(server_url: str) -> float | None:
    """CPU seconds the embedded server behind `server_url` has used so far: the postmaster, its
    live backends, and the exited ones (the postmaster's children counters). None for a server
    that is not a local process found by its socket directory."""
    host = make_url(server_url).query.get("host")
    if not isinstance(host, str):
        return None
    for proc in psutil.process_iter(["cmdline"]):
        if host in (proc.info["cmdline"] or []) and "-D" in proc.info["cmdline"]:
            try:
                own = proc.cpu_times()
                total = own.user + own.system + own.children_user + own.children_system
                for child in proc.children():
                    with contextlib.suppress(psutil.Error):
                        times = child.cpu_times()
                        total += times.user + times.system
            except psutil.Error:
                return None
            return total
    return None


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def fmt_s(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def print_results(results: Sequence[Result]) -> None:
    print()
    head = "comparison (median of runs, side by side)"
    print(f"{'benchmark':<14} {head:<64} {'ratio':>8}  absolute")
    print("-" * 120)
    for r in results:
        print(r.line())
