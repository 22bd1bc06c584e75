"""`ingest FILE…`: the input stage in front of the shared fetch machinery of `pipeline.run`.

Lines are streamed from every source, parsed into share links, de-duplicated within the run,
and checked against the database in chunks (links already loaded or known gone are skipped
unless --force) before they are queued for fetching. Rejected lines are recorded with their
reason like any other outcome.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import BinaryIO

from sqlalchemy import Engine

from pipeline.config import Settings
from pipeline.db.runs import LinkRecord, known_links
from pipeline.inputs import Deduplicator, ShareLink, iter_input_lines
from pipeline.run import FetchedLink, FetchJob, Reporter, utc_now

_KNOWN_CHECK_CHUNK = 500


@dataclass(frozen=True, slots=True)
class InputSource:
    name: str
    stream: BinaryIO


def _source_of(name: str, line_no: int) -> str:
    return f"{name}:{line_no}"


def _invalid_key(text: str) -> str:
    return "invalid:" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:32]


class IngestJob(FetchJob):
    """One `ingest FILE…` run: `await IngestJob(settings, engine, reporter, sources).run()`."""

    kind = "ingest"

    def __init__(
        self,
        settings: Settings,
        engine: Engine,
        reporter: Reporter,
        sources: Sequence[InputSource],
        *,
        now: Callable[[], datetime] = utc_now,
    ) -> None:
        super().__init__(settings, engine, reporter, now=now)
        self.sources = sources

    async def _produce(self) -> None:
        dedup = Deduplicator()
        pending: list[tuple[ShareLink, str]] = []
        for source in self.sources:
            reader = iter_input_lines(source.stream, source.name)
            for line in reader:
                if self._stop.is_set():
                    return
                self.counts["lines"] += 1
                where = _source_of(line.source, line.line_no)
                for rejection in line.rejections:
                    self.counts["links"] += 1
                    record = LinkRecord(
                        _invalid_key(rejection.text),
                        rejection.text or "(empty)",
                        None,
                        "invalid",
                        rejection.reason,
                        0,
                        where,
                    )
                    await self._hand_to_writer(FetchedLink(record, None))
                for link in line.links:
                    self.counts["links"] += 1
                    if dedup.seen(link):
                        self.counts["duplicate"] += 1
                        continue
                    pending.append((link, where))
                if len(pending) >= _KNOWN_CHECK_CHUNK:
                    await self._dispatch(pending)
                    pending = []
                if self.counts["lines"] % 1000 == 0:
                    self.report()
                    await asyncio.sleep(0)  # let workers and the writer run on huge inputs
            self.counts["skipped_blank"] += getattr(reader, "skipped", 0)
        await self._dispatch(pending)

    async def _dispatch(self, pending: list[tuple[ShareLink, str]]) -> None:
        """Skip links already loaded or known gone (unless --force), queue the rest."""
        if not pending:
            return
        if self.settings.force:
            known: set[str] = set()
        else:
            keys = [link.key for link, _ in pending]
            ids = [link.aweme_id for link, _ in pending if link.aweme_id is not None]
            known = await asyncio.to_thread(self._known, keys, ids)
        for link, where in pending:
            if link.key in known:
                self.counts["skipped_known"] += 1
                continue
            await self._fetch_q.put((link, where))

    def _known(self, keys: list[str], ids: list[int]) -> set[str]:
        with self.engine.connect() as conn:
            return known_links(conn, keys, ids)


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
        counts["skipped_blank"] += getattr(reader, "skipped", 0)
    return counts
