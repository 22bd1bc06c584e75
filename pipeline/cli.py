"""The `ingest` command. Thin: parse options, build Settings, call one function, map errors to
exit codes.

Exit codes (also in the README):
    0   every line was loaded, skipped (duplicate / already known) or is gone upstream
    1   usage error: bad option, unreadable input file; nothing was done
    2   finished, but some lines were invalid or failed permanently (`ingest failures`)
    3   database problem: cannot connect, the schema needs `ingest db upgrade`, or the
        database stayed unreachable longer than --db-outage-seconds during the run
    4   another run holds the lock (overlapping `ingest refresh`); nothing was done
    75  temporary failure: some links still failed after retries, or the run stopped early
        because the service did not answer, kept failing the same way (cannot reach
        Douyin), kept rate limiting, or short links could not be resolved; run the same
        command again later to finish (docs/operations.md)
    77  operator action needed: the upstream rejected the token, its cookie expired, it
        relayed a captcha / verification challenge or a refused signature, or the endpoint
        does not exist (wrong --api-base / --api-style)
    130 interrupted (Ctrl-C / SIGTERM); committed batches are kept, re-run to continue
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError

from pipeline import __version__, cli_db
from pipeline.cli_options import (
    Duration,
    batch_size_option,
    build_settings,
    database_options,
    db_outage_option,
    fetch_options,
    output_options,
)
from pipeline.config import Settings
from pipeline.db.engine import error_reason, open_database
from pipeline.errors import (
    AlreadyRunning,
    DatabaseError,
    IngestError,
    UsageError,
)
from pipeline.ingest import STDIN, IngestJob, InputSource, dry_run_counts
from pipeline.logs import configure_logging
from pipeline.progress import make_reporter, output_console, summary_table
from pipeline.run import RunSummary

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_SOME_FAILED = 2
EXIT_DATABASE = 3
EXIT_ALREADY_RUNNING = 4
EXIT_TEMPFAIL = 75
EXIT_OPERATOR = 77
EXIT_INTERRUPTED = 130

_ERROR_EXIT = {
    UsageError: EXIT_USAGE,
    DatabaseError: EXIT_DATABASE,
    AlreadyRunning: EXIT_ALREADY_RUNNING,
}


class _DefaultToRun(click.Group):
    """`ingest urls.txt` means `ingest run urls.txt`: anything that is not a subcommand."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


@click.group(cls=_DefaultToRun, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ingest")
def cli() -> None:
    """Turn Douyin share links into normalized PostgreSQL tables.

    \b
    ingest urls.txt more.txt      ingest share links (same as `ingest run …`; `-` reads stdin)
    ingest demo                   try it: bundled fake upstream + embedded database
    ingest refresh                re-fetch known works and append statistics snapshots (cron)
    ingest runs / failures        what past runs did, and what failed and why

    Every input line ends up loaded, skipped, or recorded with the reason it failed.
    Exit codes: 0 ok · 1 usage · 2 some lines failed · 3 database · 4 already running ·
    75 temporary failure, retry later · 77 operator action needed · 130 interrupted.
    """


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: run the CLI and turn known errors into one line and an exit code."""
    try:
        code = cli.main(args=list(argv) if argv is not None else None, standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        code = EXIT_INTERRUPTED
    except click.ClickException as exc:
        exc.show()
        code = EXIT_USAGE
    except IngestError as exc:
        click.echo(f"ingest: error: {exc}", err=True)
        code = next((c for t, c in _ERROR_EXIT.items() if isinstance(exc, t)), EXIT_USAGE)
    except SQLAlchemyOperationalError as exc:
        click.echo(f"ingest: error: lost the database connection: {error_reason(exc)}", err=True)
        code = EXIT_DATABASE
    except KeyboardInterrupt:
        click.echo("ingest: interrupted", err=True)
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else EXIT_OK)


def exit_code_for(status: str, counts: Counter[str]) -> int:
    if status == "interrupted":
        return EXIT_INTERRUPTED
    if status == "operator_error":
        return EXIT_OPERATOR
    if status == "failed":
        return EXIT_TEMPFAIL
    if counts.get("failed_temporary", 0):
        return EXIT_TEMPFAIL
    if counts.get("failed", 0) or counts.get("invalid", 0):
        return EXIT_SOME_FAILED
    return EXIT_OK


cli_db.register(cli)


def setup_logging(settings: Settings) -> None:
    configure_logging(settings.log_format, settings.verbosity)


def _open_inputs(files: Sequence[str], stack: contextlib.ExitStack) -> list[InputSource]:
    sources = []
    for name in files:
        if name == "-":
            sources.append(InputSource(STDIN, sys.stdin.buffer))
            continue
        try:
            stream = stack.enter_context(open(name, "rb"))  # noqa: SIM115
        except OSError as exc:
            hint = ""
            if isinstance(exc, FileNotFoundError) and not any(c in name for c in "./\\"):
                hint = " (nor is it a command: see `ingest --help`)"
            raise UsageError(f"cannot read input file {name!r}: {exc.strerror}{hint}") from None
        sources.append(InputSource(name, stream))
    return sources


def print_summary(console: Console, title: str, summary: RunSummary) -> None:
    console.print(summary_table(title, summary.counts))
    if summary.message:
        console.print(f"[bold]stopped early:[/bold] {summary.message}")
    if left := summary.counts.get("not_attempted"):
        unread = " (and the rest of standard input)" if summary.counts.get("stdin_not_read") else ""
        console.print(f"not attempted: {left}{unread}, re-run the same command to finish")
    if summary.counts.get("failed") or summary.counts.get("invalid"):
        console.print(
            f"See what failed and why: [bold]ingest failures --run {summary.run_id}[/bold] "
            "(add --export failed.txt to retry them later)."
        )


def run_job(settings: Settings, sources: Sequence[InputSource]) -> RunSummary:
    """Open the database, run the ingest job, and always dispose of the engine."""
    database = open_database(settings)
    try:
        with make_reporter(settings.progress) as reporter:
            job = IngestJob(settings, database.engine, reporter, sources)
            return asyncio.run(job.run())
    finally:
        database.engine.dispose()


@cli.command("run")
@click.argument("files", nargs=-1, required=True, metavar="FILE…")
@fetch_options
@database_options
@db_outage_option
@batch_size_option(200, "Works")
@click.option(
    "--force",
    is_flag=True,
    help="Re-fetch links already loaded (new statistics snapshots only where counts changed).",
)
@click.option(
    "--dry-run", is_flag=True, help="Parse and count the input only: no fetch, no writes."
)
@output_options
def run_command(files: tuple[str, ...], **params: Any) -> None:
    """Ingest share links from FILE… (`-` reads standard input).

    Each line may be a link or pasted share text; blank lines and `#` comments are skipped.
    Links already in the database are not fetched again unless --force.
    """
    settings = build_settings(
        params,
        batch_size=params["batch_size"],
        force=params["force"],
        dry_run=params["dry_run"],
    )
    setup_logging(settings)
    console = output_console()
    with contextlib.ExitStack() as stack:
        sources = _open_inputs(files, stack)
        if settings.dry_run:
            counts = dry_run_counts(sources)
            console.print(summary_table("dry run: nothing fetched or written", counts))
            console.print(
                f"{counts['to_fetch']} links would be fetched (before skipping known ones)."
            )
            raise SystemExit(EXIT_SOME_FAILED if counts["invalid"] else EXIT_OK)
        summary = run_job(settings, sources)
    print_summary(console, f"ingest run {summary.run_id}: {summary.status}", summary)
    raise SystemExit(exit_code_for(summary.status, summary.counts))


@cli.command("demo")
@database_options
@click.option(
    "--input",
    "input_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Links to ingest. Default: the bundled inputs/example_urls.txt.",
)
@click.option(
    "--api-style",
    type=click.Choice(["seed", "amagi"]),
    default="seed",
    show_default=True,
    help="Which upstream contract the fake speaks and the job uses (amagi also resolves the "
    "short links locally).",
)
@output_options
def demo_command(input_file: Path | None, **params: Any) -> None:
    """Try the whole job offline: a bundled fake upstream, the embedded database, example links."""
    from pipeline.demo import EXAMPLE_INPUT, print_sample, run_demo

    settings = build_settings(params)
    setup_logging(settings)
    console = output_console()
    path = input_file or EXAMPLE_INPUT
    database = open_database(settings)
    try:
        console.print(f"database: {database.describe()}")
        with open(path, "rb") as stream:
            sources = [InputSource(path.name, stream)]
            with make_reporter(settings.progress) as reporter:
                summary = asyncio.run(run_demo(settings, database.engine, sources, reporter))
        print_summary(console, f"demo run {summary.run_id}: {summary.status}", summary)
        print_sample(console, database.engine)
    finally:
        database.engine.dispose()
    console.print(
        "\nRun it again: every link is skipped as already known (no requests). "
        "Inspect with `ingest runs` and `ingest failures`."
    )
    code = exit_code_for(summary.status, summary.counts)
    # The example input has one malformed line on purpose; that is the demo working.
    raise SystemExit(EXIT_OK if code == EXIT_SOME_FAILED else code)


@cli.command("reprocess")
@database_options
@batch_size_option(500, "Payloads")
@click.option(
    "--stale",
    is_flag=True,
    help="Only payloads loaded by an older version of the flattener (what `ingest db upgrade` "
    "does by itself).",
)
@output_options
def reprocess_command(batch_size: int, stale: bool, **params: Any) -> None:
    """Rebuild the content of every table from the stored raw payloads, without fetching.
    Work state (gone, schedule, check times) is left alone."""
    from pipeline.reprocess import reprocess

    settings = build_settings(params)
    setup_logging(settings)
    database = open_database(settings)
    try:
        counts = reprocess(database.engine, batch_size, stale_only=stale)
    finally:
        database.engine.dispose()
    click.echo(
        f"reprocessed {counts['payloads']} payloads: {counts['works_updated']} works updated, "
        f"{counts['not_a_work']} not usable"
    )


@cli.command("refresh")
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
@fetch_options
@database_options
@db_outage_option
@batch_size_option(200, "Works")
@output_options
def refresh_command(**params: Any) -> None:
    """Re-fetch known works that are due and append statistics snapshots where counts changed.

    Safe in cron: overlapping runs exit with code 4, a killed run keeps what it committed.
    """
    from pipeline.refresh import RefreshJob, RefreshOptions, count_due, refresh_lock

    settings = build_settings(params, batch_size=params["batch_size"])
    setup_logging(settings)
    options = RefreshOptions(
        stale_after=params["stale_after"],
        limit=params["limit"],
        max_age=params["max_age"],
        budget_seconds=params["budget_seconds"],
        only_authors=tuple(params["only_authors"]),
        dry_run=params["dry_run"],
    )
    console = output_console()
    database = open_database(settings)
    try:
        with refresh_lock(database.engine):
            if options.dry_run:
                due = count_due(database.engine, options)
                console.print(f"{due} works are due for a refresh (nothing fetched).")
                raise SystemExit(EXIT_OK)
            with make_reporter(settings.progress) as reporter:
                job = RefreshJob(settings, database.engine, reporter, options)
                summary = asyncio.run(job.run())
    finally:
        database.engine.dispose()
    print_summary(console, f"refresh run {summary.run_id}: {summary.status}", summary)
    raise SystemExit(exit_code_for(summary.status, summary.counts))
