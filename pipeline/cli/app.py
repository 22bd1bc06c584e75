"""The `ingest` group: every command registered in one place, and the error → exit code
mapping (the codes are in `pipeline.cli.exits` and the README)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import click
from sqlalchemy.exc import OperationalError as SQLAlchemyOperationalError

from pipeline import __version__
from pipeline.cli.db import db_group
from pipeline.cli.demo import demo_command
from pipeline.cli.errors import json_requested, report_error
from pipeline.cli.exits import (
    EXIT_ALREADY_RUNNING,
    EXIT_DATABASE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
)
from pipeline.cli.refresh import refresh_command
from pipeline.cli.run import reprocess_command, run_command
from pipeline.cli.runs import failures_command, runs_command
from pipeline.db.engine import error_reason
from pipeline.errors import AlreadyRunning, DatabaseError, IngestError, UsageError

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


@click.group(
    cls=_DefaultToRun,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="ingest")
def cli() -> None:
    """Turn Douyin share links into normalized PostgreSQL tables.

    \b
    ingest urls.txt more.txt      ingest share links (same as `ingest run …`; `-` reads stdin)
    ingest demo                   try it: bundled fake upstream, its own embedded database
    ingest refresh                re-fetch known works and append statistics snapshots (cron)
    ingest runs / failures        what past runs did, and what failed and why

    Every input line ends up loaded, skipped, or recorded with the reason it failed.
    Exit codes: 0 ok · 1 usage · 2 new invalid or failed lines · 3 database · 4 already
    running · 75 temporary failure, retry later · 77 operator action needed · 130 interrupted.
    """


# Registration, in one place.
for _command in (
    run_command,
    demo_command,
    refresh_command,
    reprocess_command,
    runs_command,
    failures_command,
    db_group,
):
    cli.add_command(_command)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the CLI and turn known errors into one line (JSON with --log-format json) and an
    exit code."""
    args = list(argv) if argv is not None else sys.argv[1:]
    as_json = json_requested(args)
    try:
        code = cli.main(args=args, prog_name="ingest", standalone_mode=False)
    except click.exceptions.Abort:
        report_error("interrupted", EXIT_INTERRUPTED, as_json=as_json)
        code = EXIT_INTERRUPTED
    except click.ClickException as exc:
        if as_json:
            report_error(exc.format_message(), EXIT_USAGE, as_json=True)
        else:
            exc.show()
        code = EXIT_USAGE
    except IngestError as exc:
        code = next((c for t, c in _ERROR_EXIT.items() if isinstance(exc, t)), EXIT_USAGE)
        report_error(str(exc), code, as_json=as_json)
    except SQLAlchemyOperationalError as exc:
        code = EXIT_DATABASE
        report_error(f"lost the database connection: {error_reason(exc)}", code, as_json=as_json)
    except KeyboardInterrupt:
        report_error("interrupted", EXIT_INTERRUPTED, as_json=as_json)
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else EXIT_OK)
