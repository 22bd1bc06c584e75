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
SKIPPED = ("duplicate", "skipped_known", "known_invalid", "known_failed")
SUMMARY_ROWS = (
    ("lines", "input lines read (blank and # comment lines not counted)"),
    ("links", "links and rejected lines"),
    ("duplicate", "skipped: repeated earlier in this run"),
    ("skipped_known", "skipped: already loaded or known gone (use --force to refetch)"),
    ("known_invalid", "skipped: rejected as invalid before (not a new problem)"),
    ("known_failed", "skipped: failed for good before (--force to try again)"),
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
    skipped = sum(counts.get(k, 0) for k in SKIPPED)
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
        finished = done + sum(counts.get(k, 0) for k in SKIPPED)
        elapsed = max(time.monotonic() - self._started, 1e-6)
        self._progress.update(
            self._task,
            completed=finished,
            total=max(counts.get("links", 0), finished) or None,
            rate=done / elapsed,
            outcomes=_outcome_text(counts),
        )


class LogReporter:
    """Periodic log lines instead of a bar (not a terminal, or --no-progress). `total` is the
    count that says how much work there is: `links` read by an ingest, works `due` in a
    refresh."""

    def __init__(self, interval_s: float = 10.0, total: str = "links") -> None:
        self._interval = interval_s
        self._last = time.monotonic()
        self._total = total

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
            log.info("progress: %s · %s", self.describe_total(counts), _outcome_text(counts))

    def describe_total(self, counts: Mapping[str, int]) -> str:
        if self._total == "due":
            return f"{counts.get('due', 0)} works due so far"
        return f"read {counts.get('links', 0)} links"


# Wide enough that no table or line is ever wrapped when stdout is a file or a pipe: a link
# split over two lines cannot be grepped or copied (rich would wrap at 80 columns).
UNWRAPPED_WIDTH = 100_000


def output_console() -> Console:
    """Where summaries and tables go: stdout; never wrapped when it is not a terminal."""
    if sys.stdout.isatty():
        return Console()
    return Console(width=UNWRAPPED_WIDTH, soft_wrap=True)


def make_reporter(progress_bar: bool, total: str = "links") -> BarReporter | LogReporter:
    """A progress bar on stderr when it is a terminal (or when asked), periodic log lines
    otherwise; stdout keeps only the summary, so it can be piped."""
    return BarReporter(Console(stderr=True)) if progress_bar else LogReporter(total=total)


def summary_table(title: str, counts: Mapping[str, int]) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("count", justify="right")
    table.add_column("what")
    for key, label in SUMMARY_ROWS:
        if key in counts or key in DONE_OUTCOMES:
            table.add_row(str(counts.get(key, 0)), label)
    return table
