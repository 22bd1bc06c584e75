"""The orchestrator: the only place that knows the order of the stages and commits.

    links ──► fetch (N workers, one rate limiter) ──► flatten ──► batch writer ──► commit

`FetchJob` is that machinery; where the links come from is its subclasses' business:
`pipeline.ingest.IngestJob` reads input files, `pipeline.refresh.RefreshJob` picks due works.

Stages are joined by bounded queues, so memory stays flat whatever the input size, and the
database work runs in a thread so fetching never waits on it. Each batch is one transaction:
the works it loads and the outcome of every link in it commit together, so a run killed at any
point has lost nothing it reported, and re-running the same command finishes the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import OperationalError

from pipeline.config import Settings
from pipeline.db.load import LoadResult, load_works
from pipeline.db.runs import (
    LinkRecord,
    finish_run,
    record_links,
    save_progress,
    start_run,
)
from pipeline.db.state import mark_fetched, mark_gone
from pipeline.flatten import FlatWork, NotAWork, flatten
from pipeline.inputs import ShareLink
from pipeline.upstream.client import UpstreamClient
from pipeline.upstream.outcomes import FetchResult, Outcome

log = logging.getLogger(__name__)

COMMIT_ATTEMPTS = 3
COMMIT_RETRY_DELAY_S = 1.0


class Reporter(Protocol):
    """Where progress goes: a progress bar on a terminal, log lines otherwise."""

    def update(self, counts: Counter[str]) -> None: ...


@dataclass(slots=True)
class RunSummary:
    run_id: int | None
    status: str
    counts: Counter[str] = field(default_factory=Counter)
    message: str | None = None


@dataclass(frozen=True, slots=True)
class FetchedLink:
    """What a fetch worker hands the writer: one link's outcome and, when loaded, its rows."""

    record: LinkRecord
    work: FlatWork | None
    temporary: bool = False


def gone_works(batch: Sequence[FetchedLink]) -> list[tuple[int, str]]:
    """(aweme_id, reason) of every link in the batch that came back gone."""
    return [
        (d.record.aweme_id, d.record.reason or "gone")
        for d in batch
        if d.record.outcome == "gone" and d.record.aweme_id is not None
    ]


def utc_now() -> datetime:
    return datetime.now(UTC)


def outcome_record(link: ShareLink, source: str, result: FetchResult, now: datetime) -> FetchedLink:
    """Map one fetch result to the link's recorded fate (and the rows to load, if any).

    Never raises for what the upstream sent: a payload flatten cannot use, or one whose work is
    not the work asked for, is a permanent failure of this link with its reason."""
    aweme_id = result.aweme_id if result.aweme_id is not None else link.aweme_id

    def done(
        outcome: str, reason: str | None, work: FlatWork | None = None, temp: bool = False
    ) -> FetchedLink:
        return FetchedLink(
            LinkRecord(link.key, link.url, aweme_id, outcome, reason, result.attempts, source),
            work,
            temp,
        )

    if result.outcome is Outcome.OK and result.aweme_detail is not None:
        try:
            work = flatten(result.aweme_detail, now)
        except NotAWork as exc:
            return done("failed", f"upstream payload is not a work: {exc}")
        except Exception as exc:  # a payload shape flatten did not expect must not stop the run
            log.warning("flatten failed on %s: %s", link.url, exc.__class__.__name__)
            return done("failed", f"upstream payload could not be read: {exc.__class__.__name__}")
        if aweme_id is not None and work.work.aweme_id != aweme_id:
            return done(
                "failed",
                f"service answered with a different work (asked {aweme_id}, "
                f"got {work.work.aweme_id})",
            )
        aweme_id = work.work.aweme_id
        return done("loaded", None, work)
    if result.outcome is Outcome.GONE:
        return done("gone", result.reason or "gone")
    if result.outcome is Outcome.INVALID:
        return done("invalid", result.reason or "invalid")
    if result.outcome is Outcome.UNUSABLE:
        return done("failed", result.reason or "unusable answer")
    return done("failed", result.reason or result.outcome.value, temp=True)


class FetchJob:
    """The machinery shared by `ingest FILE…` and `ingest refresh`: N fetch workers behind one
    client, a batch writer, signal handling and the run record. Subclasses say where the
    links come from (`_produce`) and what else a batch writes (`_record`)."""

    kind = "ingest"

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        reporter: Reporter,
        *,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.reporter = reporter
        self.now = now
        self.counts: Counter[str] = Counter()  # committed: what the database holds
        self._uncommitted: Counter[str] = Counter()
        self._unreachable_in_a_row = 0
        self._unreachable_limit = max(10, 2 * settings.fetch.concurrency)
        self.run_id: int | None = None
        self._stop = asyncio.Event()
        self._stop_reason: str | None = None
        self._status_override: str | None = None
        concurrency = settings.fetch.concurrency
        self._fetch_q: asyncio.Queue[tuple[ShareLink, str] | None] = asyncio.Queue(concurrency * 4)
        self._write_q: asyncio.Queue[FetchedLink | None] = asyncio.Queue(settings.batch_size * 2)

    # -- control -----------------------------------------------------------------------------

    def report(self) -> None:
        """Show progress: committed counts plus outcomes still waiting for their batch."""
        shown = self.counts.copy()
        shown.update(self._uncommitted)
        self.reporter.update(shown)

    async def _hand_to_writer(self, done: FetchedLink) -> None:
        self._uncommitted[done.record.outcome] += 1
        await self._write_q.put(done)
        self.report()

    def request_stop(self, reason: str, status: str) -> None:
        if not self._stop.is_set():
            self._stop_reason, self._status_override = reason, status
            self._stop.set()

    # -- stages ------------------------------------------------------------------------------

    async def _produce(self) -> None:
        """Put (link, source) pairs on `self._fetch_q` until done or `self._stop` is set."""
        raise NotImplementedError

    def _record(self, conn: Connection, batch: Sequence[FetchedLink]) -> None:
        """Besides loading the works: write what became of each link, and mark known works
        that came back gone (a deleted work found by `--force` is as gone as one found by a
        refresh)."""
        assert self.run_id is not None
        record_links(conn, self.run_id, [d.record for d in batch])
        mark_gone(conn, gone_works(batch), self.now())

    async def _fetch_worker(self, client: UpstreamClient) -> None:
        while (item := await self._fetch_q.get()) is not None:
            link, where = item
            try:
                result = await client.fetch(link)
                if result.outcome is Outcome.OPERATOR:
                    # Nothing is recorded for this link: it stays pending; the next run retries.
                    # (The client has logged the reason once.)
                    self.request_stop(result.reason, "operator_error")
                    continue
                self._watch_reachability(result)
                done = outcome_record(link, where, result, self.now())
            except Exception as exc:
                # A bug must not kill a worker (the queues would stall) nor lose the link.
                log.exception("internal error on %s", link.url)
                record = LinkRecord(
                    link.key, link.url, link.aweme_id, "failed",
                    f"internal error: {exc.__class__.__name__}", 0, where,
                )  # fmt: skip
                done = FetchedLink(record, None, temporary=True)
            if done.record.outcome != "loaded":
                log.debug("%s %s: %s", done.record.outcome, link.url, done.record.reason)
            await self._hand_to_writer(done)

    def _watch_reachability(self, result: FetchResult) -> None:
        """Stop early when the service is plainly down, instead of spending every link's
        retries on it: links not reached stay pending, and a re-run later finishes them."""
        if result.outcome.retryable and result.http_status is None:
            self._unreachable_in_a_row += 1
        else:
            self._unreachable_in_a_row = 0
        if self._unreachable_in_a_row >= self._unreachable_limit:
            reason = (
                f"the upstream service did not answer for {self._unreachable_in_a_row} links "
                f"in a row (last: {result.reason}); stopped, re-run later"
            )
            log.error("stopping: %s", reason)
            self.request_stop(reason, "failed")

    async def _end_of_input(self, workers: int) -> None:
        for _ in range(workers):
            await self._fetch_q.put(None)

    async def _write(self) -> None:
        try:
            await self._write_batches()
        except Exception as exc:
            # Stop fetching what could not be stored; the error itself surfaces from run().
            self.request_stop(f"database write failed: {exc.__class__.__name__}", "failed")
            raise

    async def _write_batches(self) -> None:
        batch: list[FetchedLink] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.batch_seconds
        while True:
            timeout = max(0.0, deadline - loop.time())
            try:
                item = await asyncio.wait_for(self._write_q.get(), timeout)
            except TimeoutError:
                pass  # time to flush whatever the batch holds
            else:
                if item is None:
                    await self._flush(batch)
                    return
                batch.append(item)
            if len(batch) >= self.settings.batch_size or loop.time() >= deadline:
                await self._flush(batch)
                batch = []
                deadline = loop.time() + self.settings.batch_seconds

    async def _flush(self, batch: list[FetchedLink]) -> None:
        if not batch:
            return
        counts = self.counts.copy()
        for d in batch:
            counts[d.record.outcome] += 1
            if d.temporary:
                counts["failed_temporary"] += 1
        result = await asyncio.to_thread(self._commit, batch, counts)
        # Counts move only after the commit: what is reported is what is stored.
        for d in batch:
            self._uncommitted[d.record.outcome] -= 1
            self.counts[d.record.outcome] += 1
            if d.temporary:
                self.counts["failed_temporary"] += 1
        self.counts["works_new"] += result.works_inserted
        self.counts["works_updated"] += result.works_updated
        self.counts["snapshots_added"] += result.snapshots_added
        self.report()

    def _commit(self, batch: list[FetchedLink], counts: Counter[str]) -> LoadResult:
        """One transaction per batch. A dropped connection or a deadlock/serialization failure
        rolls the whole transaction back, so the batch (still in memory, and idempotent to load)
        is simply committed again, a few times, before the run gives up."""
        assert self.run_id is not None
        works = [d.work for d in batch if d.work is not None]
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                with self.engine.begin() as conn:
                    result = load_works(conn, works)
                    mark_fetched(conn, works)
                    self._record(conn, batch)
                    save_progress(conn, self.run_id, counts)
                return result
            except OperationalError as exc:
                if attempt == COMMIT_ATTEMPTS:
                    raise
                log.warning(
                    "database write failed (%s), retrying the batch (%d/%d)",
                    exc.orig.__class__.__name__ if exc.orig else "error",
                    attempt,
                    COMMIT_ATTEMPTS - 1,
                )
                time.sleep(COMMIT_RETRY_DELAY_S * attempt)
        raise AssertionError("unreachable")

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> RunSummary:
        self.run_id = await asyncio.to_thread(self._start)
        loop = asyncio.get_running_loop()
        self._install_signal_handlers(loop)
        f = self.settings.fetch
        try:
            async with UpstreamClient(
                f.api_base,
                f.api_style,
                token=f.api_token,
                rate=f.rate,
                concurrency=f.concurrency,
                timeout_s=f.timeout_s,
                retries=f.retries,
                resolve_base=f.resolve_base,
            ) as client:
                writer = asyncio.create_task(self._write())
                workers = [
                    asyncio.create_task(self._fetch_worker(client)) for _ in range(f.concurrency)
                ]
                producer = asyncio.create_task(self._produce())
                stopper = asyncio.create_task(self._stop.wait())
                await asyncio.wait({producer, stopper}, return_when=asyncio.FIRST_COMPLETED)
                if producer.done() and not self._stop.is_set():
                    producer.result()  # re-raise input errors
                    all_workers: asyncio.Future[Any] = asyncio.gather(*workers)
                    # One end-of-input marker per worker, sent alongside so that a stop (a
                    # signal, a failed write) can never leave this waiting on a full queue.
                    ender = asyncio.create_task(self._end_of_input(len(workers)))
                    await asyncio.wait([all_workers, stopper], return_when=asyncio.FIRST_COMPLETED)
                    ender.cancel()
                for task in (producer, *workers):
                    task.cancel()
                await asyncio.gather(producer, *workers, return_exceptions=True)
                stopper.cancel()
                if not writer.done():
                    await self._write_q.put(None)
                await writer
        finally:
            self._remove_signal_handlers(loop)
        status = self._final_status()
        await asyncio.to_thread(self._finish, status)
        return RunSummary(self.run_id, status, self.counts.copy(), self._stop_reason)

    def _final_status(self) -> str:
        if self._status_override:
            return self._status_override
        if self.counts["failed"] or self.counts["invalid"]:
            return "partial"
        return "succeeded"

    def _start(self) -> int:
        with self.engine.begin() as conn:
            return start_run(conn, self.kind, self.settings.public_options())

    def _finish(self, status: str) -> None:
        assert self.run_id is not None
        with self.engine.begin() as conn:
            finish_run(conn, self.run_id, status, self.counts, self._stop_reason)

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        def on_signal(signame: str) -> None:
            if self._stop.is_set():
                log.warning("second %s: leaving now; committed batches are kept", signame)
                raise SystemExit(130)
            log.warning("%s received: finishing the current batch, then stopping", signame)
            self.request_stop(f"interrupted by {signame}", "interrupted")

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal, sig.name)

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
