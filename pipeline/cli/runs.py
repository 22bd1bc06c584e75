"""`ingest runs` and `ingest failures`: what past runs did, and what failed and why."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.table import Table

from pipeline.cli.common import open_database, print_json, upstreams_line
from pipeline.cli.options import DatabaseOptions, database_options
from pipeline.db.runs import failed_links, recent_runs, run_exists, shown_status
from pipeline.errors import UsageError
from pipeline.progress import output_console

_RUN_COUNT_KEYS = (
    "due",
    "loaded",
    "changed",
    "unchanged",
    "gone",
    "invalid",
    "known_invalid",
    "known_failed",
    "failed",
    "duplicate",
    "skipped_known",
    "resolved_elsewhere",
    "payloads",
)

json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON lines on stdout instead of a table: one object per row (`jq` reads them).",
)


@click.command("runs", short_help="Recent runs and their counts.")
@database_options
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True, help="How many.")
@json_option
def runs_command(database: DatabaseOptions, limit: int, as_json: bool) -> None:
    """Recent runs, newest first, with their counts by outcome.

    A run still marked running whose process died (no heartbeat for a minute, or its pid gone
    on this host) shows as abandoned; the next run marks it so in the table too."""
    with open_database(database) as db, db.engine.connect() as conn:
        rows = recent_runs(conn, limit)
    if as_json:
        for r in rows:
            record: dict[str, Any] = {k: v for k, v in r._mapping.items() if k != "now"}
            record["status"] = shown_status(r, r.now)
            print_json(record)
        return
    table = Table(title="ingest runs", header_style="bold")
    pooled = any(len(r.counts.get("upstreams") or {}) > 1 for r in rows)
    for name in ("run", "kind", "status", "started", "took", "counts"):
        table.add_column(name)
    if pooled:  # runs with --upstreams: what each service did
        table.add_column("upstreams")
    for r in rows:
        took = f"{(r.finished_at - r.started_at).total_seconds():.1f}s" if r.finished_at else "-"
        counts = ", ".join(f"{k} {r.counts[k]}" for k in _RUN_COUNT_KEYS if r.counts.get(k))
        cells = [
            str(r.run_id),
            r.kind,
            shown_status(r, r.now),
            f"{r.started_at:%Y-%m-%d %H:%M:%S}",
            took,
            counts,
        ]
        if pooled:
            cells.append(upstreams_line(r.counts.get("upstreams") or {}))
        table.add_row(*cells)
    output_console().print(table)


@click.command("failures", short_help="Links that are invalid or failed, and why.")
@database_options
@click.option("--run", "run_id", type=int, help="Only links last seen by this run.")
@click.option(
    "--export",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the links worth retrying (temporary failures) to FILE, one per line, in a form "
    "`ingest FILE` accepts.",
)
@click.option(
    "--all",
    "export_all",
    is_flag=True,
    help="With --export: every failed or invalid link, not only the temporary failures.",
)
@json_option
def failures_command(
    database: DatabaseOptions,
    run_id: int | None,
    export: Path | None,
    export_all: bool,
    as_json: bool,
) -> None:
    """Links that are invalid or failed, and why."""
    if export_all and export is None:
        raise UsageError("--all goes with --export FILE")
    with open_database(database) as db, db.engine.connect() as conn:
        if run_id is not None and not run_exists(conn, run_id):
            raise UsageError(f"there is no run {run_id} (see `ingest runs`)")
        rows = failed_links(conn, run_id)
    if export is not None:
        _export(rows, export, export_all)
        return
    if as_json:
        for r in rows:
            print_json(_failure(r))
        return
    table = Table(title=f"{len(rows)} failed or invalid links", header_style="bold")
    for name in ("outcome", "link or text", "reason", "source", "run"):
        table.add_column(name, overflow="fold")
    for r in rows:
        outcome = f"{r.last_outcome} (temporary)" if r.retryable else r.last_outcome
        table.add_row(outcome, r.url, r.last_reason or "", r.source or "", str(r.last_run_id))
    output_console().print(table)


def _failure(r: Any) -> dict[str, Any]:
    return {
        "outcome": r.last_outcome,
        "retryable": r.retryable,
        "link": r.url,
        # A string: 19-digit ids lose digits in a JSON number read as a double (jq, JS).
        "aweme_id": None if r.aweme_id is None else str(r.aweme_id),
        "reason": r.last_reason,
        "source": r.source,
        "attempts": r.attempts,
        "run_id": r.last_run_id,
    }


def _export(rows: list[Any], path: Path, export_all: bool) -> None:
    """Write the links to retry: the temporary failures, or (--all) every link that is a
    link (a rejected line of text without one cannot be fed back)."""
    links = [r.url for r in rows if r.url.startswith("https://")]
    chosen = links if export_all else [r.url for r in rows if r.retryable]
    try:
        path.write_text("".join(f"{u}\n" for u in chosen), encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {str(path)!r}: {exc.strerror}") from None
    left_out = len(rows) - len(chosen)
    what = (
        "rejected lines without a link"
        if export_all
        else "invalid or permanently failed, retrying would not help; --all to include them"
    )
    click.echo(f"wrote {len(chosen)} links to {path} ({left_out} left out: {what})")
