"""`ingest run FILE…` (also plain `ingest FILE…`) and `ingest reprocess`."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Sequence

import click

from pipeline.cli.common import finish, open_database, print_json, setup_logging
from pipeline.cli.exits import EXIT_OK, EXIT_SOME_FAILED
from pipeline.cli.options import (
    DatabaseOptions,
    OutputOptions,
    batch_size_option,
    build_settings,
    database_options,
    db_outage_option,
    fetch_options,
    output_options,
)
from pipeline.config import FetchSettings
from pipeline.errors import UsageError
from pipeline.ingest import STDIN, IngestJob, InputSource, dry_run_counts
from pipeline.progress import make_reporter, output_console, summary_table
from pipeline.runtime import steady_gc


def open_inputs(files: Sequence[str], stack: contextlib.ExitStack) -> list[InputSource]:
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


@click.command("run", short_help="Ingest share links from files or stdin.")
@click.argument("files", nargs=-1, required=True, metavar="FILE…")
@fetch_options
@database_options
@db_outage_option
@batch_size_option(200, "Works")
@click.option(
    "--force",
    is_flag=True,
    help="Re-fetch links already loaded, known gone, rejected as invalid or failed for good "
    "(new statistics snapshots only where counts changed).",
)
@click.option(
    "--dry-run", is_flag=True, help="Parse and count the input only: no fetch, no writes."
)
@output_options
def run_command(
    files: tuple[str, ...],
    fetch: FetchSettings,
    database: DatabaseOptions,
    output: OutputOptions,
    db_outage_seconds: float,
    batch_size: int,
    force: bool,
    dry_run: bool,
) -> None:
    """Ingest share links from FILE… (`-` reads standard input).

    Each line may be a link or pasted share text; blank lines and `#` comments are skipped.
    Links already loaded, known gone, rejected by the service as invalid or failed for good are
    not fetched again unless --force; temporary failures are.
    """
    settings = build_settings(
        database,
        output,
        fetch,
        batch_size=batch_size,
        db_outage_seconds=db_outage_seconds,
        force=force,
        dry_run=dry_run,
    )
    setup_logging(output)
    with contextlib.ExitStack() as stack:
        sources = open_inputs(files, stack)
        if dry_run:
            counts = dry_run_counts(sources)
            code = EXIT_SOME_FAILED if counts["invalid"] else EXIT_OK
            if output.json:
                print_json({"command": "run", "dry_run": True, "exit_code": code,
                            "counts": dict(counts)})  # fmt: skip
            else:
                console = output_console()
                console.print(summary_table("dry run: nothing fetched or written", counts))
                console.print(
                    f"{counts['to_fetch']} links would be fetched (before skipping known ones)."
                )
            raise SystemExit(code)
        with open_database(settings) as db, make_reporter(settings.progress) as reporter:
            job = IngestJob(settings, db.engine, reporter, sources)
            with steady_gc():
                summary = asyncio.run(job.run())
    raise SystemExit(finish("ingest", summary, settings, output))


@click.command("reprocess", short_help="Rebuild the tables from stored payloads.")
@database_options
@batch_size_option(500, "Payloads")
@click.option(
    "--stale",
    is_flag=True,
    help="Only payloads loaded by an older version of the flattener (what `ingest db upgrade` "
    "does by itself).",
)
@output_options
def reprocess_command(
    database: DatabaseOptions, output: OutputOptions, batch_size: int, stale: bool
) -> None:
    """Rebuild the content of every table from the stored raw payloads, without fetching.
    Work state (gone, schedule, check times) is left alone."""
    from pipeline.reprocess import reprocess

    setup_logging(output)
    with open_database(database) as db, steady_gc():
        counts = reprocess(db.engine, batch_size, stale_only=stale)
    if output.json:
        print_json({"command": "reprocess", "exit_code": EXIT_OK, "counts": dict(counts)})
        return
    click.echo(
        f"reprocessed {counts['payloads']} payloads: {counts['works_updated']} works updated, "
        f"{counts['not_a_work']} not usable"
    )
