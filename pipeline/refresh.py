"""`ingest refresh`: re-fetch known works that are due and append statistics snapshots.

Many workers, one database: any number of refresh processes, on any number of hosts, work
through the due works together. Each claims a small page of them at a time (`FOR UPDATE SKIP
LOCKED` and a lease in `work_claims`, `pipeline.db.claims`), fetches them, and releases the
claims in the transaction that records their fate; so every due work is fetched once. A worker
killed even with SIGKILL stops renewing its leases: once they end, the others take its works,
and every batch it committed stays. A worker out of due works waits while others still hold
claims on due works, so a dead worker's share is always finished by whoever is left.

`--exclusive` keeps the old cron rule instead: a PostgreSQL advisory lock lets that run work
alone, and it exits at once (`AlreadyRunning`) when another refresh is running, as a default
refresh does while an exclusive one runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Unpack

from sqlalchemy import Connection, Engine, text

from pipeline.batches import FetchedLink
from pipeline.config import Settings
from pipeline.db.claims import (
    DEFAULT_LEASE,
    LIVE_CLAIM_SQL,
    claim_works,
    drop_stale,
    settle_works,
)
from pipeline.db.runs import abandon_dead_runs
from pipeline.db.state import mark_gone, reschedule
from pipeline.db.tracking import LinkOutcome
from pipeline.errors import AlreadyRunning
from pipeline.inputs import ShareLink, canonical_link
from pipeline.run import ClaimingJob, JobOptions, Reporter, gone_works, utc_now
from pipeline.schedule import RETRY_FAILED_AFTER

# pg_advisory_lock key: any constant unique to this job.
REFRESH_LOCK_KEY = 0x646F7579696E  # "douyin"
_PAGE = 500


@dataclass(frozen=True, slots=True)
class RefreshOptions:
    stale_after: timedelta | None = None  # one interval for every work instead of the policy
    limit: int | None = None
    max_age: timedelta | None = None  # only works published within this long
    budget_seconds: float | None = None  # stop starting new fetches after this long
    only_authors: tuple[str, ...] = ()  # sec_uids
    dry_run: bool = False
    lease: timedelta = DEFAULT_LEASE  # how long a claim holds without renewal
    poll_seconds: float = 1.0  # out of due works while others hold some: look again after


def _due_filters(options: RefreshOptions) -> list[str]:
    """The WHERE conditions that make a work due under `options`."""
    due = (
        "w.last_fetched_at <= :as_of - :stale"
        if options.stale_after
        else "w.next_check_at <= :as_of"
    )
    filters = [due, "w.gone_at IS NULL"]
    if options.max_age is not None:
        filters.append("w.created_at >= :as_of - :max_age")
    if options.only_authors:
        filters.append(
            "w.author_uid IN (SELECT uid FROM authors "
            "WHERE sec_uid = ANY(CAST(:authors AS text[])))"
        )
    return filters


def _due_params(options: RefreshOptions, as_of: datetime) -> dict[str, object]:
    return {
        "as_of": as_of,
        "stale": options.stale_after,
        "max_age": options.max_age,
        "authors": list(options.only_authors),
    }


def count_due(engine: Engine, options: RefreshOptions, as_of: datetime | None = None) -> int:
    """How many works a refresh would check now (before --limit and --budget-seconds)."""
    sql = f"SELECT count(*) FROM works w WHERE {' AND '.join(_due_filters(options))}"
    params = _due_params(options, as_of or utc_now())
    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def _due_query(options: RefreshOptions) -> tuple[str, str]:
    """SQL locking one page of due works no live claim holds, oldest due first, and the
    column it is ordered by. `SKIP LOCKED` passes over rows another worker is claiming this
    instant. Both orders are served by a partial index over available works (gone_at IS
    NULL), so the database reads only the due rows it returns, not the whole table."""
    order = "last_fetched_at" if options.stale_after is not None else "next_check_at"
    filters = [
        *_due_filters(options),
        "NOT EXISTS (SELECT 1 FROM work_claims c WHERE c.aweme_id = w.aweme_id "
        f"AND {LIVE_CLAIM_SQL.format(c='c')})",
    ]
    sql = (
        f"SELECT w.aweme_id, w.{order} AS due_key FROM works w "
        f"WHERE {' AND '.join(filters)} "
        f"ORDER BY w.{order}, w.aweme_id LIMIT :page FOR UPDATE OF w SKIP LOCKED"
    )
    return sql, order


def claim_due(
    conn: Connection,
    options: RefreshOptions,
    as_of: datetime,
    run_id: int,
    page: int = _PAGE,
) -> list[tuple[int, str | None]]:
    """Claim up to `page` due works for this run (oldest due first): (aweme_id, link), the
    link being the one each work was loaded from, if known."""
    due, _ = _due_query(options)
    params = {**_due_params(options, as_of), "page": page}
    return [(r.aweme_id, r.link) for r in claim_works(conn, due, params, run_id, options.lease)]


def claimed_elsewhere(conn: Connection, options: RefreshOptions, as_of: datetime) -> bool:
    """Whether some due work is claimed by a live run (this one or another): it will either be
    settled (no longer due) or, if its holder died, free once the lease ends or the run is
    found dead. A work resting after a failed fetch (claimed by no run) is not waited for."""
    sql = (
        "SELECT EXISTS (SELECT 1 FROM works w JOIN work_claims c USING (aweme_id) "
        f"WHERE {' AND '.join(_due_filters(options))} "
        f"AND c.run_id IS NOT NULL AND {LIVE_CLAIM_SQL.format(c='c')})"
    )
    return bool(conn.execute(text(sql), _due_params(options, as_of)).scalar_one())


@contextlib.contextmanager
def refresh_lock(engine: Engine, *, exclusive: bool = False) -> Iterator[Connection]:
    """Hold the refresh advisory lock on a dedicated connection: shared by the default
    refreshes (they work together), exclusive with `--exclusive`. Raises AlreadyRunning when
    an exclusive refresh runs, or, for an exclusive one, when any refresh runs.

    The lock says who may start; it is not what keeps workers apart (the claims are), so a
    database outage that drops the lock's connection cannot make two workers fetch alike."""
    suffix = "" if exclusive else "_shared"
    with engine.connect() as conn:
        got = conn.execute(
            text(f"SELECT pg_try_advisory_lock{suffix}(:k)"), {"k": REFRESH_LOCK_KEY}
        )
        conn.commit()
        if not got.scalar_one():
            raise AlreadyRunning(
                "another `ingest refresh` is running on this database"
                + (" (--exclusive): " if exclusive else " with --exclusive: ")
                + "this one did nothing"
            )
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.execute(
                    text(f"SELECT pg_advisory_unlock{suffix}(:k)"), {"k": REFRESH_LOCK_KEY}
                )
                conn.commit()


class RefreshJob(ClaimingJob):
    kind = "refresh"

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        reporter: Reporter,
        options: RefreshOptions,
        **job_options: Unpack[JobOptions],
    ) -> None:
        super().__init__(settings, engine, reporter, **job_options)
        self.options = options
        self.lease = options.lease
        # A page a little larger than the fetch queue: claims are not held much longer
        # than it takes to fetch them, so a dead worker strands little work.
        self._page = max(8, min(_PAGE, settings.fetch.total_concurrency * 4))

    async def _produce(self) -> None:
        as_of = self.now()
        loop = asyncio.get_running_loop()
        started = loop.time()
        budget, limit = self.options.budget_seconds, self.options.limit
        await self._db("claims cleanup", lambda: self._in_transaction(drop_stale))
        while True:
            page = self._page if limit is None else min(self._page, limit - self.counts["due"])
            if page <= 0:
                return
            claimed = await self._db("due-works claim", functools.partial(self._claim, as_of, page))
            if not claimed:
                # Others may hold due works: wait for them to finish, or for a dead one's
                # leases to end, then claim again.
                if not await self._db("claims check", lambda: self._claimed_elsewhere(as_of)):
                    return
                await self._sleep_or_stop(self.options.poll_seconds)
                if self._stop.is_set():
                    return
                if budget is not None and loop.time() - started >= budget:
                    self.counts["stopped_by_budget"] = 1
                    return
                continue
            for aweme_id, url in claimed:
                if self._stop.is_set():
                    return
                if budget is not None and loop.time() - started >= budget:
                    self.counts["stopped_by_budget"] = 1
                    return
                self.counts["due"] += 1
                await self._enqueue(_refresh_link(aweme_id, url, self.settings), "refresh")

    def _claim(self, as_of: datetime, page: int) -> list[tuple[int, str | None]]:
        assert self.run_id is not None
        run_id = self.run_id
        return self._in_transaction(lambda conn: claim_due(conn, self.options, as_of, run_id, page))

    def _claimed_elsewhere(self, as_of: datetime) -> bool:
        def check(conn: Connection) -> bool:
            abandon_dead_runs(conn)  # a dead worker's claims are free at once
            return claimed_elsewhere(conn, self.options, as_of)

        return self._in_transaction(check)

    async def _sleep_or_stop(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _flush(self, batch: list[FetchedLink]) -> None:
        await super()._flush(batch)
        self.counts["fetched"] = self.counts["loaded"]
        self.counts["changed"] = self.counts["snapshots_added"]
        self.counts["unchanged"] = self.counts["loaded"] - self.counts["snapshots_added"]

    def _record(self, conn: Connection, batch: Sequence[FetchedLink]) -> Counter[str]:
        """Refresh fetches works, not input links: share_links only changes where a link left
        failed now has its work loaded. Gone works are marked; failed ones are not due again
        at once, so they cannot starve the others. The claims are settled in the same
        transaction."""
        assert self.run_id is not None
        now = self.now()
        mark_gone(conn, gone_works(batch), now)
        failed = [
            d.record.aweme_id
            for d in batch
            if d.record.outcome in (LinkOutcome.FAILED, LinkOutcome.INVALID)
            and d.record.aweme_id is not None
        ]
        reschedule(conn, failed, now + RETRY_FAILED_AFTER)
        failed_ids = set(failed)
        done = [
            d.record.aweme_id
            for d in batch
            if d.record.aweme_id is not None and d.record.aweme_id not in failed_ids
        ]
        settle_works(conn, self.run_id, done, failed, RETRY_FAILED_AFTER)
        return self._resolve(conn, batch)


def _refresh_link(aweme_id: int, url: str | None, settings: Settings) -> ShareLink:
    """amagi fetches by id; seed by the share link the work was loaded from, when known."""
    link = canonical_link(aweme_id)
    if settings.fetch.api_style == "seed" and url:
        return ShareLink(url=url, aweme_id=aweme_id, is_short=url.startswith("https://v.douyin"))
    return link
