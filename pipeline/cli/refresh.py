"""`ingest refresh`: re-fetch known works that are due (for cron)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import click

from pipeline.cli.common import finish, open_database, print_json, setup_logging
from pipeline.cli.exits import EXIT_OK
from pipeline.cli.options import (
    DatabaseOptions,
    Duration,
    OutputOptions,
    batch_size_option,
    build_settings,
    database_options,
    db_outage_option,
    fetch_options,
    output_options,
)
from pipeline.config import FetchSettings
from pipeline.progress import make_reporter, output_console
from pipeline.runtime import steady_gc


@click.command("refresh", short_help="Re-fetch known works that are due (cron).")
@click.option(
    "--stale-after",
    type=Duration(),
    help="Re-check every work last checked longer ago than this (e.g. 6h), instead of the "
    "age-based schedule (hourly on day one, daily in the first month, weekly after).",
)
@click.option("--limit", type=click.IntRange(1), help="Check at most this many works.")
@click.option(
    "--max-age", type=Duration(), help="Only works published within this long (e.g. 30d)."
)
@click.option(
    "--budget-seconds",
    type=click.FloatRange(min=1),
    help="Start no new fetch after this many seconds, so the run fits its cron slot.",
)
@click.option(
    "--only-author",
    "only_authors",
    multiple=True,
    metavar="SEC_UID",
    help="Only works by this author (repeatable).",
)
@click.option("--dry-run", is_flag=True, help="Show how many works are due; fetch nothing.")
@click.option(
    "--exclusive",
    is_flag=True,
    help="Work alone: exit with code 4 if another refresh is running (the default joins it, "
    "each worker claiming its own share of the due works).",
)
@click.option(
    "--lease-seconds",
    type=click.FloatRange(min=1),
    default=120.0,  # pipeline.db.claims.DEFAULT_LEASE (not imported: --help stays light)
    show_default=True,
    help="How long a claimed work stays this worker's without renewal: after a crash, the "
    "other workers take its works once this much time has passed.",
)
@fetch_options
@database_options
@db_outage_option
@batch_size_option(200, "Works")
@output_options
def refresh_command(
    stale_after: timedelta | None,
    limit: int | None,
    max_age: timedelta | None,
    budget_seconds: float | None,
    only_authors: tuple[str, ...],
    dry_run: bool,
    exclusive: bool,
    lease_seconds: float,
    fetch: FetchSettings,
    database: DatabaseOptions,
    output: OutputOptions,
    db_outage_seconds: float,
    batch_size: int,
) -> None:
    """Re-fetch known works that are due and append statistics snapshots where counts changed.

    Safe in cron and on many hosts: overlapping runs share the due works (each is fetched
    once), a killed run keeps what it committed and its works go to the others.
    With --exclusive, a run works alone and exits with code 4 if another is running.
    """
    from pipeline.refresh import RefreshJob, RefreshOptions, count_due, refresh_lock

    settings = build_settings(
        database, output, fetch, batch_size=batch_size, db_outage_seconds=db_outage_seconds
    )
    setup_logging(output)
    options = RefreshOptions(
        stale_after=stale_after,
        limit=limit,
        max_age=max_age,
        budget_seconds=budget_seconds,
        only_authors=only_authors,
        dry_run=dry_run,
        lease=timedelta(seconds=lease_seconds),
    )
    with open_database(settings) as db, refresh_lock(db.engine, exclusive=exclusive):
        if options.dry_run:
            due = count_due(db.engine, options)
            if output.json:
                print_json({"command": "refresh", "dry_run": True, "due": due,
                            "exit_code": EXIT_OK})  # fmt: skip
            else:
                output_console().print(f"{due} works are due for a refresh (nothing fetched).")
            raise SystemExit(EXIT_OK)
        with make_reporter(settings.progress, total="due") as reporter:
            job = RefreshJob(settings, db.engine, reporter, options)
            with steady_gc():
                summary = asyncio.run(job.run())
    raise SystemExit(finish("refresh", summary, settings, output))
