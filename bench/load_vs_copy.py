"""The loader against its floor and its straw man: `load_works` vs a COPY of the very rows it
wrote vs a naive per-work ORM load (select-then-insert, commit per work), side by side.

N generated works go, in transactions of 200. They are built as `ingest` builds them, before
timing: each work's body is encoded as the fake upstream serves it (the seed contract's
envelope, `{"code": 0, "message": "success", "data": {aweme_detail, log_pb, status_code}}`), read
by the real contract (`SeedContract.classify`: orjson decode, received text) and flattened, the
received text standing in for the decoded payload (`pipeline.run.outcome_record`); a body that
holds a float goes the decoded way (`json_text` at load time), as in production. How many works
took each way is printed.

- **ours**: `pipeline.db.load.load_works` into a fresh database;
- **COPY**: the rows the loader wrote (every table, `raw_payloads` included), extracted from
  that database before timing, `COPY … FROM STDIN` into a fresh database, one transaction per
  batch of 200 works (each dimension row goes with the first batch that refers to it);
  ours and COPY run batch by batch, alternating which goes first, so both see the same minutes
  of a shared machine;
- **naive**: what many scrapers do: per work, a SQLAlchemy ORM `Session`, `session.get` each
  row by key, `add` it or set its attributes, commit. The same rows as COPY. It is slow, so it
  loads only the first `--naive-works` works; works/s are compared.

Client CPU (this process) and PostgreSQL CPU (the server's processes) per work are printed
for each timed run: the protocol is synchronous where a result is awaited, so their sum bounds
the throughput on this machine.

    python -m bench.load_vs_copy --works 2000 --repeat 3
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from bench.common import (
    Result,
    create_database,
    drop_database,
    median,
    pg_server,
    postgres_cpu_s,
    print_results,
)
from pipeline.db import models
from pipeline.db.load import load_works
from pipeline.flatten import FlatWork, flatten
from pipeline.rows import JsonText
from pipeline.runtime import steady_gc
from pipeline.testing.payloads import make_detail_data, sample_aweme_ids
from pipeline.upstream.contracts import SeedContract

SEED = 9
FETCHED_AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
OURS, COPY, NAIVE = "bench_lvc_ours", "bench_lvc_copy", "bench_lvc_naive"

# (model, key column, which works refer to a key) in an order that satisfies foreign keys.
DIMENSIONS: tuple[tuple[type[Any], str], ...] = (
    (models.Author, "uid"),
    (models.Music, "music_id"),
    (models.Collection, "mix_id"),
    (models.Place, "poi_id"),
    (models.Category, "category_id"),
    (models.Hashtag, "name"),
)
PER_WORK: tuple[type[Any], ...] = (
    models.Work,
    models.WorkStat,
    models.WorkHashtag,
    models.WorkMention,
    models.WorkImage,
    models.WorkCategory,
    models.RawPayload,
)


def keys_of(model: type[Any], w: FlatWork) -> list[Any]:
    """The keys of `model`'s rows that work `w` refers to."""
    if model is models.Author:
        return [w.author.uid] if w.author else []
    if model is models.Music:
        return [w.music.music_id] if w.music else []
    if model is models.Collection:
        return [w.collection.mix_id] if w.collection else []
    if model is models.Place:
        return [w.place.poi_id] if w.place else []
    if model is models.Category:
        return [c.category_id for c in w.categories or ()]
    return [h.name for h in w.hashtags or ()]


@dataclass
class Rows:
    """What the loader wrote, per batch: COPY text per table, and ORM-ready rows per work."""

    copy_text: list[list[tuple[str, bytes]]] = field(default_factory=list)
    per_work: list[list[tuple[type[Any], dict[str, Any]]]] = field(default_factory=list)


def body_of(aweme_id: int) -> bytes:
    """The body the fake upstream's seed contract serves for this work (its `_json`)."""
    data = make_detail_data(aweme_id, seed=SEED, sim_t=0.0)
    envelope = {"code": 0, "message": "success", "data": data}
    return json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()


def make_works(n: int) -> list[FlatWork]:
    """The works `ingest` would hand the loader for these bodies (`outcome_record`)."""
    contract = SeedContract()
    works = []
    for i, aweme_id in enumerate(sample_aweme_ids(n, seed=SEED)):
        read = contract.classify(200, body_of(aweme_id), {})
        assert read.detail is not None, read
        work = flatten(read.detail, FETCHED_AT + timedelta(i))
        if read.payload is not None:
            work = replace(work, raw=read.payload)
        works.append(work)
    return works


def paths(works: Sequence[FlatWork]) -> str:
    received = sum(1 for w in works if isinstance(w.raw, JsonText))
    return f"{received:,} as received text, {len(works) - received:,} decoded (a float)"


def load_ours(engine: Engine, works: Sequence[FlatWork], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(works), batch):
        with engine.begin() as conn:
            load_works(conn, works[i : i + batch])
    return time.perf_counter() - start


def extract(engine: Engine, works: Sequence[FlatWork], batch: int, naive_n: int) -> Rows:
    """The loaded rows, grouped by the batch (COPY) and the work (naive) that brings them."""
    first_batch: dict[type[Any], dict[Any, int]] = defaultdict(dict)
    first_work: dict[type[Any], dict[Any, int]] = defaultdict(dict)
    for i, w in enumerate(works):
        for model, _ in DIMENSIONS:
            for key in keys_of(model, w):
                first_batch[model].setdefault(key, i // batch)
                first_work[model].setdefault(key, i)
    ids = [w.work.aweme_id for w in works]
    rows = Rows()
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        for b in range(0, len(works), batch):
            chunk: list[tuple[str, bytes]] = []
            for model, key in DIMENSIONS:
                keys = [k for k, at in first_batch[model].items() if at == b // batch]
                chunk.append(_copy_out(cur, model, key, keys))
                if model is models.Author:
                    chunk.append(_copy_out(cur, models.AuthorSnapshot, "uid", keys))
            for model in PER_WORK:
                chunk.append(_copy_out(cur, model, "aweme_id", ids[b : b + batch]))
            rows.copy_text.append(chunk)
    finally:
        raw.close()
    with engine.connect() as conn:
        for i, w in enumerate(works[:naive_n]):
            mine: list[tuple[type[Any], dict[str, Any]]] = []
            for model, key in DIMENSIONS:
                wanted = [k for k in keys_of(model, w) if first_work[model].get(k) == i]
                mine += [(model, r) for r in _select(conn, model, key, wanted)]
                if model is models.Author:
                    snapshots = _select(conn, models.AuthorSnapshot, "uid", wanted)
                    mine += [(models.AuthorSnapshot, r) for r in snapshots]
            for model in PER_WORK:
                mine += [(model, r) for r in _select(conn, model, "aweme_id", [w.work.aweme_id])]
            rows.per_work.append(mine)
    return rows


def _copy_out(cur: Any, model: type[Any], key: str, keys: Sequence[Any]) -> tuple[str, bytes]:
    name = model.__tablename__
    query = sql.SQL("COPY (SELECT * FROM {} WHERE {} = ANY(%s)) TO STDOUT").format(
        sql.Identifier(name), sql.Identifier(key)
    )
    with cur.copy(query, (list(keys),)) as copy:
        return name, b"".join(bytes(part) for part in copy)


def _select(conn: Any, model: type[Any], key: str, keys: Iterable[Any]) -> list[dict[str, Any]]:
    keys = list(keys)
    if not keys:
        return []
    table = model.__table__
    mapper = model.__mapper__
    attrs = {c.name: prop.key for prop in mapper.column_attrs for c in prop.columns}
    found = conn.execute(select(table).where(table.c[key].in_(keys))).mappings()
    return [{attrs[c]: v for c, v in row.items()} for row in found]


def ours_and_copy(
    engines: dict[str, Engine],
    works: Sequence[FlatWork],
    rows: Rows,
    batch: int,
    server_url: str,
) -> dict[str, tuple[float, float, float]]:
    """Both arms batch by batch, alternating which goes first, so that both see the same
    minutes of a shared machine (whole arms one after the other swung the ratio 0.5-1.0 as
    other jobs came and went). Per arm: (seconds, client CPU s, PostgreSQL CPU s)."""
    raw = engines[COPY].raw_connection()
    try:
        cur = raw.cursor()

        def ours(b: int) -> None:
            with engines[OURS].begin() as conn:
                load_works(conn, works[b * batch : (b + 1) * batch])

        def copy(b: int) -> None:
            for name, data in rows.copy_text[b]:
                if data:
                    with cur.copy(sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(name))) as c:
                        c.write(data)
            raw.commit()

        spent = {"ours": [0.0, 0.0, 0.0], "copy": [0.0, 0.0, 0.0]}
        arms: list[tuple[str, Callable[[int], None]]] = [("ours", ours), ("copy", copy)]
        for b in range(len(rows.copy_text)):
            for name, arm in arms if b % 2 == 0 else arms[::-1]:
                server = postgres_cpu_s(server_url)  # (psutil's CPU is not the arm's)
                client = time.process_time()
                start = time.perf_counter()
                arm(b)
                elapsed = time.perf_counter() - start
                client = time.process_time() - client
                server_after = postgres_cpu_s(server_url)
                total = spent[name]
                total[0] += elapsed
                total[1] += client
                if server is not None and server_after is not None:
                    total[2] += server_after - server
        return {name: (t[0], t[1], t[2]) for name, t in spent.items()}
    finally:
        raw.close()


def load_naive(engine: Engine, rows: Rows) -> float:
    start = time.perf_counter()
    for work_rows in rows.per_work:
        with Session(engine) as session:
            for model, values in work_rows:
                pk = tuple(values[c.key] for c in model.__mapper__.primary_key)
                found = session.get(model, pk if len(pk) > 1 else pk[0])
                if found is None:
                    session.add(model(**values))
                else:
                    for attr, value in values.items():
                        setattr(found, attr, value)
            session.commit()
    return time.perf_counter() - start


def empty(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE works, authors, music, hashtags, collections, places, "
                          "categories, author_snapshots CASCADE"))  # fmt: skip


def count(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            m.__tablename__: conn.execute(
                text(f"SELECT count(*) FROM {m.__tablename__}")
            ).scalar_one()
            for m in (*(d for d, _ in DIMENSIONS), models.AuthorSnapshot, *PER_WORK)
        }


def run(server_url: str, n: int, batch: int, naive_n: int, repeat: int) -> list[Result]:
    started = time.perf_counter()
    works = make_works(n)
    print(f"built {n:,} works in {time.perf_counter() - started:.1f} s: {paths(works)}")
    engines = {name: create_database(server_url, name) for name in (OURS, COPY, NAIVE)}
    try:
        load_ours(engines[OURS], works, batch)
        rows = extract(engines[OURS], works, batch, naive_n)
        expected = count(engines[OURS])
        times: dict[str, list[float]] = {"ours": [], "copy": [], "naive": []}
        cpu: dict[str, list[tuple[float, float]]] = {"ours": [], "copy": [], "naive": []}
        with steady_gc():  # the collector settings `ingest` runs with (pipeline.runtime)
            for i in range(repeat):
                for engine in (engines[OURS], engines[COPY]):
                    empty(engine)
                pair = ours_and_copy(engines, works, rows, batch, server_url)
                for name, (seconds, client_s, server_s) in pair.items():
                    times[name].append(seconds)
                    cpu[name].append((client_s, server_s))
                empty(engines[NAIVE])
                server = postgres_cpu_s(server_url)
                client = time.process_time()
                times["naive"].append(load_naive(engines[NAIVE], rows))
                server_after = postgres_cpu_s(server_url)
                spent = server_after - server if server is not None and server_after else 0.0
                cpu["naive"].append((time.process_time() - client, spent))
                if i == 0:  # the work happened: the same rows in every database
                    assert count(engines[OURS]) == expected
                    assert count(engines[COPY]) == expected, (count(engines[COPY]), expected)
                print(
                    f"run {i + 1}: ours {n / times['ours'][-1]:,.0f} works/s, COPY "
                    f"{n / times['copy'][-1]:,.0f} works/s, naive "
                    f"{naive_n / times['naive'][-1]:,.0f} works/s; CPU ms/work (client + "
                    f"PostgreSQL): ours {_per_work(cpu['ours'][-1], n)}, COPY "
                    f"{_per_work(cpu['copy'][-1], n)}",
                    flush=True,
                )
    finally:
        for name, engine in engines.items():
            engine.dispose()
            drop_database(server_url, name)
    ours = [n / t for t in times["ours"]]
    copy = [n / t for t in times["copy"]]
    naive = [naive_n / t for t in times["naive"]]
    vs_copy = median([o / c for o, c in zip(ours, copy, strict=True)])
    vs_naive = median([o / v for o, v in zip(ours, naive, strict=True)])
    print(
        f"-> load_works / COPY {vs_copy:.2f} (runs: "
        + ", ".join(f"{o / c:.2f}" for o, c in zip(ours, copy, strict=True))
        + f"); load_works / naive ORM {vs_naive:.1f}x; load average "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    return [
        Result(
            "load",
            f"load_works / COPY of the same rows, {n:,} works, batches of {batch}",
            vs_copy,
            f"{median(ours):,.0f} vs {median(copy):,.0f} works/s",
        ),
        Result(
            "load",
            f"load_works / naive ORM select-then-insert, commit per work ({naive_n:,})",
            vs_naive,
            f"{median(ours):,.0f} vs {median(naive):,.0f} works/s",
        ),
    ]


def _per_work(spent: tuple[float, float], n: int) -> str:
    return f"{spent[0] / n * 1000:.3f} + {spent[1] / n * 1000:.3f}"


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--works", type=int, default=2_000, help="works per load")
    parser.add_argument("--batch", type=int, default=200, help="works per transaction")
    parser.add_argument("--naive-works", type=int, default=300, help="works the naive arm loads")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per arm")
    args = parser.parse_args(argv)
    with pg_server() as server_url:
        return run(server_url, args.works, args.batch, args.naive_works, args.repeat)


if __name__ == "__main__":
    print_results(main())
