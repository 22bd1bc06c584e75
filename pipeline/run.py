"""The orchestrator: the only place that knows the order of the stages and commits.

    links ──► fetch (per upstream service: its workers, its rate limiter) ──► flatten
          ──► batch writer ──► commit

`FetchJob` is that machinery; where the links come from is its subclasses' business:
`pipeline.ingest.IngestJob` reads input files, `pipeline.refresh.RefreshJob` picks due works.

Stages are joined by bounded queues, so memory stays flat whatever the input size, and the
database work runs in a thread so fetching never waits on it. Each batch is one transaction:
the works it loads and the outcome of every link in it commit together, so a run killed at any
point has lost nothing it reported, and re-running the same command finishes the rest.

What no payload and no outage may do is stop a run or leave it lying about itself:
- a batch that PostgreSQL (or the row builder) rejects is retried in halves until the one
  work that cannot be stored is found; that link is recorded `failed`, the rest commits
  (`pipeline.batches`);
- every database call rides out an outage of up to `--db-outage-seconds` (`OutageGuard`);
- every task runs under one TaskGroup, and whatever ends the run, its record is closed;
  a heartbeat lets the next run tell a process that died (SIGKILL) from a live one.

What concerns the whole upstream service (an expired cookie, a captcha, a service that cannot
reach Douyin: `pipeline.upstream.signals`) parks that service (`pipeline.upstream.pool`): the
link it held goes back to the queue for the other services, and it is probed again later.
When every service is parked (with one service: at its first such signal), the run stops
once, with one message: the links not attempted stay pending (no record), the summary counts
them (`not_attempted`), and re-running the same command finishes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypedDict, TypeVar, Unpack

from sqlalchemy import Connection, Engine

from pipeline.batches import SKIPS, BatchCommitter, LoadWorks, describe
from pipeline.batches import FetchedLink as FetchedLink  # re-exported: outcome_record's type
from pipeline.config import Settings, UpstreamService
from pipeline.db.claims import release_claims, renew_claims
from pipeline.db.load import load_works
from pipeline.db.outage import DatabaseUnavailable, OutageGuard, first_line
from pipeline.db.runs import (
    HEARTBEAT_INTERVAL,
    LinkRecord,
    beat,
    finish_run,
    record_links,
    record_skipped_links,
    resolve_through_other_links,
    start_run,
)
from pipeline.db.state import mark_gone
from pipeline.db.tracking import LinkOutcome, RunStatus
from pipeline.flatten import FlatWork, NotAWork, flatten
from pipeline.inputs import ShareLink
from pipeline.upstream.client import UpstreamClient
from pipeline.upstream.outcomes import FetchResult, Outcome
from pipeline.upstream.pool import (
    Dispatcher,
    LimiterFactory,
    Pool,
    PoolMember,
    make_limiters,
)
from pipeline.upstream.signals import ServiceStop, redact_url

log = logging.getLogger(__name__)

T = TypeVar("T")


class Reporter(Protocol):
    """Where progress goes: a progress bar on a terminal, log lines otherwise."""

    def update(self, counts: Counter[str]) -> None: ...


class JobOptions(TypedDict, total=False):
    """Seams of a job, for tests and tools; production uses the defaults."""

    now: Callable[[], datetime]  # the clock stamped on fetched works
    load: LoadWorks  # the loader (default `pipeline.db.load.load_works`)
    guard: OutageGuard  # database outage policy (default: --db-outage-seconds)
    heartbeat_s: float
    limiters: LimiterFactory  # each upstream service's rate limiter (default: make_limiters)


@dataclass(slots=True)
class RunSummary:
    run_id: int | None
    status: str
    counts: Counter[str] = field(default_factory=Counter)
    message: str | None = None
    # Per upstream service: requests, achieved rate, 429s, parks (`PoolMember.report`).
    upstreams: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Services still parked at the end for a cause someone must act on (an expired cookie...):
    # the run may have finished every link through the others, yet exits 77.
    parked_for_operator: list[str] = field(default_factory=list)


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
            if result.payload is not None:
                # The body's text goes to raw_payloads as received: the decoded detail is let go.
                work = replace(work, raw=result.payload)
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
    """The machinery shared by `ingest FILE…` and `ingest refresh`: fetch workers behind one
    client per upstream service, a batch writer, a heartbeat, signal handling and the run
    record. Subclasses say where the links come from (`_produce`) and what else a batch
    writes (`_record`)."""

    kind = "ingest"

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        reporter: Reporter,
        **options: Unpack[JobOptions],
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.reporter = reporter
        self.now = options.get("now", utc_now)
        self.guard = options.get("guard") or OutageGuard(settings.db_outage_seconds)
        self.heartbeat_s = options.get("heartbeat_s", HEARTBEAT_INTERVAL.total_seconds())
        load = options.get("load", load_works)
        self.limiters = options.get("limiters") or make_limiters(engine)
        self.pool: Pool | None = None
        self._batches = BatchCommitter(engine, self.guard, load, self._record)
        self.counts: Counter[str] = Counter()  # committed: what the database holds
        self._uncommitted: Counter[str] = Counter()
        # Links queued for fetching, links whose fetch ended (recorded), and links read after
        # a stop: the difference is what the run did not attempt.
        self._dispatched = 0
        self._settled = 0
        self._not_attempted = 0
        self.run_id: int | None = None
        self._stop = asyncio.Event()
        self._stop_reason: str | None = None
        self._status_override: str | None = None
        self._stages_task: asyncio.Future[None] | None = None
        self._hard_stop = False
        concurrency = settings.fetch.total_concurrency
        self._links: Dispatcher[tuple[ShareLink, str]] = Dispatcher(concurrency * 4)
        self._write_q: asyncio.Queue[FetchedLink | None] = asyncio.Queue(settings.batch_size * 2)

    # -- control -----------------------------------------------------------------------------

    def report(self) -> None:
        """Show progress: committed counts plus outcomes still waiting for their batch."""
        shown = self.counts.copy()
        shown.update(self._uncommitted)
        self.reporter.update(shown)

    async def _hand_to_writer(self, done: FetchedLink) -> None:
        self._uncommitted[done.count_key] += 1
        await self._write_q.put(done)
        self.report()

    def request_stop(self, reason: str, status: str) -> None:
        if not self._stop.is_set():
            self._stop_reason, self._status_override = reason, status
            self._stop.set()

    @property
    def counting_rest(self) -> bool:
        """After a stop for the upstream service's sake, the producer keeps reading its input
        (nothing is fetched) to count what was not attempted; an interrupt leaves at once."""
        return self._stop.is_set() and self._status_override in (
            RunStatus.FAILED,
            RunStatus.OPERATOR_ERROR,
        )

    def not_attempted(self, n: int = 1) -> None:
        self._not_attempted += n

    async def _enqueue(self, link: ShareLink, where: str) -> None:
        """Queue a link for fetching; once the run is stopping it is only counted. Never
        blocks past a stop (the workers that would make room are gone by then)."""
        if self._stop.is_set():
            self._not_attempted += 1
            return
        item = (link, where)
        if self._links.full():
            put = asyncio.ensure_future(self._links.put(item))
            stop = asyncio.ensure_future(self._stop.wait())
            await asyncio.wait((put, stop), return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            if not put.done():
                put.cancel()
                self._not_attempted += 1
                return
        else:
            await self._links.put(item)
        self._dispatched += 1

    async def _db(self, what: str, fn: Callable[[], T]) -> T:
        """One database call, off the event loop, riding out an outage."""
        return await asyncio.to_thread(self.guard.call, what, fn)

    # -- stages ------------------------------------------------------------------------------

    async def _produce(self) -> None:
        """Queue (link, source) pairs with `_enqueue` until done or `self._stop` is set."""
        raise NotImplementedError

    def _record(self, conn: Connection, batch: Sequence[FetchedLink]) -> Counter[str]:
        """Besides loading the works: write what became of each link, mark known works that
        came back gone (a deleted work found by `--force` is as gone as one found by a
        refresh), and resolve links left failed whose work has now loaded. Returns the
        corrections to this run's counts."""
        assert self.run_id is not None
        fetched = [d.record for d in batch if d.counted_as not in SKIPS]
        skipped = [d.record for d in batch if d.counted_as in SKIPS]
        retryable = {d.record.link_key for d in batch if d.temporary}
        record_links(conn, self.run_id, fetched, retryable)
        record_skipped_links(conn, self.run_id, skipped)
        mark_gone(conn, gone_works(batch), self.now())
        return self._resolve(conn, batch)

    def _resolve(self, conn: Connection, batch: Sequence[FetchedLink]) -> Counter[str]:
        """Links still `failed` whose work is loaded are `loaded`: the work loaded in this
        batch through another link, or a link failed temporarily on a work loaded earlier
        through another one. Those this run counted as failed are recounted."""
        ids = {
            d.record.aweme_id
            for d in batch
            if d.record.aweme_id is not None and (d.work is not None or d.temporary)
        }
        temporary = {d.record.link_key for d in batch if d.temporary}
        temporary_before = self._batches.temporary_failures
        fix: Counter[str] = Counter()
        for row in resolve_through_other_links(conn, sorted(ids)):
            if row.last_run_id == self.run_id:
                fix["failed"] -= 1
                fix["loaded"] += 1
                fix["resolved_elsewhere"] += 1
                if row.link_key in temporary or row.link_key in temporary_before:
                    fix["failed_temporary"] -= 1
        return fix

    async def _fetch_worker(self, member: PoolMember) -> None:
        """One of `member`'s workers: takes the next link whenever its service may fetch."""
        client = member.client
        while (lease := await self._links.take(member)) is not None:
            link, where = lease.item
            result: FetchResult | None = None
            try:
                if lease.probe:
                    client.resume()
                result = await client.fetch(link, max_attempts=1 if lease.probe else None)
                stop = client.last_stop
                if result.cut_short and stop is not None:
                    # The whole service is in trouble: nothing is recorded for this link; it
                    # goes back to the queue for another service (or the next run).
                    await self._links.give_back(lease.item, lease.tried)
                    self._park(member, stop, probe=lease.probe)
                    continue
                if lease.probe:
                    if result.outcome.retryable and stop is not None:
                        await self._links.give_back(lease.item, lease.tried)  # park again
                        self._park(member, stop, probe=True)
                        continue
                    self._the_pool().reopen(member)
                    await self._links.changed()
                elif result.outcome.retryable and self._links.elsewhere(member, lease.tried):
                    # Retries ran out here (a flaky service, or one failing on its way to a
                    # stop): another service tries the link before it is recorded failed.
                    await self._links.give_back(lease.item, lease.tried | {member.name})
                    continue
                done = outcome_record(link, where, result, self.now())
            except Exception as exc:
                # A bug must not kill a worker (the queues would stall) nor lose the link.
                log.exception("internal error on %s", link.url)
                if lease.probe:
                    self._the_pool().reopen(member)
                    await self._links.changed()
                # The id the fetch found (a short link's) lets a later load resolve it.
                found = result.aweme_id if result is not None else None
                record = LinkRecord(
                    link.key, link.url, found or link.aweme_id, LinkOutcome.FAILED,
                    f"internal error: {exc.__class__.__name__}", 0, where,
                )  # fmt: skip
                done = FetchedLink(record, None, temporary=True)
            # The decoded detail is flattened: it need not live while the hand-off waits.
            result = None
            if done.record.outcome != LinkOutcome.LOADED:
                log.debug("%s %s: %s", done.record.outcome, link.url, done.record.reason)
            member.stats.links += 1
            await self._links.done()
            await self._hand_to_writer(done)
            self._settled += 1  # after the hand-off: a worker cancelled in it recorded nothing

    def _the_pool(self) -> Pool:
        assert self.pool is not None
        return self.pool

    def _park(self, member: PoolMember, stop: ServiceStop, *, probe: bool) -> None:
        """Park the service; when every service is parked, stop the run (with one service,
        exactly as a run against one service always stopped)."""
        pool = self._the_pool()
        if pool.park(member, stop, probe=probe):
            message, needs_operator = pool.stop_message()
            status = RunStatus.OPERATOR_ERROR if needs_operator else RunStatus.FAILED
            if pool.pooled:  # with one service, its client said it
                log.error("stopping the run: %s", message)
            self.request_stop(message, status)

    def _client(self, service: UpstreamService, named: bool, pooled: bool) -> UpstreamClient:
        """One service's client (`named`: messages name it as the upstreams file does). In a
        pool of several, a stop parks the service, which the pool logs."""
        label = f"{redact_url(service.base)} ({service.name})" if named else None
        return UpstreamClient(
            service.base,
            service.style,
            token=service.token,
            rate=service.rate,
            concurrency=service.concurrency,
            timeout_s=service.timeout_s,
            retries=service.retries,
            resolve_base=service.resolve_base,
            limiter=self.limiters(service),
            label=label,
            on_stop=(lambda _stop: None) if pooled else None,
        )

    async def _produce_then_end(self) -> None:
        await self._produce()
        await self._links.close()  # the workers end once no link is waiting or in flight

    async def _cancel_on_stop(
        self, producer: asyncio.Task[None], workers: Sequence[asyncio.Task[None]]
    ) -> None:
        """On a stop, abandon the fetches in flight: their links stay pending for the next run;
        whatever was already handed to the writer is still committed. The producer is left
        to count the rest after a service stop (`counting_rest`), cancelled otherwise."""
        await self._stop.wait()
        for task in workers:
            task.cancel()
        if not self.counting_rest:
            producer.cancel()

    async def _heartbeat(self) -> None:
        """Tell the world this run is alive, so the next run can tell it from a dead one."""
        assert self.run_id is not None
        run_id = self.run_id
        while True:
            await asyncio.sleep(self.heartbeat_s)
            try:
                await asyncio.to_thread(self._in_transaction, lambda conn: beat(conn, run_id))
            except Exception as exc:  # an outage: the writer's guard reports and waits on it
                log.debug("heartbeat not written: %s", first_line(exc))

    def _in_transaction(self, fn: Callable[[Connection], T]) -> T:
        with self.engine.begin() as conn:
            return fn(conn)

    async def _write(self) -> None:
        batch: list[FetchedLink] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.batch_seconds
        while True:
            got = True
            try:
                # What is already queued is taken at once: `wait_for` costs a task per call.
                item = self._write_q.get_nowait()
            except asyncio.QueueEmpty:
                timeout = max(0.0, deadline - loop.time())
                try:
                    item = await asyncio.wait_for(self._write_q.get(), timeout)
                except TimeoutError:
                    got = False  # time to flush whatever the batch holds
            if got:
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
        base = self.counts.copy()
        assert self.run_id is not None
        delta = await asyncio.to_thread(self._batches.store, self.run_id, batch, base)
        # Counts move only after the commit: what is reported is what is stored.
        for d in batch:
            self._uncommitted[d.count_key] -= 1
        self.counts.update(delta)
        self.report()

    # -- the run -----------------------------------------------------------------------------

    async def run(self) -> RunSummary:
        """Run to the end and close the run record, whatever ends it."""
        self.run_id = await self._db("run start", self._start)
        loop = asyncio.get_running_loop()
        self._install_signal_handlers(loop)
        try:
            self._stages_task = asyncio.ensure_future(self._stages())
            try:
                await self._stages_task
            except BaseExceptionGroup as group:
                raise _root_cause(group) from None
            status = self._final_status()
            await self._db("run end", lambda: self._finish(status, self._stop_reason))
        except asyncio.CancelledError:
            if not self._hard_stop:  # the caller cancelled this run
                await self._close_after(RunStatus.INTERRUPTED, "cancelled")
                raise
            status = RunStatus.INTERRUPTED
            await self._close_after(status, self._stop_reason, retry=False)
        except DatabaseUnavailable as exc:
            message = (
                f"{exc}; run {self.run_id} stopped, committed batches are kept: re-run the "
                "same command once the database is back"
            )
            await self._close_after(RunStatus.FAILED, message, retry=False)
            raise DatabaseUnavailable(message) from exc
        except BaseException as exc:
            await self._close_after(RunStatus.FAILED, describe(exc))
            raise
        finally:
            self._remove_signal_handlers(loop)
        return RunSummary(
            self.run_id,
            status,
            self.counts.copy(),
            self._stop_reason,
            self._upstream_report(),
            [m.name for m in self.pool.parked_needing_operator()] if self.pool else [],
        )

    def _upstream_report(self) -> dict[str, dict[str, Any]]:
        return self.pool.report() if self.pool is not None else {}

    async def _stages(self) -> None:
        """Every task of the run under one TaskGroup: an error anywhere cancels the rest, and
        no task is left behind with an exception nobody retrieved."""
        f = self.settings.fetch
        services = f.services()
        async with contextlib.AsyncExitStack() as clients, asyncio.TaskGroup() as tasks:
            pooled = len(services) > 1
            members = [
                PoolMember(s, await clients.enter_async_context(self._client(s, f.pooled, pooled)))
                for s in services
            ]
            self.pool = Pool(members)
            self._links.attach(members)
            writer = tasks.create_task(self._write())
            heartbeat = tasks.create_task(self._heartbeat())
            producer = tasks.create_task(self._produce_then_end())
            workers = [
                tasks.create_task(self._fetch_worker(m))
                for m in members
                for _ in range(m.service.concurrency)
            ]
            stopper = tasks.create_task(self._cancel_on_stop(producer, workers))
            # Done when every worker has had its end-of-input marker, or was cancelled by a stop.
            await asyncio.wait(workers)
            if self.counting_rest:
                await asyncio.wait([producer])  # reads the rest of the input, fetches nothing
            producer.cancel()
            stopper.cancel()
            if self._stop.is_set():
                left = self._dispatched - self._settled + self._not_attempted
                if left:
                    self.counts["not_attempted"] = left
            await self._write_q.put(None)  # the writer commits what it holds, then ends
            await writer
            heartbeat.cancel()

    def _final_status(self) -> str:
        if self._status_override:
            return self._status_override
        if self.counts["failed"] or self.counts["invalid"]:
            return RunStatus.PARTIAL
        return RunStatus.SUCCEEDED

    def _start(self) -> int:
        options = self.settings.public_options()
        return self._in_transaction(lambda conn: start_run(conn, self.kind, options))

    def _finish(self, status: str, message: str | None) -> None:
        assert self.run_id is not None
        run_id = self.run_id
        # The per-service report rides in the counts column (one JSON document per run).
        counts: dict[str, Any] = dict(self.counts)
        if upstreams := self._upstream_report():
            counts["upstreams"] = upstreams
        self._in_transaction(lambda conn: finish_run(conn, run_id, status, counts, message))

    async def _close_after(self, status: str, message: str | None, *, retry: bool = True) -> None:
        """Close the run record after the run ended abnormally. Never raises: when even this
        fails (the database is gone), the next run marks the record `abandoned`."""
        self._stop_reason = message
        try:
            if retry:
                await self._db("run end", lambda: self._finish(status, message))
            else:
                await asyncio.to_thread(self._finish, status, message)
        except Exception as exc:
            log.warning(
                "could not record the end of run %s (%s); the next run will mark it abandoned",
                self.run_id,
                first_line(exc),
            )

    def _install_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        def on_signal(signame: str) -> None:
            if self._stop.is_set():
                log.warning("second %s: leaving now; committed batches are kept", signame)
                self._hard_stop = True
                self._stop_reason = f"interrupted by a second {signame}"
                self.guard.abort()
                if self._stages_task is not None:
                    self._stages_task.cancel()
                return
            log.warning("%s received: finishing the current batch, then stopping", signame)
            self.request_stop(f"interrupted by {signame}", RunStatus.INTERRUPTED)

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, on_signal, sig.name)

    def _remove_signal_handlers(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)


class ClaimingJob(FetchJob):
    """A job that claims what it fetches (`pipeline.db.claims`), so that processes on other
    hosts skip it: its leases are renewed while it lives, and what it still holds when it ends,
    however it ends, is released for the others."""

    lease: timedelta

    async def run(self) -> RunSummary:
        try:
            return await super().run()
        finally:
            await release_claims(self.engine, self.run_id)

    async def _heartbeat(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(super()._heartbeat())
            tasks.create_task(renew_claims(self.engine, self.run_id, self.lease))


def _root_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error that brought a TaskGroup down (the others are the cancellations it caused)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(group)
    real = [e for e in leaves if not isinstance(e, asyncio.CancelledError)]
    return (real or leaves)[0]
