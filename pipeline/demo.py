"""`ingest demo`: the whole job against the bundled fake upstream and the embedded database."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, text

from pipeline.config import Settings
from pipeline.ingest import IngestJob, InputSource
from pipeline.run import Reporter, RunSummary
from pipeline.testing.fake_upstream import FakeUpstream, FaultConfig

EXAMPLE_INPUT = Path(__file__).resolve().parents[1] / "inputs" / "example_urls.txt"

# The work in inputs/example_urls.txt that the demo upstream reports as deleted.
DEMO_GONE_ID = 7223326284024139065

SAMPLE_QUERY = """\
SELECT aweme_id, kind, author_nickname AS author, digg_count AS likes,
       image_count AS images, array_to_string(hashtags, ' ') AS hashtags
  FROM works_enriched
 ORDER BY digg_count DESC NULLS LAST
 LIMIT 5"""


async def run_demo(
    settings: Settings, engine: Engine, sources: Sequence[InputSource], reporter: Reporter
) -> RunSummary:
    faults = FaultConfig(latency_s=0.05, gone_ids=frozenset({DEMO_GONE_ID}))
    async with FakeUpstream(seed=0, faults=faults) as fake:
        base = await fake.start()
        fetch = dataclasses.replace(settings.fetch, api_base=base, resolve_base=base)
        job = IngestJob(dataclasses.replace(settings, fetch=fetch), engine, reporter, sources)
        return await job.run()


def print_sample(console: Console, engine: Engine) -> None:
    with engine.connect() as conn:
        result = conn.execute(text(SAMPLE_QUERY))
        columns = list(result.keys())
        rows = result.all()
    console.print(
        "\n[bold]Try it yourself[/bold] with `ingest db psql` (the tables and views are in "
        "docs/schema.md, more queries in docs/queries.sql), e.g. the most liked works:"
    )
    console.print(SAMPLE_QUERY, markup=False, highlight=False)
    table = Table(header_style="bold")
    for c in columns:
        table.add_column(c, overflow="fold", no_wrap=c == "aweme_id")
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console.print(table)
