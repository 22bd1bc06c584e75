"""Rebuild the content of every table from `raw_payloads`, without fetching (after the
flattener improved, or as the repair step of a migration).

Only content is rebuilt: work state (gone, schedule, check times) is never touched, and facts
the stored payloads no longer carry are kept (the loader never writes "unknown" over a value).
`raw_payloads` is read, never rewritten: the only write to it is `loader_version` on rows an
older flattener loaded (the payloads themselves are not touched, not even re-sent).

At read speed, on every core:

    this process: a server-side cursor over the ids cuts them into ranges of 2,000
    └► this process and one spawned helper per other core take the ranges in turn (one shared
       counter), per range: stream its payloads as the server's UTF-8 text (server-side
       cursor, `batch_size` rows at a time) ──► orjson + flatten ──► merge, one transaction
       per batch; this process keeps the heartbeat and the record, the helpers report back

- payloads are read as JSONB text, as bytes, and decoded with orjson (`json` for what orjson
  refuses or reads otherwise, e.g. integers beyond 64 bits): psycopg's JSONB loader runs
  `json.loads`, ~70 µs for a 27 KB payload against ~48 µs for orjson plus that check;
- decoding, flatten and the merge's Python side are CPU work under one interpreter lock, so
  they run in processes, not threads; each process merges what it flattened, because sending
  the flattened rows back to one merging process costs it almost as much to unpickle
  (~0.25 ms per work, measured) as decoding and flattening them (~0.35 ms);
- this process works too: a helper costs ~0.5 s of CPU to start (imports), and ranges taken
  from a shared counter keep every process busy until the last one (ranges handed out ahead
  left one process idle at the end of a run while the other finished its queue);
- memory is bounded by the batches in flight (one per process), whatever the table holds;
- a crash keeps the batches already committed, and the record counts them; Ctrl-C stops
  this process at once and the helpers after the range each is on.
A small run (under two ranges per process) works in this process alone: a helper would cost
more than it saves.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, wait
from dataclasses import replace
from datetime import datetime
from multiprocessing.sharedctypes import Synchronized
from typing import Any

import psycopg
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from sqlalchemy import (
    Connection,
    Engine,
    Select,
    Table,
    Text,
    Update,
    any_,
    cast,
    func,
    select,
    update,
)

from pipeline.db.engine import make_db_engine
from pipeline.db.load import load_works, table
from pipeline.db.models import RawPayload
from pipeline.db.params import ids_param
from pipeline.db.payloads import LOADER_VERSION
from pipeline.db.runs import HEARTBEAT_INTERVAL, beat, finish_run, start_run
from pipeline.db.tracking import RunStatus
from pipeline.flatten import FlatWork, NotAWork, flatten
from pipeline.runtime import settle_gc
from pipeline.upstream.decode import loads_as_json

log = logging.getLogger(__name__)

# Payloads per range handed to a worker process: big enough that connecting is noise, small
# enough that the processes stay evenly busy and Ctrl-C waits seconds, not minutes.
RANGE_SIZE = 2_000

# (aweme_id, fetched_at, payload, complete_fetched_at, complete_payload), payloads as JSON text
# (UTF-8 bytes where they are streamed, see `_stream`).
StoredRow = tuple[int, datetime, str | bytes, datetime | None, str | bytes | None]
# What a range did: its counts, and (aweme_id, reason) of each payload that is not a work.
RangeDone = tuple[Counter[str], list[tuple[int, str]]]


def reprocess(
    engine: Engine,
    batch_size: int = 500,
    *,
    stale_only: bool = False,
    workers: int | None = None,
    range_size: int = RANGE_SIZE,
) -> Counter[str]:
    """Flatten every stored payload again (`stale_only`: those loaded by an older flattener)
    and merge it in; one transaction per batch, so a crash keeps the batches already done.
    `workers`: processes, this one included (default: one per core), used when there are at
    least two ranges of `range_size` payloads per process (starting one costs ~0.5 s of
    imports)."""
    counts: Counter[str] = Counter()
    with engine.begin() as conn:
        run_id = start_run(conn, "reprocess", {"batch_size": batch_size, "stale": stale_only})
    status: RunStatus = RunStatus.FAILED
    message: str | None = "stopped by an error"
    try:
        ranges = key_ranges(engine, range_size, stale_only=stale_only)
        workers = workers or _cores()
        # A helper process costs ~1 s of CPU to start: not worth it for a few ranges.
        helpers = workers - 1 if len(ranges) >= 2 * workers else 0
        _Pool(engine, run_id, helpers, counts).run(ranges, batch_size, stale_only)
        status, message = RunStatus.SUCCEEDED, None
    except KeyboardInterrupt:
        status, message = RunStatus.INTERRUPTED, "interrupted"
        raise
    finally:
        # The record is closed whatever ended the run (batches done so far are kept).
        with contextlib.suppress(Exception), engine.begin() as conn:
            finish_run(conn, run_id, status, counts, message)
    return counts


def repair_stale_content(engine: Engine) -> int:
    """Rebuild the content of every payload loaded by an older flattener (after an upgrade);
    returns how many payloads that was (0, and no run record, when there were none)."""
    raw = table(RawPayload)
    with engine.connect() as conn:
        stale = conn.execute(
            select(func.count()).where(raw.c.loader_version < LOADER_VERSION)
        ).scalar_one()
    if not stale:
        return 0
    log.warning("rebuilding the content of %d stored payloads (repair after upgrade)", stale)
    return reprocess(engine, stale_only=True)["payloads"]


def key_ranges(engine: Engine, size: int, *, stale_only: bool) -> list[tuple[int, int]]:
    """(first, last) aweme_ids of consecutive ranges of `size` stored payloads, from a
    server-side cursor over the primary key (only the boundaries are kept)."""
    raw: Table = table(RawPayload)
    ranges: list[tuple[int, int]] = []
    query = _stored(select(raw.c.aweme_id), stale_only=stale_only)
    with engine.connect() as conn:
        streamed = conn.execution_options(stream_results=True, yield_per=size)
        for part in streamed.execute(query).scalars().partitions(size):
            ranges.append((part[0], part[-1]))
    return ranges


def reprocess_range(
    engine: Engine,
    first: int,
    last: int,
    batch_size: int,
    *,
    stale_only: bool,
    into: RangeDone | None = None,
) -> RangeDone:
    """Rebuild the content of the payloads with `first` <= aweme_id <= `last`: stream them
    (server-side cursor, `batch_size` at a time), flatten, merge one batch per transaction.
    What each batch did is added to `into` once it is committed (so a range stopped midway
    by an error or Ctrl-C still tells what it committed)."""
    counts, not_works = into if into is not None else (Counter(), [])
    query = _payloads().where(table(RawPayload).c.aweme_id.between(first, last))
    with engine.connect() as reading:
        for batch in _stream(reading, _stored(query, stale_only=stale_only), batch_size):
            batch_not_works: list[tuple[int, str]] = []
            works = flatten_stored(batch, batch_not_works)
            batch_counts: Counter[str] = Counter()
            with engine.begin() as conn:
                merge_batch(conn, [row[0] for row in batch], works, batch_counts)
            counts.update(batch_counts)
            not_works += batch_not_works
    return counts, not_works


class _Utf8Bytes(Loader):
    """A text column as the server sent it, UTF-8 bytes: orjson reads bytes faster than a str
    (~50 against ~70 µs for a 30 KB payload), and psycopg no longer decodes every payload into
    a str that orjson would encode again (~15 against ~25 µs)."""

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


def _stream(reading: Connection, query: Select[Any], batch_size: int) -> Iterator[list[StoredRow]]:
    """The query's rows, `batch_size` at a time, from a server-side cursor of the driver (a
    per-cursor loader is not reachable through SQLAlchemy's), text columns as UTF-8 bytes when
    the connection's encoding is UTF-8 (else as str, which `decode` reads as well)."""
    compiled = query.compile(dialect=reading.dialect)
    driver = reading.connection.driver_connection
    assert isinstance(driver, psycopg.Connection)
    with driver.cursor(name="reprocess_payloads") as cursor:
        if driver.info.encoding == "utf-8":
            cursor.adapters.register_loader("text", _Utf8Bytes)
        cursor.itersize = batch_size
        cursor.execute(str(compiled), compiled.params)
        while rows := cursor.fetchmany(batch_size):
            yield [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def reprocess_batch(
    conn: Connection, after: int, batch_size: int, counts: Counter[str], *, stale_only: bool
) -> tuple[int, int]:
    """Rebuild the next `batch_size` payloads with aweme_id > `after` in the caller's
    transaction; returns how many were read and the last id (the next `after`). Payloads that
    are not a work are counted and logged."""
    query = _payloads().where(table(RawPayload).c.aweme_id > after)
    rows = conn.execute(_stored(query, stale_only=stale_only).limit(batch_size)).all()
    if not rows:
        return 0, after
    batch: list[StoredRow] = [(r[0], r[1], r[2], r[3], r[4]) for r in rows]
    not_works: list[tuple[int, str]] = []
    works = flatten_stored(batch, not_works)
    range_counts: Counter[str] = Counter()
    merge_batch(conn, [row[0] for row in batch], works, range_counts)
    _settle((range_counts, not_works), counts)
    return len(batch), batch[-1][0]


def _payloads() -> Select[Any]:
    raw: Table = table(RawPayload)
    return select(
        raw.c.aweme_id,
        raw.c.fetched_at,
        cast(raw.c.payload, Text),
        raw.c.complete_fetched_at,
        cast(raw.c.complete_payload, Text),
    )


def _stored(query: Select[Any], *, stale_only: bool) -> Select[Any]:
    raw: Table = table(RawPayload)
    if stale_only:
        query = query.where(raw.c.loader_version < LOADER_VERSION)
    return query.order_by(raw.c.aweme_id)


def flatten_stored(batch: Sequence[StoredRow], not_works: list[tuple[int, str]]) -> list[FlatWork]:
    """Decode and flatten the payloads of a batch, oldest first per work; payloads that are not
    a work are added to `not_works`."""
    works: list[FlatWork] = []
    for aweme_id, fetched_at, payload, complete_at, complete in batch:
        stored = [(fetched_at, payload)]
        if complete is not None and complete_at is not None:
            stored.insert(0, (complete_at, complete))
        for at, text in stored:
            try:
                work = flatten(decode(text), at)
            except NotAWork as exc:
                not_works.append((aweme_id, str(exc)))
                continue
            # `raw` is for raw_payloads, which reprocess never writes: the decoded payload is
            # let go now instead of living until the batch is merged.
            works.append(replace(work, raw={}))
    return works


def decode(text: str | bytes) -> Any:
    """JSON text from PostgreSQL to Python values, exactly as `json.loads` reads it (which is
    what psycopg uses for JSONB), at orjson's speed (`loads_as_json`)."""
    return loads_as_json(text)


def merge_batch(
    conn: Connection, ids: Sequence[int], works: Sequence[FlatWork], counts: Counter[str]
) -> None:
    """Merge one batch's works and mark its payloads as read by this flattener version."""
    result = load_works(conn, works, reprocess=True)
    conn.execute(_MARK_READ, {"ids": list(ids)})
    counts["payloads"] += len(ids)
    counts["works_updated"] += result.works_updated
    counts["works_new"] += result.works_inserted
    counts["snapshots_added"] += result.snapshots_added


def _mark_read() -> Update:
    # The ids as one array parameter: an IN list would be 500 parameters to render and send.
    raw: Table = table(RawPayload)
    return (
        update(raw)
        .where(raw.c.aweme_id == any_(ids_param("ids")), raw.c.loader_version != LOADER_VERSION)
        .values(loader_version=LOADER_VERSION)
    )


_MARK_READ = _mark_read()


def _settle(done: RangeDone, counts: Counter[str]) -> None:
    range_counts, not_works = done
    counts.update(range_counts)
    for aweme_id, reason in not_works:
        counts["not_a_work"] += 1
        log.warning("raw payload %s is not a work: %s", aweme_id, reason)


class _Pool:
    """This process and `helpers` spawned processes take the ranges in turn from one shared
    counter, so every process stays busy until the last range (a range handed out ahead to a
    busy process would leave the others idle at the end). This process works too: on 2 cores
    one helper is started instead of two (~1 s of CPU each for the imports), and it works from
    the first second instead of waiting for them; between its ranges it keeps the heartbeat.
    Each helper reports what it committed when it runs out of ranges."""

    def __init__(self, engine: Engine, run_id: int, helpers: int, counts: Counter[str]) -> None:
        self.engine, self.run_id, self.helpers, self.counts = engine, run_id, helpers, counts
        # Handed to the helpers (they connect on their own); never logged.
        self._url = engine.url.render_as_string(hide_password=False)
        self._beaten = time.monotonic()

    def run(self, ranges: Sequence[tuple[int, int]], batch_size: int, stale_only: bool) -> None:
        # spawn, not fork: this process holds database connections.
        context = multiprocessing.get_context("spawn")
        taken = context.Value("i", 0)  # how many ranges were taken, by any process
        pool = None
        helping: list[Future[_Helped]] = []
        if self.helpers:
            pool = ProcessPoolExecutor(
                self.helpers, mp_context=context, initializer=_start_helper, initargs=(taken,)
            )
            args = (self._url, ranges, batch_size, stale_only)
            helping = [pool.submit(_help, *args) for _ in range(self.helpers)]
        try:
            while (i := _take(taken, len(ranges))) is not None:
                done: RangeDone = (Counter(), [])
                try:
                    first, last = ranges[i]
                    reprocess_range(
                        self.engine, first, last, batch_size, stale_only=stale_only, into=done
                    )
                finally:
                    _settle(done, self.counts)  # what it committed, even if stopped midway
                self._beat(due_only=True)
            self._wait(helping)
        finally:
            # On an error or Ctrl-C: no range is taken any more; the helpers finish the one
            # each is on and report what they committed (what the record says is what was).
            with taken.get_lock():
                taken.value = len(ranges)
            if pool is not None:
                pool.shutdown(wait=True)
            error = self._count_helpers(helping)
        if error is not None:
            raise error

    def _wait(self, helping: list[Future[_Helped]]) -> None:
        """Until every helper is done, beating the heartbeat meanwhile."""
        pending = set(helping)
        while pending:
            _, pending = wait(pending, timeout=HEARTBEAT_INTERVAL.total_seconds())
            self._beat(due_only=bool(pending))

    def _count_helpers(self, helping: list[Future[_Helped]]) -> BaseException | None:
        """Counts what every helper committed; the first error one of them met."""
        error: BaseException | None = None
        for future in helping:
            if future.cancelled() or not future.done():
                continue
            if (raised := future.exception()) is not None:  # e.g. a helper that died
                error = error or raised
                continue
            dones, failed = future.result()
            for done in dones:
                _settle(done, self.counts)
            error = error or failed
        return error

    def _beat(self, *, due_only: bool) -> None:
        if due_only and time.monotonic() - self._beaten < HEARTBEAT_INTERVAL.total_seconds():
            return
        with self.engine.begin() as conn:
            beat(conn, self.run_id)
        self._beaten = time.monotonic()


# What a helper did: a RangeDone per range it took (the last one possibly stopped midway),
# and the error that stopped it, raised again by the parent once it has counted the rest.
_Helped = tuple[list[RangeDone], Exception | None]
_taken: Synchronized[int] | None = None  # a helper's handle on the shared counter


def _take(taken: Synchronized[int], total: int) -> int | None:
    """The index of the next range nobody has taken, if any (and takes it)."""
    with taken.get_lock():
        if taken.value >= total:
            return None
        taken.value += 1
        return taken.value - 1


def _help(
    url: str, ranges: Sequence[tuple[int, int]], batch_size: int, stale_only: bool
) -> _Helped:
    """A helper's whole job: ranges until there are none left, on one connection."""
    assert _taken is not None, "_start_helper runs first"
    engine = make_db_engine(url)
    dones: list[RangeDone] = []
    try:
        while (i := _take(_taken, len(ranges))) is not None:
            dones.append((Counter(), []))
            first, last = ranges[i]
            reprocess_range(engine, first, last, batch_size, stale_only=stale_only, into=dones[-1])
    except Exception as exc:  # handed to the parent, with what was committed
        with _taken.get_lock():
            _taken.value = len(ranges)  # nobody takes another range: the run is failing
        return dones, exc
    finally:
        engine.dispose()
    return dones, None


def _start_helper(taken: Synchronized[int]) -> None:
    global _taken
    _taken = taken  # a synchronized value reaches a process only through its start-up
    # Ctrl-C reaches the whole process group: the parent handles it (closes the run record,
    # lets the ranges in flight commit); a helper printing its own traceback would only add noise.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settle_gc()  # the same collector settings as the parent's run (see pipeline.runtime)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
