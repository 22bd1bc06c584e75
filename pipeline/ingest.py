"""`ingest FILE…`: the input stage in front of the shared fetch machinery of `pipeline.run`.

Lines are streamed from every source, parsed into share links, de-duplicated within the run,
and checked against the database in chunks (links already loaded or known gone are skipped
unless --force) before they are queued for fetching. Rejected lines are recorded with their
reason like any other outcome.
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
from typing import BinaryIO, Unpack

from sqlalchemy import Connection, Engine

from pipeline.batches import KNOWN_FAILED, KNOWN_INVALID, SKIPPED_KNOWN, FetchedLink
from pipeline.config import Settings
from pipeline.db.runs import KnownFate, LinkRecord, known_links, rejected_before
from pipeline.db.tracking import LinkOutcome
from pipeline.input_files import iter_input_lines
from pipeline.inputs import Deduplicator, InputLine, ShareLink
from pipeline.run import FetchJob, JobOptions, Reporter

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


class IngestJob(FetchJob):
    """One `ingest FILE…` run: `await IngestJob(settings, engine, reporter, sources).run()`."""

    kind = "ingest"

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        reporter: Reporter,
        sources: Sequence[InputSource],
        **job_options: Unpack[JobOptions],
    ) -> None:
        super().__init__(settings, engine, reporter, **job_options)
        self.sources = sources

    async def _produce(self) -> None:
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
        if before:
            fix["invalid"] -= len(before)
            fix["known_invalid"] += len(before)
        return fix

    async def _dispatch(self, pending: list[tuple[ShareLink, str]]) -> None:
        """Skip links already loaded, known gone, rejected by the service as invalid, or failed
        permanently (unless --force), queue the rest. A skipped link is still recorded for this
        run, with its known fate: every line, every time."""
        if not pending:
            return
        if self.settings.force:
            known: dict[str, KnownFate] = {}
        else:
            keys = [link.key for link, _ in pending]
            ids = [link.aweme_id for link, _ in pending if link.aweme_id is not None]
            known = await self._db("known-links check", lambda: self._known(keys, ids))
        for link, where in pending:
            fate = known.get(link.key)
            if fate is None:
                await self._enqueue(link, where)
                continue
            record = LinkRecord(
                link.key, link.url, fate.aweme_id, fate.outcome, fate.reason, 0, where
            )
            skipped = _SKIPPED_AS.get(fate.outcome, SKIPPED_KNOWN)
            await self._hand_to_writer(FetchedLink(record, None, counted_as=skipped))

    def _known(self, keys: list[str], ids: list[int]) -> dict[str, KnownFate]:
        with self.engine.connect() as conn:
            return known_links(conn, keys, ids)


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
