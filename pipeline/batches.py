"""The batch writer's transaction: one batch of fetched links, committed whole, or split until
the one work the database will not take is found.

The writer hands over a batch of `FetchedLink`s; `BatchCommitter.store` (run in a worker
thread) loads their works and records their outcomes in one transaction and returns what the
batch adds to the run's counts. A transient failure repeats the transaction (`OutageGuard`);
any other failure is a property of some work's data (PostgreSQL rejecting a value, the row
builder tripping on it), so the batch is retried in halves: the work that cannot be stored is
recorded as its link's permanent failure, and everything else commits.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from sqlalchemy import Connection, Engine

from pipeline.db.load import LoadResult
from pipeline.db.outage import DatabaseUnavailable, OutageGuard, first_line
from pipeline.db.runs import LinkRecord, save_progress
from pipeline.db.state import mark_fetched
from pipeline.db.tracking import LinkOutcome
from pipeline.rows import FlatWork

log = logging.getLogger(__name__)
links_log = logging.getLogger("pipeline.links")  # -v: one line per link outcome

_REASON_MAX = 300
# `counted_as` of a link skipped because its work is already known (not fetched this run).
SKIPPED_KNOWN = "skipped_known"
# Links skipped because an earlier run found them invalid, or failed permanently on them.
KNOWN_INVALID = "known_invalid"
KNOWN_FAILED = "known_failed"
# Every `counted_as` of a link not fetched this run: recorded as read, its outcome kept.
SKIPS = (SKIPPED_KNOWN, KNOWN_INVALID, KNOWN_FAILED)


@dataclass(frozen=True, slots=True)
class FetchedLink:
    """What a fetch worker hands the writer: one link's outcome and, when loaded, its rows."""

    record: LinkRecord
    work: FlatWork | None
    temporary: bool = False
    # The count it adds to, when not its outcome (a link skipped as already known is
    # recorded with its work's fate but counted as `skipped_known`).
    counted_as: str | None = None

    @property
    def count_key(self) -> str:
        return self.counted_as or self.record.outcome


class LoadWorks(Protocol):
    """The loader seam (`pipeline.db.load.load_works`): writes works in the caller's
    transaction, never commits."""

    def __call__(self, conn: Connection, batch: Iterable[FlatWork], /) -> LoadResult: ...


# Writes what became of each link besides the works; returns corrections to the run's counts.
RecordLinks = Callable[[Connection, Sequence[FetchedLink]], Counter[str]]


class BatchCommitter:
    """Commits batches for one run. Used from one writer thread at a time."""

    def __init__(
        self, engine: Engine, guard: OutageGuard, load: LoadWorks, record: RecordLinks
    ) -> None:
        self.engine = engine
        self.guard = guard
        self.load = load
        self.record = record
        # Keys of links this run committed as temporary failures (to recount them when they
        # are resolved through another link later).
        self.temporary_failures: set[str] = set()

    def store(self, run_id: int, batch: list[FetchedLink], base: Counter[str]) -> Counter[str]:
        """Commit the batch; returns what it adds to the run's counts (`base` is the run's
        counts before it, for the progress saved with each transaction)."""
        delta: Counter[str] = Counter()
        pending = [batch]
        while pending:
            piece = pending.pop()
            try:
                delta.update(self._commit(run_id, piece, plus(base, delta)))
            except DatabaseUnavailable:
                raise
            except Exception as exc:
                if len(piece) > 1:
                    log.info(
                        "a batch of %d could not be stored (%s); retrying it in halves",
                        len(piece),
                        exc.__class__.__name__,
                    )
                    middle = len(piece) // 2
                    pending += [piece[middle:], piece[:middle]]  # first half next
                    continue
                (only,) = piece
                if only.work is None:
                    raise  # not caused by a work's data: a bug, which must not be hidden
                unstorable = _unstorable(only, exc)
                log.warning("%s: %s", only.record.url, unstorable.record.reason)
                pending.append([unstorable])
        return delta

    def _commit(self, run_id: int, piece: list[FetchedLink], base: Counter[str]) -> Counter[str]:
        works = [d.work for d in piece if d.work is not None]

        def transaction() -> Counter[str]:
            with self.engine.begin() as conn:
                delta = _piece_counts(piece, self.load(conn, works))
                mark_fetched(conn, works)  # checked now, available, next check by age
                delta.update(self.record(conn, piece))
                save_progress(conn, run_id, plus(base, delta))
            return delta

        delta = self.guard.call("batch commit", transaction)
        self.temporary_failures.update(d.record.link_key for d in piece if d.temporary)
        if links_log.isEnabledFor(logging.INFO):
            for d in piece:
                _log_outcome(d)
        return delta


def _log_outcome(d: FetchedLink) -> None:
    """The -v line of one link, once its outcome is committed."""
    r = d.record
    outcome = d.count_key
    if d.temporary:
        outcome = "failed_temporary"
    links_log.info(
        "link %s id %s: %s, %d attempts%s",
        r.url,
        r.aweme_id if r.aweme_id is not None else "-",
        outcome,
        r.attempts,
        f": {r.reason}" if r.reason else "",
        extra={
            "link": r.url,
            # A string: 19-digit ids lose digits in a JSON number read as a double (jq, JS).
            "aweme_id": None if r.aweme_id is None else str(r.aweme_id),
            "outcome": outcome,
            "attempts": r.attempts,
            "reason": r.reason,
            "source": r.source,
        },
    )


def plus(base: Counter[str], delta: Counter[str]) -> Counter[str]:
    """base + delta, keeping zero and negative entries (`Counter.__add__` drops them)."""
    total = base.copy()
    total.update(delta)
    return total


def _piece_counts(piece: Sequence[FetchedLink], result: LoadResult) -> Counter[str]:
    counts: Counter[str] = Counter()
    for d in piece:
        counts[d.count_key] += 1
        if d.temporary:
            counts["failed_temporary"] += 1
    counts["works_new"] += result.works_inserted
    counts["works_updated"] += result.works_updated
    counts["snapshots_added"] += result.snapshots_added
    return counts


def describe(exc: BaseException) -> str:
    """An exception as a short, secret-free sentence: its class (the driver's, for a database
    error) and the first line of its message."""
    cause = getattr(exc, "orig", None) or exc
    line = first_line(exc)
    return f"{cause.__class__.__name__}: {line}" if line else cause.__class__.__name__


def _unstorable(d: FetchedLink, exc: Exception) -> FetchedLink:
    """The link of a work the database would not take, recorded as a permanent failure."""
    reason = f"could not be stored: {describe(exc)}"[:_REASON_MAX]
    record = replace(d.record, outcome=LinkOutcome.FAILED, reason=reason)
    return FetchedLink(record, None, temporary=False, counted_as=d.counted_as)
