"""Exit codes of `ingest`, and how a run's outcome maps to one (also in the README).

0   every line was loaded, skipped (duplicate / already known) or is gone upstream
1   usage error: bad option, unreadable input file, unknown run; nothing was done
2   finished, but some lines were new problems: invalid, or failed permanently
    (`ingest failures`); lines rejected in an earlier run do not count again
3   database problem: cannot connect, the schema needs `ingest db upgrade`, or the
    database stayed unreachable longer than --db-outage-seconds during the run
4   another run holds the lock (overlapping `ingest refresh`); nothing was done
75  temporary failure: some links still failed after retries, or the run stopped early
    because the service did not answer, kept failing the same way (cannot reach Douyin),
    kept rate limiting, or short links could not be resolved; run the same command again
    later to finish (docs/operations.md)
77  operator action needed: the upstream rejected the token, its cookie expired, it relayed
    a captcha / verification challenge or a refused signature, or the endpoint does not
    exist (wrong --api-base / --api-style); with --upstreams, also when the other services
    finished every link but one service ended the run parked for such a cause
130 interrupted (Ctrl-C / SIGTERM); committed batches are kept, re-run to continue
"""

from __future__ import annotations

from collections.abc import Mapping

EXIT_OK = 0
EXIT_USAGE = 1
EXIT_SOME_FAILED = 2
EXIT_DATABASE = 3
EXIT_ALREADY_RUNNING = 4
EXIT_TEMPFAIL = 75
EXIT_OPERATOR = 77
EXIT_INTERRUPTED = 130


def exit_code_for(
    status: str, counts: Mapping[str, int], *, parked_for_operator: bool = False
) -> int:
    """The exit code of a finished run, from its status and counts. Only problems new in this
    run make it 2: a line or link already rejected before is counted `known_invalid`.
    `parked_for_operator`: an upstream service of a pool ended the run parked for a cause
    someone must fix (its cookie expired...): 77, even when the others fetched every link."""
    if status == "interrupted":
        return EXIT_INTERRUPTED
    if status == "operator_error" or parked_for_operator:
        return EXIT_OPERATOR
    if status == "failed":
        return EXIT_TEMPFAIL
    if counts.get("failed_temporary", 0):
        return EXIT_TEMPFAIL
    if counts.get("failed", 0) or counts.get("invalid", 0):
        return EXIT_SOME_FAILED
    return EXIT_OK
