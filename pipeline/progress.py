"""Progress while a run goes on, and the summary after it.

On a terminal: a rich progress bar with rate, elapsed time and counts by outcome. Otherwise (cron,
CI, pipes): one log line every `interval_s` seconds, so logs stay readable.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Mapping
from types import TracebackType

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

log = logging.getLogger("pipeline.progress")

DONE_OUTCOMES = ("loaded", "gone", "invalid", "failed")
SUMMARY_ROWS = (
    ("lines", "input lines read (blank and # comment lines not counted)"),
    ("links", "links and rejected lines"),
    ("duplicate", "skipped: repeated earlier in this run"),
    ("skipped_known", "skipped: already loaded or known gone (use --force to refetch)"),
    ("loaded", "loaded"),
    ("gone", "gone: deleted, private or under review"),
    ("invalid", "invalid: rejected with a reason"),
    ("failed", "failed after retries (see `ingest failures`)"),
    ("not_attempted", "not attempted: the run stopped early (re-run the same command)"),
    ("due", "refresh: works due and dispatched"),
    ("changed", "refresh: counts changed (snapshot added)"),
    ("unchanged", "refresh: counts unchanged (check time recorded)"),
    ("stopped_by_budget", "refresh: stopped starting fetches at --budget-seconds"),
    ("works_new", "new works"),
    ("works_updated", "works updated"),
    ("snapshots_added", "statistics snapshots added"),
)


def _outcome_text(counts: Mapping[str, int]) -> str:
    parts = [f"{name} {counts.get(name, 0)}" for name in DONE_OUTCOMES]
    skipped = counts.get("duplicate", 0) + counts.get("skipped_known", 0)
    return " · ".join([*parts, f"skipped {skipped}"])


class BarReporter:
    """A live progress bar with rate, elapsed time, ETA and counts by outcome. Inputs are
    streamed, so `total` grows as lines are read; the ETA firms up once reading is done."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]ingest"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:.1f}/s"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[outcomes]}"),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("ingest", total=None, rate=0.0, outcomes="")
        self._started = time.monotonic()

    def __enter__(self) -> BarReporter:
        self._progress.start()
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._progress.stop()

    def update(self, counts: Counter[str]) -> None:
        done = sum(counts.get(n, 0) for n in DONE_OUTCOMES)
        finished = done + counts.get("duplicate", 0) + counts.get("skipped_known", 0)
        elapsed = max(time.monotonic() - self._started, 1e-6)
        self._progress.update(
            self._task,
            completed=finished,
            total=max(counts.get("links", 0), finished) or None,
            rate=done / elapsed,
            outcomes=_outcome_text(counts),
        )


class LogReporter:
    """Periodic log lines instead of a bar (not a terminal, or --no-progress)."""

    def __init__(self, interval_s: float = 10.0) -> None:
        self._interval = interval_s
        self._last = time.monotonic()

    def __enter__(self) -> LogReporter:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def update(self, counts: Counter[str]) -> None:
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            log.info("progress: read %d links · %s", counts.get("links", 0), _outcome_text(counts))


def output_console() -> Console:
    """Where summaries and tables go: stdout, at least 120 columns wide when it is not a
    terminal (rich would otherwise wrap at 80 in logs and pipes)."""
    return Console() if sys.stdout.isatty() else Console(width=120)


def make_reporter(progress_bar: bool) -> BarReporter | LogReporter:
    """A progress bar on stderr when it is a terminal (or when asked), periodic log lines
    otherwise; stdout keeps only the summary, so it can be piped."""
    return BarReporter(Console(stderr=True)) if progress_bar else LogReporter()


def summary_table(title: str, counts: Mapping[str, int]) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("count", justify="right")
    table.add_column("what")
    for key, label in SUMMARY_ROWS:
        if key in counts or key in DONE_OUTCOMES:
            table.add_row(str(counts.get(key, 0)), label)
    return table
