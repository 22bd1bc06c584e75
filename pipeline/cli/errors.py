"""How `ingest` reports an error it stops on: one line on stderr (a JSON line with
`--log-format json`), and with JSON, a JSON object on stdout too, so `ingest … | jq .` always
has one document to read. Light on imports: used before the heavy modules are loaded."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime


def json_requested(args: Sequence[str]) -> bool:
    """Whether this command line asks for JSON output (`--log-format json`, or the env var),
    known before click parses it, so even a usage error comes out as JSON."""
    choice = os.environ.get("INGEST_LOG_FORMAT", "text")
    for i, arg in enumerate(args):
        if arg == "--":
            break
        if arg == "--log-format" and i + 1 < len(args):
            choice = args[i + 1]
        elif arg.startswith("--log-format="):
            choice = arg.split("=", 1)[1]
    return choice == "json"


def report_error(message: str, code: int, *, as_json: bool) -> None:
    if not as_json:
        sys.stderr.write(f"ingest: error: {message}\n" if code != 130 else f"ingest: {message}\n")
        return
    ts = datetime.now(UTC).isoformat(timespec="milliseconds")
    line = {"ts": ts, "level": "error", "logger": "ingest", "message": message}
    sys.stderr.write(json.dumps(line, ensure_ascii=False) + "\n")
    sys.stdout.write(json.dumps({"status": "error", "exit_code": code, "error": message}) + "\n")
