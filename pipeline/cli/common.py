"""What every command shares: the database it opens (and always closes), logging set up from
its output options, and how a run's summary is shown (a table, or one JSON object)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

import click
from rich.table import Table

from pipeline.cli.exits import exit_code_for
from pipeline.cli.options import DatabaseOptions, OutputOptions
from pipeline.config import Settings
from pipeline.db import engine as db_engine
from pipeline.db.engine import Database
from pipeline.logs import configure_logging
from pipeline.progress import output_console, summary_table
from pipeline.run import RunSummary


@contextmanager
def open_database(
    database: DatabaseOptions | Settings, *, require_schema: bool = True, migrate: bool = True
) -> Iterator[Database]:
    """The database a command works on: the embedded default (migrated automatically unless
    `migrate=False`) or the given URL (checked, never migrated silently). Always disposed."""
    settings = database if isinstance(database, Settings) else _settings_for(database)
    opened = db_engine.open_database(
        settings, migrate_embedded=migrate, require_schema=require_schema
    )
    try:
        yield opened
    finally:
        opened.engine.dispose()


def _settings_for(database: DatabaseOptions) -> Settings:
    return Settings(database_url=database.url, data_dir=database.data_dir)


def setup_logging(output: OutputOptions) -> None:
    configure_logging(output.log_format, output.verbosity, debug=output.debug)


def print_json(value: Any) -> None:
    """One JSON document on stdout."""
    click.echo(json.dumps(value, ensure_ascii=False, default=_jsonable))


def _jsonable(value: Any) -> Any:
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def finish(
    command: str,
    summary: RunSummary,
    settings: Settings,
    output: OutputOptions,
    *,
    title: str | None = None,
    exit_code: int | None = None,
    where: str = "",
) -> int:
    """Show the run's summary (table and hints, or one JSON object); returns its exit code.
    `where`: options the hinted commands need to find the same database (the demo's)."""
    if exit_code is None:
        code = exit_code_for(
            summary.status, summary.counts, parked_for_operator=bool(summary.parked_for_operator)
        )
    else:
        code = exit_code
    hints = _hints(summary, settings, where)
    if output.json:
        print_json(
            {
                "command": command,
                "run_id": summary.run_id,
                "status": summary.status,
                "exit_code": code,
                "counts": _counts(summary.counts),
                "message": summary.message,
                "upstreams": summary.upstreams,
                "hints": hints,
            }
        )
        return code
    console = output_console()
    title = title or f"{command} run {summary.run_id}: {summary.status}"
    console.print(summary_table(title, summary.counts))
    if settings.fetch.pooled and summary.upstreams:
        console.print(upstreams_table(summary.upstreams))
    if summary.message:
        console.print(f"[bold]stopped early:[/bold] {summary.message}")
    elif summary.parked_for_operator:
        for name in summary.parked_for_operator:
            said = summary.upstreams.get(name, {}).get("message", "")
            console.print(f"[bold]parked:[/bold] upstream {name}: {said}", highlight=False)
    if left := summary.counts.get("not_attempted"):
        unread = " (and the rest of standard input)" if summary.counts.get("stdin_not_read") else ""
        console.print(f"not attempted: {left}{unread}, re-run the same command to finish")
    for hint in hints:
        console.print(hint, markup=False, highlight=False)
    return code


def _counts(counts: Mapping[str, int]) -> dict[str, int]:
    return {k: int(v) for k, v in sorted(counts.items()) if v}


def _hints(summary: RunSummary, settings: Settings, where: str) -> list[str]:
    hints = []
    counts = summary.counts
    if (
        summary.status == "operator_error"
        and settings.fetch.api_token is None
        and not settings.fetch.pooled
    ):
        hints.append(
            "No API token was set: pass --api-token or set DOUYIN_API_TOKEN if the service "
            "needs one."
        )
    if counts.get("failed") or counts.get("invalid"):
        hints.append(f"See what failed and why: ingest failures --run {summary.run_id}{where}")
    if counts.get("failed_temporary"):
        hints.append(
            f"Retry the temporary failures later: ingest failures --export retry.txt{where}, "
            "then ingest retry.txt (or re-run the same command)."
        )
    return hints


def upstreams_table(upstreams: Mapping[str, Mapping[str, Any]]) -> Table:
    """One row per upstream service: what it did in the run."""
    table = Table(title="upstream services", header_style="bold")
    for name, justify in UPSTREAM_COLUMNS:
        table.add_column(name, justify=justify)
    for name, u in upstreams.items():
        table.add_row(name, *upstream_cells(u))
    return table


UPSTREAM_COLUMNS: tuple[tuple[str, Literal["left", "right"]], ...] = (
    ("service", "left"),
    ("requests", "right"),
    ("rate/s (limit)", "right"),
    ("429s", "right"),
    ("links", "right"),
    ("parks", "right"),
    ("state", "left"),
)


def upstream_cells(u: Mapping[str, Any]) -> list[str]:
    rate = u.get("rate")
    shown_rate = f"{rate:.2f}" if isinstance(rate, int | float) else "-"
    state = f"parked: {u.get('cause', '?')}" if u.get("parked") else "ok"
    return [
        str(u.get("requests", 0)),
        f"{shown_rate} ({u.get('limit', '?')})",
        str(u.get("rate_limited", 0)),
        str(u.get("links", 0)),
        str(u.get("parks", 0)),
        state,
    ]


def upstreams_line(upstreams: Mapping[str, Mapping[str, Any]]) -> str:
    """The per-service report in one line (`ingest runs`)."""
    parts = []
    for name, u in upstreams.items():
        rate = u.get("rate")
        text = f"{name} {u.get('requests', 0)} req"
        if isinstance(rate, int | float):
            text += f" {rate:.1f}/s"
        if u.get("rate_limited"):
            text += f" {u['rate_limited']}x429"
        if u.get("parks"):
            text += f" parked {u['parks']}x"
        if u.get("parked"):
            text += f" (still parked: {u.get('cause', '?')})"
        parts.append(text)
    return "; ".join(parts)
