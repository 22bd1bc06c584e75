"""Inspection and administration commands: `ingest db …`, `ingest runs`, `ingest failures`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from pipeline.cli_options import build_settings, database_options
from pipeline.db.engine import Database, embedded_server, open_database, psql_binary
from pipeline.db.migrate import current_revision, head_revision, upgrade
from pipeline.db.runs import failed_links, recent_runs, shown_status
from pipeline.errors import UsageError
from pipeline.progress import output_console


def _database(params: dict[str, Any], *, require_schema: bool = True) -> Database:
    settings = build_settings(params)
    return open_database(settings, migrate_embedded=True, require_schema=require_schema)


@click.group("db")
def db_group() -> None:
    """Manage the database: migrations, connection details."""


@db_group.command("upgrade")
@database_options
def db_upgrade(**params: Any) -> None:
    """Apply pending migrations (the embedded database is upgraded automatically)."""
    database = _database(params, require_schema=False)
    try:
        with database.engine.connect() as conn:
            before = current_revision(conn)
        rebuilt = upgrade(database.engine)
        click.echo(f"database at {head_revision()} (was {before or 'empty'})")
        if rebuilt:
            click.echo(f"rebuilt the content of {rebuilt} stored payloads with this version")
    finally:
        database.engine.dispose()


@db_group.command("current")
@database_options
def db_current(**params: Any) -> None:
    """Print the schema revision of the database and of this code."""
    database = _database(params, require_schema=False)
    try:
        with database.engine.connect() as conn:
            current = current_revision(conn)
        head = head_revision()
        state = "up to date" if current == head else "behind: run `ingest db upgrade`"
        click.echo(f"database: {current or 'empty'} · code: {head} · {state}")
    finally:
        database.engine.dispose()


@db_group.command("url")
@database_options
def db_url(**params: Any) -> None:
    """Print the database URL (password hidden) and how to open it with psql."""
    settings = build_settings(params)
    if settings.database_url is not None:
        database = _database(params, require_schema=False)
        click.echo(database.safe_url)
        database.engine.dispose()
        return
    server = embedded_server(settings.data_dir)
    uri = server.get_uri()
    click.echo(uri)
    click.echo(
        "\nThe embedded server runs while an `ingest` command uses it. For an interactive\n"
        "session that keeps it running, use:  ingest db psql"
    )


@db_group.command("psql", context_settings={"ignore_unknown_options": True})
@database_options
@click.argument("psql_args", nargs=-1, type=click.UNPROCESSED)
def db_psql(psql_args: tuple[str, ...], **params: Any) -> None:
    """Open psql on the database (the embedded one by default); extra arguments go to psql."""
    settings = build_settings(params)
    if settings.database_url is not None:
        database = _database(params, require_schema=False)
        uri = database.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        database.engine.dispose()
    else:
        server = embedded_server(settings.data_dir)
        uri = server.get_uri()
    psql = psql_binary()
    if psql is None:
        raise UsageError("psql not found on PATH")
    code = subprocess.call([psql, uri, *psql_args])  # noqa: S603 - user's own database
    raise SystemExit(code)


@click.command("runs")
@database_options
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="How many.")
@click.option(
    "--json", "as_json", is_flag=True, help="One JSON object per line instead of a table."
)
def runs_command(limit: int, as_json: bool, **params: Any) -> None:
    """Recent runs, newest first, with their counts by outcome.

    A run still marked running whose process died (no heartbeat for a minute, or its pid gone
    on this host) shows as abandoned; the next run marks it so in the table too."""
    database = _database(params)
    try:
        with database.engine.connect() as conn:
            rows = recent_runs(conn, limit)
    finally:
        database.engine.dispose()
    if as_json:
        for r in rows:
            record = {k: _jsonable(v) for k, v in r._mapping.items() if k != "now"}
            record["status"] = shown_status(r, r.now)
            click.echo(json.dumps(record, ensure_ascii=False))
        return
    table = Table(title="ingest runs", header_style="bold")
    for name in ("run", "kind", "status", "started", "took", "counts"):
        table.add_column(name)
    for r in rows:
        took = f"{(r.finished_at - r.started_at).total_seconds():.1f}s" if r.finished_at else "-"
        counts = ", ".join(f"{k} {r.counts[k]}" for k in _RUN_COUNT_KEYS if r.counts.get(k))
        table.add_row(
            str(r.run_id),
            r.kind,
            shown_status(r, r.now),
            f"{r.started_at:%Y-%m-%d %H:%M:%S}",
            took,
            counts,
        )
    output_console().print(table)


@click.command("failures")
@database_options
@click.option("--run", "run_id", type=int, help="Only links last seen by this run.")
@click.option(
    "--export",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the failed links to FILE, one per line, in a form `ingest FILE` accepts.",
)
def failures_command(run_id: int | None, export: Path | None, **params: Any) -> None:
    """Links that are invalid or failed, and why."""
    database = _database(params)
    try:
        with database.engine.connect() as conn:
            rows = failed_links(conn, run_id)
    finally:
        database.engine.dispose()
    if export is not None:
        retryable = [r.url for r in rows if r.url.startswith("https://")]
        export.write_text("".join(f"{u}\n" for u in retryable), encoding="utf-8")
        click.echo(
            f"wrote {len(retryable)} links to {export} ({len(rows) - len(retryable)} "
            "rejected lines without a link were left out)"
        )
        return
    table = Table(title=f"{len(rows)} failed or invalid links", header_style="bold")
    for name in ("outcome", "link or text", "reason", "source", "run"):
        table.add_column(name, overflow="fold")
    for r in rows:
        table.add_row(
            r.last_outcome, r.url, r.last_reason or "", r.source or "", str(r.last_run_id)
        )
    output_console().print(table)


_RUN_COUNT_KEYS = (
    "due",
    "loaded",
    "changed",
    "unchanged",
    "gone",
    "invalid",
    "failed",
    "duplicate",
    "skipped_known",
    "resolved_elsewhere",
    "payloads",
)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def register(group: click.Group) -> None:
    from pipeline import cli_readonly

    cli_readonly.register(db_group)
    group.add_command(db_group)
    group.add_command(runs_command)
    group.add_command(failures_command)
