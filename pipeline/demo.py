"""`ingest demo`: the whole job against the bundled fake upstream, in an embedded database of
its own (never the default one, never a --database-url), emptied before every demo so each one
exercises its contract from scratch."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, text

from pipeline.config import Settings, default_data_dir
from pipeline.errors import UsageError
from pipeline.ingest import IngestJob, InputSource
from pipeline.run import Reporter, RunSummary
from pipeline.testing.fake_upstream import FakeUpstream, FaultConfig

EXAMPLE_INPUT = Path(__file__).resolve().parents[1] / "inputs" / "example_urls.txt"

# Written into a data directory the demo created: only such a directory is ever emptied.
DEMO_MARKER = "DOUYIN_INGEST_DEMO"

# The work in inputs/example_urls.txt that the demo upstream reports as deleted.
DEMO_GONE_ID = 7223326284024139065

SAMPLE_QUERY = """\
SELECT aweme_id, kind, author_nickname AS author, digg_count AS likes,
       image_count AS images, array_to_string(hashtags, ' ') AS hashtags
  FROM works_enriched
 ORDER BY digg_count DESC NULLS LAST
 LIMIT 5"""


def default_demo_dir() -> Path:
    """The demo's own data directory, next to (never inside) the default database's."""
    return default_data_dir().with_name(default_data_dir().name + "-demo")


def prepare_demo_dir(data_dir: Path) -> Path:
    """`data_dir`, created and marked as the demo's; refuses a directory with other content
    (it could hold real data, and the demo empties its database)."""
    marker = data_dir / DEMO_MARKER
    if data_dir.exists() and not marker.exists() and any(data_dir.iterdir()):
        raise UsageError(
            f"{data_dir} is not empty and was not created by `ingest demo`: the demo empties "
            "its database, so it only uses a directory of its own (pass a new --data-dir)"
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    marker.write_text("created by `ingest demo`; its database is emptied by every demo\n")
    return data_dir


def empty_database(engine: Engine) -> None:
    """Every table emptied (the schema stays, at head): each demo starts from nothing."""
    from pipeline.db import tracking  # noqa: F401 - the bookkeeping tables, on the same Base
    from pipeline.db.models import Base

    with engine.begin() as conn:
        quote = conn.dialect.identifier_preparer.quote
        names = ", ".join(quote(t.name) for t in Base.metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))


async def run_demo(
    settings: Settings, engine: Engine, sources: Sequence[InputSource], reporter: Reporter
) -> RunSummary:
    faults = FaultConfig(latency_s=0.05, gone_ids=frozenset({DEMO_GONE_ID}))
    style = settings.fetch.api_style
    async with FakeUpstream(seed=0, faults=faults, style=style) as fake:
        base = await fake.start()
        fetch = dataclasses.replace(
            settings.fetch, api_base=base, resolve_base=fake.short_link_base
        )
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
