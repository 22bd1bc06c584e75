"""Errors that stop a command before or outside a run, each mapped to one exit code in
`pipeline.cli.app`. Upstream trouble is not raised: it is an outcome per link (`FetchResult`)
and a run status (operator_error, failed), which `pipeline.cli.exits.exit_code_for` turns into
77 or 75."""

from __future__ import annotations


class IngestError(Exception):
    """Base class for errors the user should see as one clear line (no traceback)."""


class UsageError(IngestError):
    """The command line or an input file is unusable (missing file, bad option value)."""


class DatabaseError(IngestError):
    """The database cannot be reached, or its schema is behind the code."""


class SchemaBehind(DatabaseError):
    """The database needs `ingest db upgrade` before this version of the job can write to it."""


class AlreadyRunning(IngestError):
    """Another run holds the lock for this job (e.g. an overlapping cron refresh)."""
