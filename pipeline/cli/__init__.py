"""The `ingest` command line: one module per command group, registered in `pipeline.cli.app`.

This module stays light (no database or HTTP libraries), so that Ctrl-C while the heavy ones
load is an interruption like any other, not a traceback.
"""

from __future__ import annotations

from pipeline.cli.exits import (
    EXIT_ALREADY_RUNNING,
    EXIT_DATABASE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_OPERATOR,
    EXIT_SOME_FAILED,
    EXIT_TEMPFAIL,
    EXIT_USAGE,
    exit_code_for,
)

__all__ = [
    "EXIT_ALREADY_RUNNING",
    "EXIT_DATABASE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_OPERATOR",
    "EXIT_SOME_FAILED",
    "EXIT_TEMPFAIL",
    "EXIT_USAGE",
    "exit_code_for",
    "main",
]


def main(argv: list[str] | None = None) -> None:
    """Console entry point (`ingest`, `python -m pipeline`)."""
    import sys

    from pipeline.cli.errors import json_requested, report_error

    args = list(argv) if argv is not None else sys.argv[1:]
    try:
        from pipeline.cli.app import main as app_main
    except KeyboardInterrupt:
        report_error("interrupted", EXIT_INTERRUPTED, as_json=json_requested(args))
        sys.exit(EXIT_INTERRUPTED)
    app_main(args)
