"""Logging on stderr as text or JSON lines. Messages are written secret-free at the source;
this module only decides the format and the levels.

Levels follow the help of `-q`/`-v`/`--debug`:
    -q       warnings and errors
    (none)   the run's progress and notable events
    -v       + one line per link outcome (logger `pipeline.links`)
    -vv      + every HTTP attempt (the pipeline's debug lines)
    --debug  + the libraries' own debug logs (aiohttp, asyncio, pgserver, alembic)
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime

# Logger of the one-line-per-link outcome lines (`pipeline.batches` writes them).
LINKS_LOGGER = "pipeline.links"

# Structured fields a log call may pass with `extra=`; JSON lines carry them as keys.
FIELDS = ("link", "aweme_id", "outcome", "attempts", "reason", "source", "run_id")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in FIELDS:
            if name in record.__dict__:
                entry[name] = record.__dict__[name]
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(log_format: str, verbosity: int, *, debug: bool = False) -> None:
    """verbosity: -1 quiet, 0 normal, 1 link outcomes, 2 HTTP attempts; `debug`: libraries."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.WARNING)
    pipeline_level = (
        logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity >= 2 else logging.INFO
    )
    logging.getLogger("pipeline").setLevel(logging.DEBUG if debug else pipeline_level)
    links_level = logging.INFO if verbosity >= 1 or debug else logging.WARNING
    logging.getLogger(LINKS_LOGGER).setLevel(links_level)
    # Libraries that set their own levels (pgserver at import) are put back in line.
    for noisy in ("pgserver", "alembic", "aiohttp", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if debug else logging.WARNING)
