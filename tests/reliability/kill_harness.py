"""Tools for the kill-and-outage proofs: a canonical dump of every table, a workload of share
links with every kind of line in it, fresh databases, and a TCP proxy that plays "PostgreSQL
went away" on command.

The canonical dump (what "identical to a clean run" means)
-----------------------------------------------------------
Every base table of the `public` schema is dumped, found through `information_schema`, so a
table added by a later migration is compared without anyone remembering to list it. Each table
becomes a sorted list of rows (a multiset: a duplicated row shows up), and each column is kept
or reduced by the first rule that matches it, decided from its type, identity and name in the
catalogue (and two short named lists):

- identity / `nextval()` columns are dropped: a killed transaction burns sequence values, so
  surrogate numbers legitimately differ after kills;
- run ids (`run_id`, `*_run_id`) are reduced to "set" / NULL: which run wrote a row differs by
  design (the killed database has more runs), whether a run is named does not;
- date/time columns are reduced to "set" / NULL: their values come from the wall clock
  (first_seen_at, last_seen_at, fetched_at, captured_at, last_fetched_at, next_check_at,
  gone_at, heartbeats …), but whether they are set does not. The exceptions are the times
  that come from the payload, listed in `PAYLOAD_TIMES` and compared by value. A JSON column
  named like a time (`*_at`, e.g. `field_seen_at`: field name → fetch time) keeps its keys
  and has each time reduced the same way;
- effort counters (`EFFORT_COLUMNS`: `share_links.attempts`, the HTTP requests spent on a
  link over all runs) are dropped: they count work, not results. A link whose work another
  link has already loaded is skipped with no request, and whether that happens depends on
  when the other link's batch committed, in a clean run as much as after kills;
- JSON values are compared with sorted keys; everything else by value.

`ingest_runs` (one row per run, so never equal after kills) is not compared row by row, and
neither is any per-run log table (a table whose primary key includes a run id); the tests
check instead that no run is left `running`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, column, create_engine, select, table, text
from sqlalchemy.engine import make_url

from pipeline.testing.payloads import make_aweme_detail, sample_aweme_ids, template_kind

RUN_TABLES = frozenset({"ingest_runs"})
PAYLOAD_TIMES = frozenset({("works", "created_at")})
EFFORT_COLUMNS = frozenset({("share_links", "attempts")})
_TIME_TYPES = ("timestamp", "date", "time")  # data_type prefixes in information_schema

Row = tuple[str, ...]
Dump = dict[str, list[Row]]


@dataclass(frozen=True)
class ColumnRule:
    name: str
    mode: str  # "value" | "presence" | "times" (JSON whose leaves are times)


def _is_run_id(name: str) -> bool:
    return name == "run_id" or name.endswith("_run_id")


def _column_rules(conn: Any, table_name: str) -> list[ColumnRule]:
    rows = conn.execute(
        text(
            "SELECT column_name, data_type, is_identity, column_default "
            "FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = :t ORDER BY ordinal_position"
        ),
        {"t": table_name},
    ).all()
    rules = []
    for name, data_type, is_identity, default in rows:
        if is_identity == "YES" or "nextval(" in (default or ""):
            continue
        if (table_name, name) in EFFORT_COLUMNS:
            continue
        if data_type in ("json", "jsonb") and name.endswith("_at"):
            rules.append(ColumnRule(name, "times"))
            continue
        wall_clock = data_type.startswith(_TIME_TYPES) and (table_name, name) not in PAYLOAD_TIMES
        presence = wall_clock or _is_run_id(name)
        rules.append(ColumnRule(name, "presence" if presence else "value"))
    return rules


def _primary_key(conn: Any, table_name: str) -> list[str]:
    return list(
        conn.execute(
            text(
                "SELECT k.column_name FROM information_schema.table_constraints c "
                "JOIN information_schema.key_column_usage k "
                "  ON k.constraint_name = c.constraint_name AND k.table_schema = c.table_schema "
                "WHERE c.table_schema = 'public' AND c.table_name = :t "
                "  AND c.constraint_type = 'PRIMARY KEY'"
            ),
            {"t": table_name},
        ).scalars()
    )


def data_tables(conn: Any) -> list[str]:
    """Every base table in `public` except the run records and per-run logs."""
    names = conn.execute(
        text(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = 'public' AND table_type = 'BASE TABLE' ORDER BY 1"
        )
    ).scalars()
    return [
        n
        for n in names
        if n not in RUN_TABLES and not any(_is_run_id(c) for c in _primary_key(conn, n))
    ]


def _presence(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _presence(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_presence(v) for v in value]
    return None if value is None else "<set>"


def _canonical(value: Any, mode: str) -> str:
    if mode == "presence":
        return "NULL" if value is None else "<set>"
    if mode == "times":
        value = _presence(value)
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def canonical_dump(url: str) -> Dump:
    """Every data table as a sorted list of canonical rows (see the module docstring)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            dump: Dump = {}
            for name in data_tables(conn):
                rules = _column_rules(conn, name)
                stmt = select(*(column(r.name) for r in rules)).select_from(table(name))
                dump[name] = sorted(
                    tuple(_canonical(v, r.mode) for v, r in zip(row, rules, strict=True))
                    for row in conn.execute(stmt)
                )
            return dump
    finally:
        engine.dispose()


def dump_difference(expected: Dump, actual: Dump, limit: int = 5) -> str:
    """A readable account of how two dumps differ (empty when they are equal)."""
    lines = []
    for name in sorted(set(expected) | set(actual)):
        want, got = Counter(expected.get(name, [])), Counter(actual.get(name, []))
        missing, extra = list((want - got).elements()), list((got - want).elements())
        if missing or extra:
            lines.append(f"{name}: {len(missing)} rows missing, {len(extra)} unexpected")
            lines += [f"  - {row}" for row in missing[:limit]]
            lines += [f"  + {row}" for row in extra[:limit]]
    return "\n".join(lines)


def run_statuses(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(
                conn.execute(text("SELECT status FROM ingest_runs ORDER BY run_id")).scalars()
            )
    finally:
        engine.dispose()


def count_rows(url: str, table_name: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            stmt = select(text("count(*)")).select_from(table(table_name))
            return int(conn.execute(stmt).scalar_one())
    finally:
        engine.dispose()


# -- databases ------------------------------------------------------------------------------


@contextlib.contextmanager
def fresh_database(admin_engine: Engine, server_url: str, name: str) -> Iterator[str]:
    """A migrated database of its own (a clone of the session's template), dropped after."""
    # Identifiers cannot be bound parameters; `name` is made by the tests, never input.
    with admin_engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE ingest_template"))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin_engine.connect() as conn, contextlib.suppress(Exception):
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def database_name(tag: str) -> str:
    return f"ingest_kill_{os.getpid()}_{tag}"


# -- the workload ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """Input lines with every kind of line a user pastes, built from a seeded RNG."""

    lines: list[str]
    gone: frozenset[int]


def order_free_works(n: int, *, seed: int, author_pool: int) -> list[int]:
    """`n` works of the fake whose shared rows cannot depend on the order they load in.

    An author or a sound is a row "as last seen", written from every work that names it, and
    the fake builds each work from one of three real templates that carry different profile
    fields (avatar, signature, album, cover …) for the same author or sound. Which work loads
    last decides the row: in a clean run too, since fetches overlap. So the works are chosen
    such that every author and every sound appears only in works of one template; then every
    order of loading gives the same rows, and a difference means something was lost."""
    claims: dict[tuple[str, str], str] = {}
    chosen: list[int] = []
    for aweme_id in sample_aweme_ids(n * 20, seed=seed):
        detail = make_aweme_detail(aweme_id, seed=seed, sim_t=0, author_pool=author_pool)
        kind = template_kind(aweme_id, seed=seed)
        keys = [("author", str(detail["author"]["uid"]))]
        if detail["music"] is not None:
            keys.append(("music", str(detail["music"]["id_str"])))
        if all(claims.get(key, kind) == kind for key in keys):
            claims.update(dict.fromkeys(keys, kind))
            chosen.append(aweme_id)
            if len(chosen) == n:
                return chosen
    raise RuntimeError(f"fewer than {n} order-free works among {n * 20} candidates")


def build_workload(
    short_link: Any, *, seed: int, works: int, gone: int, junk: bool, author_pool: int
) -> Workload:
    """`works` live works and `gone` deleted ones, as id links in several shapes and short
    links; duplicates of three kinds (the same line again, the same work through another id
    shape, and the same work through its short link and its id link: known through another
    link); with `junk`, rejected lines too (some repeated verbatim) and comments/blanks."""
    rng = random.Random(seed)
    live = order_free_works(works, seed=seed, author_pool=author_pool)
    dead = frozenset(sample_aweme_ids(gone, seed=seed + 1))
    ids = live + sorted(dead)

    def shaped(aweme_id: int) -> str:
        short = short_link(aweme_id)
        return rng.choice(
            [
                short,
                f"7.43 hBG:/ 复制打开抖音，看看【作品】好看 {short} 复制此链接，打开Dou音搜索！",
                f"https://www.douyin.com/video/{aweme_id}",
                f"https://www.iesdouyin.com/share/video/{aweme_id}/?region=CN",
                f"https://www.douyin.com/discover?modal_id={aweme_id}",
                str(aweme_id),
            ]
        )

    lines = [shaped(i) for i in ids]
    lines += rng.sample(lines, len(lines) // 10)  # the same line again
    lines += [f"https://www.douyin.com/note/{i}" for i in rng.sample(live, len(live) // 10)]
    # Known through another link: the short link comes first in the file, the id link later.
    both = rng.sample(live, len(live) // 10)
    lines += [short_link(i) for i in both]
    rng.shuffle(lines)
    lines += [f"https://www.douyin.com/video/{i}" for i in both]
    if junk:
        rejected = [f"https://example.com/video/{n}" for n in range(10)]
        rejected += [f"垃圾行 {n}" for n in range(10)]
        rejected += ["not a link"] * 3  # identical rejected texts
        for text_line in rejected:
            lines.insert(rng.randrange(len(lines) + 1), text_line)
        lines[:0] = ["# a comment", ""]
    return Workload(lines, dead)


def write_workload(workload: Workload, path: Path) -> Path:
    path.write_text("\n".join(workload.lines) + "\n", encoding="utf-8")
    return path


# -- the outage proxy -----------------------------------------------------------------------


class OutageProxy:
    """A TCP proxy on 127.0.0.1 in front of PostgreSQL (a TCP server or a Unix socket), served
    from its own event loop in a background thread.

    `outage(seconds)` plays a database stop: every live connection is cut at once and the port
    refuses connections (nothing listens) until the time is up. `down()` / `up()` do the same
    without a timer."""

    def __init__(self, server_url: str) -> None:
        url = make_url(server_url)
        socket_dir = url.query.get("host")
        if isinstance(socket_dir, tuple):
            socket_dir = socket_dir[0]
        if socket_dir or not url.host:
            directory = socket_dir or "/var/run/postgresql"
            self._target: tuple[str, Any] = ("unix", f"{directory}/.s.PGSQL.{url.port or 5432}")
        else:
            self._target = ("tcp", (url.host, url.port or 5432))
        self._links: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.cut_connections = 0
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self._listen())

    def route(self, url: str) -> str:
        """`url` (a database on the proxied server) reached through the proxy instead."""
        routed = make_url(url).set(host="127.0.0.1", port=self.port)
        return routed.difference_update_query(["host", "port"]).render_as_string(
            hide_password=False
        )

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _open_target(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kind, where = self._target
        if kind == "unix":
            return await asyncio.open_unix_connection(where)
        return await asyncio.open_connection(*where)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            server_r, server_w = await self._open_target()
        except OSError:
            client_w.transport.abort()
            return
        self._links |= {client_w, server_w}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while chunk := await src.read(65536):
                    dst.write(chunk)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(pipe(client_r, server_w), pipe(server_r, client_w))
        finally:
            self._links -= {client_w, server_w}

    async def _down(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
            self.cut_connections += 1
        self._links.clear()

    async def _up(self) -> None:
        if self._server is None:
            await self._listen()

    def down(self) -> None:
        self._call(self._down())

    def up(self) -> None:
        self._call(self._up())

    def outage(self, seconds: float) -> None:
        """Go down now and come back after `seconds` (returns at once)."""
        self.down()

        def come_back() -> None:
            task = self.loop.create_task(self._up())
            self._tasks.add(task)  # held until done: the loop keeps only weak references
            task.add_done_callback(self._tasks.discard)

        self.loop.call_soon_threadsafe(self.loop.call_later, seconds, come_back)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._call(self._down())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
