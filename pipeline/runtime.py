"""Interpreter settings for the long-running commands (`ingest run`, `refresh`, `reprocess`).

Why the garbage collector is tuned: every fetched payload decodes into a ~30 KB tree of a few
thousand dicts, lists and strings, and up to two batches of them wait in the queues. None of
them is in a reference cycle (reference counting frees them), yet with CPython's default
thresholds (700, 10, 10) the cyclic collector ran a young collection every payload or so and a
full pass over every live object, queued payloads included, every few seconds: 17.5% of the
process's CPU in the audit of 2026-11-30 (20 full passes, 2.4 s, in a 5,000-link run), 27% in
`bench.end_to_end`'s probe (`gc.callbacks`) once the loader had become cheaper.

- `gc.freeze()` after start-up moves everything imported so far (modules, classes, SQLAlchemy
  metadata: ~100k objects) to a permanent generation that no collection walks again;
- `RUN_THRESHOLDS` make young collections ~70x rarer and full passes rarer still, while the
  cycles a run does make (asyncio futures and tracebacks of finished requests) are still
  collected often enough that memory stays flat.

Measured side by side at 5,000 links (bench/README.md): the collector's share of the process's
CPU fell from 27% to 4% (2% at 20,000 links), CPU per work by 20%, works/s 1.09x. The previous
settings are restored when the block ends, so an embedding program (or a test) is not left
tuned; worker processes that live only for a run (`ingest reprocess`'s pool) call `settle_gc`
for good.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

# (young, middle, old): young collections every 50,000 net allocations instead of 700, and a
# full one after 5 x 5 of those (instead of 10 x 10). Measured over a 40,000-link run, with
# these the collector took 1.1% of CPU and the peak RSS stayed flat (~200 MB, as with the
# defaults); with (100,000, 20, 10) full passes were so rare that the cyclic garbage of
# finished requests piled up (+30 MB of RSS within the run), and (20,000, 10, 10) cost 12%.
RUN_THRESHOLDS = (50_000, 5, 5)


def settle_gc() -> None:
    """Freeze what start-up allocated and raise the collector's thresholds (for good: for a
    worker process that lives only for the run)."""
    gc.collect()  # start-up garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(*RUN_THRESHOLDS)


@contextmanager
def steady_gc() -> Iterator[None]:
    """`settle_gc` for the block; the previous settings are restored after it."""
    before = gc.get_threshold()
    settle_gc()
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()
