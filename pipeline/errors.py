"""The error taxonomy. Each class maps to one exit code in `pipeline.cli`."""

from __future__ import annotations


class IngestError(Exception):
    """Base class for errors the user should see as one clear line (no traceback)."""


class UsageError(IngestError):
    """The command line or an input file is unusable (missing file, bad option value)."""


class OperatorError(IngestError):
    """Someone must act before retrying: expired upstream cookie, rejected token."""


class UpstreamUnavailable(IngestError):
    """The upstream service is down or unreachable: a temporary failure, retry later."""


class DatabaseError(IngestError):
    """The database cannot be reached, or its schema is behind the code."""


class SchemaBehind(DatabaseError):
    """The database needs `ingest db upgrade` before this version of the job can write to it."""


class AlreadyRunning(IngestError):
    """Another run holds the lock for this job (e.g. an overlapping cron refresh)."""
