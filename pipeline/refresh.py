"""`ingest refresh`: re-fetch known works that are due and append statistics snapshots.

Safe in cron: a PostgreSQL advisory lock, held on a dedicated connection for the whole run,
lets only one refresh work at a time; a second one exits at once (`AlreadyRunning`). A run
killed even with SIGKILL drops its connection and so its lock, and every batch it committed
stays: the next run simply finds fewer works due.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Unpack

from sqlalchemy import Connection, Engine, Row, text

from pipeline.batches import FetchedLink
from pipeline.config import Settings
from pipeline.db.outage import OutageGuard
from pipeline.db.state import mark_gone, reschedule
from pipeline.db.tracking import LinkOutcome
from pipeline.errors import AlreadyRunning
from pipeline.inputs import ShareLink, canonical_link
from pipeline.run import FetchJob, JobOptions, Reporter, gone_works, utc_now
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


def _due_query(options: RefreshOptions) -> tuple[str, str]:
    """SQL selecting one page of due works, and the column it is ordered by.

    Both orders are served by a partial index over available works (gone_at IS NULL), so the
    database reads only the due rows it returns, not the whole table."""
    order = "last_fetched_at" if options.stale_after is not None else "next_check_at"
    filters = [*_due_filters(options), f"(w.{order}, w.aweme_id) > (:after_t, :after_id)"]
    sql = (
        f"SELECT w.aweme_id, w.{order} AS due_key, "
        "(SELECT s.url FROM share_links s WHERE s.aweme_id = w.aweme_id "
        "  AND s.last_outcome = 'loaded' ORDER BY s.last_seen_at DESC LIMIT 1) AS link "
        f"FROM works w WHERE {' AND '.join(filters)} "
        f"ORDER BY w.{order}, w.aweme_id LIMIT :page"
    )
    return sql, order


def iter_due_pages(
    engine: Engine,
    options: RefreshOptions,
    as_of: datetime,
    page: int = _PAGE,
    guard: OutageGuard | None = None,
) -> Iterator[list[tuple[int, str | None]]]:
    """Pages of due works, oldest due first. Keyset paging: each page is one short query on
    its own connection, and a work fetched (and so rescheduled) meanwhile is never reselected.
    With a `guard`, each page's query rides out a database outage."""
    sql, _ = _due_query(options)
    after_t, after_id = datetime.min.replace(tzinfo=as_of.tzinfo), -(2**63)
    params = {**_due_params(options, as_of), "page": page}

    def one_page() -> list[Row[Any]]:
        with engine.connect() as conn:
            rows = conn.execute(text(sql), {**params, "after_t": after_t, "after_id": after_id})
            return list(rows.all())

    while True:
        batch = guard.call("due-works query", one_page) if guard else one_page()
        if batch:
            yield [(r.aweme_id, r.link) for r in batch]
        if len(batch) < page:
            return
        after_t, after_id = batch[-1].due_key, batch[-1].aweme_id


def count_due(engine: Engine, options: RefreshOptions, as_of: datetime | None = None) -> int:
    """How many works a refresh would check now (before --limit and --budget-seconds)."""
    sql = f"SELECT count(*) FROM works w WHERE {' AND '.join(_due_filters(options))}"
    params = _due_params(options, as_of or utc_now())
    with engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


@contextlib.contextmanager
def refresh_lock(engine: Engine) -> Iterator[Connection]:
    """Hold the refresh advisory lock on a dedicated connection, or raise AlreadyRunning."""
    with engine.connect() as conn:
        got = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": REFRESH_LOCK_KEY})
        conn.commit()
        if not got.scalar_one():
            raise AlreadyRunning(
                "another `ingest refresh` is running on this database; this one did nothing"
            )
        try:
            yield conn
        finally:
            with contextlib.suppress(Exception):
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": REFRESH_LOCK_KEY})
                conn.commit()


class RefreshJob(FetchJob):
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

    async def _produce(self) -> None:
        as_of = self.now()
        loop = asyncio.get_running_loop()
        started = loop.time()
        budget, limit = self.options.budget_seconds, self.options.limit
        pages = iter_due_pages(self.engine, self.options, as_of, guard=self.guard)
        while (page := await asyncio.to_thread(next, pages, None)) is not None:
            for aweme_id, url in page:
                if self._stop.is_set():
                    return
                if limit is not None and self.counts["due"] >= limit:
                    return
                if budget is not None and loop.time() - started >= budget:
                    self.counts["stopped_by_budget"] = 1
                    return
                self.counts["due"] += 1
                await self._enqueue(_refresh_link(aweme_id, url, self.settings), "refresh")

    async def _flush(self, batch: list[FetchedLink]) -> None:
        await super()._flush(batch)
        self.counts["fetched"] = self.counts["loaded"]
        self.counts["changed"] = self.counts["snapshots_added"]
        self.counts["unchanged"] = self.counts["loaded"] - self.counts["snapshots_added"]

    def _record(self, conn: Connection, batch: Sequence[FetchedLink]) -> Counter[str]:
        """Refresh fetches works, not input links: share_links only changes where a link left
        failed now has its work loaded. Gone works are marked; failed ones are not due again
        at once, so they cannot starve the others."""
        now = self.now()
        mark_gone(conn, gone_works(batch), now)
        failed = [
            d.record.aweme_id
            for d in batch
            if d.record.outcome in (LinkOutcome.FAILED, LinkOutcome.INVALID)
            and d.record.aweme_id is not None
        ]
        reschedule(conn, failed, now + RETRY_FAILED_AFTER)
        return self._resolve(conn, batch)


def _refresh_link(aweme_id: int, url: str | None, settings: Settings) -> ShareLink:
    """amagi fetches by id; seed by the share link the work was loaded from, when known."""
    link = canonical_link(aweme_id)
    if settings.fetch.api_style == "seed" and url:
        return ShareLink(url=url, aweme_id=aweme_id, is_short=url.startswith("https://v.douyin"))
    return link
