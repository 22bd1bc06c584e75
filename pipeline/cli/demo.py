"""`ingest demo`: the whole job offline, in a database of its own."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from pipeline.cli.common import finish, open_database, setup_logging
from pipeline.cli.exits import EXIT_OK, EXIT_SOME_FAILED, exit_code_for
from pipeline.cli.options import (
    DatabaseOptions,
    OutputOptions,
    api_style_option,
    build_settings,
    output_options,
)
from pipeline.config import FetchSettings
from pipeline.ingest import InputSource
from pipeline.progress import make_reporter, output_console
from pipeline.run import RunSummary


@click.command("demo", short_help="Try it offline: fake upstream, a database of its own.")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    show_default="the per-user data directory's `-demo` sibling",
    help="Directory of the demo's own embedded database (created; emptied by every demo). "
    "Never the default database, never --database-url.",
)
@click.option(
    "--input",
    "input_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Links to ingest. Default: the bundled inputs/example_urls.txt.",
)
@api_style_option(envvar=None)
@output_options
def demo_command(
    data_dir: Path | None, input_file: Path | None, api_style: str, output: OutputOptions
) -> None:
    """Try the whole job offline: a bundled fake upstream, example links, and an embedded
    database of the demo's own, emptied first, so every demo fetches and loads everything and
    your real data is never touched."""
    from pipeline.demo import (
        EXAMPLE_INPUT,
        default_demo_dir,
        empty_database,
        prepare_demo_dir,
        print_sample,
        run_demo,
    )

    directory = prepare_demo_dir(data_dir or default_demo_dir())
    database = DatabaseOptions(url=None, data_dir=directory)
    fetch = FetchSettings(api_style="amagi" if api_style == "amagi" else "seed")
    settings = build_settings(database, output, fetch)
    setup_logging(output)
    path = input_file or EXAMPLE_INPUT
    with open_database(settings) as db:
        empty_database(db.engine)
        if not output.json:
            output_console().print(f"demo database: {db.describe()} in {directory}")
        with open(path, "rb") as stream, make_reporter(settings.progress) as reporter:
            sources = [InputSource(path.name, stream)]
            summary = asyncio.run(run_demo(settings, db.engine, sources, reporter))
        code = exit_code_for(summary.status, summary.counts)
        # The example input has malformed lines on purpose: rejecting them is the demo working.
        on_purpose = (
            code == EXIT_SOME_FAILED and not summary.counts.get("failed") and input_file is None
        )
        code = EXIT_OK if on_purpose else code
        title = _title(summary, on_purpose)
        where = f" --data-dir {directory}"
        finish("demo", summary, settings, output, title=title, exit_code=code, where=where)
        if not output.json:
            print_sample(output_console(), db.engine)
            output_console().print(
                f"\nInspect it: ingest runs --data-dir {directory} · "
                f"ingest db psql --data-dir {directory}"
            )
    raise SystemExit(code)


def _title(summary: RunSummary, on_purpose: bool) -> str:
    title = f"demo run {summary.run_id}: {summary.status}"
    if on_purpose:
        invalid = summary.counts.get("invalid", 0)
        title = (
            f"demo run {summary.run_id}: done; {summary.counts.get('loaded', 0)} works loaded, "
            f"{invalid} malformed example lines rejected on purpose"
        )
    return title
