"""`ingest FILE…`: the input stage in front of the shared fetch machinery of `pipeline.run`.

Lines are streamed from every source, parsed into share links, de-duplicated within the run,
and checked against the database in chunks (links already loaded or known gone are skipped
unless --force) before they are queued for fetching. Rejected lines are recorded with their
reason like any other outcome.

Several `ingest` processes may read overlapping inputs against one database: each claims the
links it fetches (`link_claims`, with a lease, `pipeline.db.claims`), and a link another live
process holds is put aside and looked at again later, when its fate is known (skipped like
any known link) or its holder died (its lease ended: claimed and fetched here).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import threading
from collections import Counter, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO, Unpack

from sqlalchemy import Connection, Engine

from pipeline.batches import KNOWN_FAILED, KNOWN_INVALID, SKIPPED_KNOWN, FetchedLink
from pipeline.config import Settings
from pipeline.db.claims import (
    DEFAULT_LEASE,
    claim_links,
    drop_stale,
    settle_links,
)
from pipeline.db.runs import (
    KnownFate,
    LinkRecord,
    abandon_dead_runs,
    known_links,
    rejected_before,
)
from pipeline.db.tracking import LinkOutcome
from pipeline.input_files import iter_input_lines
from pipeline.inputs import Deduplicator, InputLine, ShareLink
from pipeline.run import ClaimingJob, JobOptions, Reporter

log = logging.getLogger(__name__)

_KNOWN_CHECK_CHUNK = 500
STDIN = "<stdin>"  # the name of standard input as an InputSource
# How a link skipped for its known fate is counted, when not `skipped_known` (loaded, gone).
_SKIPPED_AS = {LinkOutcome.INVALID: KNOWN_INVALID, LinkOutcome.FAILED: KNOWN_FAILED}


@dataclass(frozen=True, slots=True)
class InputSource:
    name: str
    stream: BinaryIO


def _source_of(name: str, line_no: int) -> str:
    return f"{name}:{line_no}"


def _invalid_key(where: str, position: int, text: str) -> str:
    """One row per rejected piece of input: keyed by file, line, position on the line and
    text, so identical rejected texts on different lines keep their own rows, and re-reading
    the same file updates the same rows instead of adding new ones."""
    key = f"{where}\n{position}\n{text}".encode("utf-8", "replace")
    return "invalid:" + hashlib.sha256(key).hexdigest()[:32]


class IngestJob(ClaimingJob):
    """One `ingest FILE…` run: `await IngestJob(settings, engine, reporter, sources).run()`."""

    kind = "ingest"

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        reporter: Reporter,
        sources: Sequence[InputSource],
        lease: timedelta = DEFAULT_LEASE,
        **job_options: Unpack[JobOptions],
    ) -> None:
        super().__init__(settings, engine, reporter, **job_options)
        self.sources = sources
        self.lease = lease
        self._held_elsewhere: list[tuple[ShareLink, str]] = []  # claimed by another process

    async def _produce(self) -> None:
        await self._db("claims cleanup", lambda: self._in_transaction(drop_stale))
        dedup = Deduplicator()
        pending: list[tuple[ShareLink, str]] = []
        lines = LinesFromThread(self.sources, asyncio.get_running_loop())
        try:
            async for line in lines:
                if self._stop.is_set():
                    if not self.counting_rest:
                        return
                    if line.source == STDIN:
                        # A pipe may never end (or end much later): not read to its end.
                        self.counts["stdin_not_read"] = 1
                        self.not_attempted(len(pending))
                        return
                    # Stopped for the service's sake: count what is left, fetch nothing.
                    self.counts["lines"] += 1
                    self.counts["links"] += len(line.rejections) + len(line.links)
                    self.not_attempted(len(line.rejections) + len(pending))
                    self.not_attempted(sum(not dedup.seen(link) for link in line.links))
                    pending = []
                    continue
                self.counts["lines"] += 1
                where = _source_of(line.source, line.line_no)
                for position, rejection in enumerate(line.rejections):
                    self.counts["links"] += 1
                    record = LinkRecord(
                        _invalid_key(where, position, rejection.text),
                        rejection.text or "(empty)", None,
                        LinkOutcome.INVALID, rejection.reason, 0, where,
                    )  # fmt: skip
                    await self._hand_to_writer(FetchedLink(record, None))
                for link in line.links:
                    self.counts["links"] += 1
                    if dedup.seen(link):
                        self.counts["duplicate"] += 1
                        continue
                    pending.append((link, where))
                # Check known links in chunks; dispatch early when the input pauses (a slow
                # pipe on stdin), so links never wait for a chunk to fill.
                if len(pending) >= _KNOWN_CHECK_CHUNK or (pending and not lines.buffered):
                    await self._dispatch(pending)
                    pending = []
                if self.counts["lines"] % 1000 == 0:
                    self.report()
            await self._dispatch(pending)
            await self._dispatch_held_elsewhere()
        finally:
            lines.close()
            self.counts["skipped_blank"] = lines.skipped

    def _record(self, conn: Connection, batch: Sequence[FetchedLink]) -> Counter[str]:
        """Besides what every job records: what an earlier run already recorded as invalid (a
        line with the same file, line and text; a link the service rejected, asked again with
        --force) is not a new problem, so it is counted `known_invalid` instead of `invalid`
        and does not make the run partial (exit 2) again."""
        assert self.run_id is not None
        rejected = [
            d.record.link_key
            for d in batch
            if d.record.outcome == LinkOutcome.INVALID and d.counted_as is None
        ]
        before = rejected_before(conn, self.run_id, rejected)
        fix = super()._record(conn, batch)
        settle_links(conn, self.run_id, [d.record.link_key for d in batch])
        if before:
            fix["invalid"] -= len(before)
            fix["known_invalid"] += len(before)
        return fix

    async def _dispatch(self, pending: list[tuple[ShareLink, str]]) -> None:
        """Skip links already loaded, known gone, rejected by the service as invalid, or failed
        permanently (unless --force), queue the rest. A skipped link is still recorded for this
        run, with its known fate: every line, every time. A link another process is fetching
        is put aside (`_dispatch_held_elsewhere`)."""
        if not pending:
            return
        ids = {link.key: link.aweme_id for link, _ in pending}
        claimed, known = await self._db("known-links check", lambda: self._known(ids))
        for link, where in pending:
            fate = known.get(link.key)
            if fate is None:
                if link.key in claimed:
                    await self._enqueue(link, where)
                else:
                    self._held_elsewhere.append((link, where))
                continue
            record = LinkRecord(
                link.key, link.url, fate.aweme_id, fate.outcome, fate.reason, 0, where
            )
            skipped = _SKIPPED_AS.get(fate.outcome, SKIPPED_KNOWN)
            await self._hand_to_writer(FetchedLink(record, None, counted_as=skipped))

    async def _dispatch_held_elsewhere(self) -> None:
        """The links other processes were fetching: wait until each is known (then skipped
        like any known link) or free (its holder died: then fetched here)."""
        poll = min(1.0, self.lease.total_seconds() / 4)
        while self._held_elsewhere and not self._stop.is_set():
            waiting, self._held_elsewhere = self._held_elsewhere, []
            # A holder found dead holds nothing: its links are claimed here at once.
            await self._db("dead runs check", lambda: self._in_transaction(abandon_dead_runs))
            for start in range(0, len(waiting), _KNOWN_CHECK_CHUNK):
                await self._dispatch(waiting[start : start + _KNOWN_CHECK_CHUNK])
            if self._held_elsewhere:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), poll)
        if self._held_elsewhere:
            self.not_attempted(len(self._held_elsewhere))
            self._held_elsewhere = []

    def _known(self, ids: dict[str, int | None]) -> tuple[set[str], dict[str, KnownFate]]:
        """(the links this run now holds, the fates already known). Known links are not
        claimed (re-reading a big known file writes nothing); the others are, and then looked
        up once more: a holder commits a link's fate and drops its claim in one transaction,
        so a link claimed here was either free all along or is known by now."""
        assert self.run_id is not None
        run_id = self.run_id
        known = {} if self.settings.force else self._fates(list(ids), ids)
        free = [k for k in ids if k not in known]
        claimed = self._in_transaction(lambda conn: claim_links(conn, run_id, free, self.lease))
        if claimed and not self.settings.force:
            known.update(self._fates(sorted(claimed), ids))
        return claimed, known

    def _fates(self, keys: list[str], ids: dict[str, int | None]) -> dict[str, KnownFate]:
        works = [i for k in keys if (i := ids[k]) is not None]
        with self.engine.connect() as conn:
            return known_links(conn, keys, works)


class LinesFromThread:
    """Input lines read and parsed in a thread, handed to the event loop through a bounded
    buffer: a slow pipe on stdin can never block the loop (and with it the fetches in flight
    and the batch writer), and a fast file is read ahead without a hop per line."""

    def __init__(
        self,
        sources: Sequence[InputSource],
        loop: asyncio.AbstractEventLoop,
        max_buffered: int = 10_000,
    ) -> None:
        self.skipped = 0
        self._sources = sources
        self._loop = loop
        self._buffer: deque[InputLine] = deque()
        self._space = threading.Semaphore(max_buffered)
        self._ready = asyncio.Event()
        self._closed = threading.Event()
        self._done = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name="ingest-input", daemon=True)
        self._thread.start()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def close(self) -> None:
        self._closed.set()

    def _read(self) -> None:
        try:
            for source in self._sources:
                reader = iter_input_lines(source.stream, source.name)
                lines = 0
                for line in reader:
                    lines += 1
                    while not self._space.acquire(timeout=0.2):  # back-pressure
                        if self._closed.is_set():
                            return
                    if self._closed.is_set():
                        return
                    self._buffer.append(line)
                    if len(self._buffer) == 1:  # the consumer may be waiting
                        self._wake()
                self.skipped += reader.skipped
                if not lines:
                    log.warning(
                        "%s: no links to read (the input is empty, or only blank lines and "
                        "# comments)",
                        source.name,
                    )
        except BaseException as exc:  # surfaced to the consumer, never lost in the thread
            self._error = exc
        finally:
            self._done = True
            self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            self._loop.call_soon_threadsafe(self._ready.set)

    def __aiter__(self) -> LinesFromThread:
        return self

    async def __anext__(self) -> InputLine:
        while not self._buffer:
            if self._done and not self._buffer:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._ready.clear()
            if self._buffer or self._done:
                continue
            await self._ready.wait()
        self._space.release()
        return self._buffer.popleft()


def dry_run_counts(sources: Iterable[InputSource]) -> Counter[str]:
    """Parse and count only: no database, no network."""
    counts: Counter[str] = Counter()
    dedup = Deduplicator()
    for source in sources:
        reader = iter_input_lines(source.stream, source.name)
        for line in reader:
            counts["lines"] += 1
            counts["invalid"] += len(line.rejections)
            counts["links"] += len(line.rejections) + len(line.links)
            for link in line.links:
                counts["duplicate" if dedup.seen(link) else "to_fetch"] += 1
        counts["skipped_blank"] += reader.skipped
    return counts
