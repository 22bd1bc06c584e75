"""Lists bound as one parameter: keys as one array, rows as one JSON text; and JSON text
bound as received (`Utf8Text`).

`column.in_(values)` renders one placeholder per value: a 500-key look-up is a new SQL text
for every length, which SQLAlchemy compiles and psycopg re-parses each time (it caches
statements of at most 50 parameters), ~10 ms of CPU per call. `column == ANY(:param)` is one
parameter and one SQL text, compiled and prepared once.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, cast

import orjson
import psycopg
from psycopg.adapt import Buffer, Dumper
from sqlalchemy import (
    JSON,
    BigInteger,
    Select,
    Table,
    Text,
    bindparam,
    column,
    func,
    literal,
    select,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, Insert
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.types import TypeEngine

from pipeline.rows import Utf8Text


def array_param(name: str, item: TypeEngine[Any]) -> Any:
    """A bound list, cast to an array of `item` (use with `any_`)."""
    return sql_cast(bindparam(name, type_=ARRAY(item)), ARRAY(item))


def ids_param(name: str) -> Any:
    """A bound list of bigint keys (aweme ids, uids)."""
    return array_param(name, BigInteger())


def texts_param(name: str) -> Any:
    """A bound list of text keys (link keys, names)."""
    return array_param(name, Text())


def recordset(target: Table, columns: Sequence[str]) -> Select[Any]:
    """SELECT of rows given as one JSON array of objects (`recordset_param`), typed as the
    target's columns: `json_to_recordset(:given) AS given(col type, ...)`. One statement for a
    batch of any size, where an executemany of dicts becomes one `INSERT ... VALUES` of N rows:
    a new SQL text per size, re-parsed by psycopg in Python every time."""
    given = (
        func.json_to_recordset(sql_cast(bindparam("given", type_=Text()), JSON()))
        .table_valued(*(column(c, target.c[c].type) for c in columns))
        .render_derived(name="given", with_types=True)
    )
    return select(*(_json_null(given.c[c]).label(c) if isinstance(target.c[c].type, JSON)
                    else given.c[c] for c in columns))  # fmt: skip


def _json_null(value: Any) -> Any:
    # SQLAlchemy writes a Python None in a JSON column as JSON null (not SQL NULL);
    # json_to_recordset reads a JSON null as SQL NULL: turn it back.
    return func.coalesce(value, sql_cast(literal("null"), JSONB))


def insert_recordset(target: Table, columns: Sequence[str]) -> Insert:
    """`INSERT INTO target (columns) SELECT ... FROM json_to_recordset(:given)`."""
    return pg_insert(target).from_select(list(columns), recordset(target, columns))


def recordset_param(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The parameter of `recordset`: one text, encoded in C by orjson, where arrays would be
    dumped by psycopg element by element in Python."""
    try:
        return {"given": orjson.dumps(rows).decode()}
    except TypeError:  # orjson.JSONEncodeError: an integer beyond 64 bits, which PostgreSQL
        # must see and refuse (NumericValueOutOfRange: that work alone fails, see batches.py)
        return {"given": json.dumps(rows, default=_isoformat)}


def _isoformat(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


class _Utf8TextDumper(Dumper):
    """`Utf8Text` goes as it is, typed as a `str` would be (unknown: PostgreSQL reads it as the
    type the statement casts it to)."""

    oid = 0

    def dump(self, obj: Any) -> Buffer | None:
        return cast(bytes, obj)


psycopg.adapters.register_dumper(Utf8Text, _Utf8TextDumper)
