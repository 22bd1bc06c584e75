"""What the pipeline must do with each hostile answer of `pipeline.testing.hostile`, and the
plumbing the reliability tests share (a database per module, a fake plus a listener, queries).

Outcomes are exact; reasons are matched loosely (a keyword), so rewording a message does not
break a test but a wrong classification does.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from helpers import ThreadedFake
from pipeline.testing.hostile import Hostile

_LARGE = r"larger|too large|too big|size|bytes|limit"
_SHAPE = r"not an object|not a work|aweme_detail|\ba list\b|\ba string\b|type|shape"
_IDENTITY = r"different work|another work|other work|mismatch|redirect"


@dataclass(frozen=True)
class Expect:
    outcome: str  # share_links.last_outcome, exactly
    reason: str | None  # a regex, searched case-insensitively in last_reason
    styles: tuple[str, ...] = ("seed", "amagi")


EXPECT: dict[Hostile, Expect] = {
    Hostile.NAN: Expect("failed", r"nan|not (valid|strict) json|number|json"),
    Hostile.INFINITY: Expect("failed", r"infinity|not (valid|strict) json|number|json"),
    Hostile.HUGE_FLOAT: Expect("failed", r"out of range|number|float|json"),
    Hostile.DEEP_NESTING: Expect("failed", r"nest|deep|depth"),
    Hostile.HUGE_BODY: Expect("failed", _LARGE),
    Hostile.HUGE_BODY_CHUNKED: Expect("failed", _LARGE),
    Hostile.GZIP_BOMB: Expect("failed", _LARGE),
    Hostile.UNDECODABLE: Expect("failed", r"utf-?8|decod|encod|charset"),
    Hostile.LONG_INT: Expect("failed", r"number|digit|integer|json|large"),
    # Beyond 64 bits is out of range for JSON numbers the pipeline stores (issue 10, point 1);
    # within it, nonsense (negative counts) is dropped per value and the work loads.
    Hostile.HUGE_INTS: Expect("failed", r"range|64|integer|number"),
    Hostile.DETAIL_LIST: Expect("failed", _SHAPE),
    Hostile.DETAIL_STRING: Expect("failed", _SHAPE),
    # Parts of the wrong type are absent, not fatal (UPSTREAM.md §3): the work loads without them.
    Hostile.WRONG_PART_TYPES: Expect("loaded", None),
    Hostile.NEGATIVE_INTS: Expect("loaded", None),
    # Absent is not a value: a new work loads without those parts (and a known one keeps them,
    # see test_hostile_edges.py).
    Hostile.DEGRADED: Expect("loaded", None),
    Hostile.NUL_CHARS: Expect("loaded", None),
    Hostile.LONE_SURROGATES: Expect("loaded", None),
    Hostile.CONTROL_CHARS: Expect("loaded", None),
    Hostile.OTHER_WORK: Expect("failed", _IDENTITY),
    # amagi's gone answers carry no id (UPSTREAM.md §1.2), so only seed can name another work.
    Hostile.GONE_OTHER_WORK: Expect("failed", _IDENTITY, ("seed",)),
    Hostile.REDIRECT_OTHER_WORK: Expect("failed", _IDENTITY),
    Hostile.REDIRECT_OFF_HOST: Expect("failed", r"redirect"),
    Hostile.REDIRECT_FILE: Expect("failed", r"redirect"),
    # The resolver walks short links itself only in the amagi style.
    Hostile.SHORT_LINK_OFF_HOST: Expect("invalid", r"redirect|host", ("amagi",)),
    Hostile.SHORT_LINK_DOT_SEGMENTS: Expect("invalid", r"did not resolve|redirect", ("amagi",)),
}
# Temporary by nature (a timeout), so not part of the exit-2 corpus: see test_slow_drip_*.
TEMPORARY = (Hostile.SLOW_DRIP,)
IDENTITY_KINDS = (Hostile.OTHER_WORK, Hostile.GONE_OTHER_WORK, Hostile.REDIRECT_OTHER_WORK)
CLEANED_KINDS = tuple(k for k, e in EXPECT.items() if e.outcome == "loaded")


def kinds_for(style: str, *, short_links: bool = True) -> list[Hostile]:
    return [
        k for k, e in EXPECT.items() if style in e.styles and (short_links or not k.on_short_link)
    ]


def link_for(kind: Hostile, aweme_id: int, fake: ThreadedFake, n: int) -> str:
    """An input line for a hostile work. Identity kinds use id links: a seed service resolves
    short links itself, so for those only the answer can say which work they name."""
    if kind.on_short_link:
        return fake.fake.short_link(aweme_id)
    if kind in IDENTITY_KINDS or n % 2 == 0:
        return f"https://www.douyin.com/video/{aweme_id}"
    return fake.fake.short_link(aweme_id)


def reason_matches(expect: Expect, reason: str | None) -> bool:
    if expect.reason is None:
        return True
    return reason is not None and re.search(expect.reason, reason, re.I) is not None


# -- a database of the module's own --------------------------------------------------------


@contextlib.contextmanager
def fresh_database(admin_engine: Engine, server_url: str, label: str) -> Iterator[str]:
    """A migrated database cloned from the session template (as `db_url`, but for a module)."""
    name = f"ingest_rel_{label}_{os.getpid()}"
    with admin_engine.connect() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        conn.execute(text(f"CREATE DATABASE {name} TEMPLATE ingest_template"))
    try:
        yield make_url(server_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin_engine.connect() as conn, contextlib.suppress(Exception):
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


def query(url: str, sql: str, **params: Any) -> list[Any]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(sql), params))
    finally:
        engine.dispose()


def link_rows(url: str) -> dict[int, Any]:
    """share_links by the work id the input named (links to unknown short codes have none)."""
    rows = query(
        url, "SELECT link_key, url, aweme_id, last_outcome, last_reason, attempts FROM share_links"
    )
    return {r.aweme_id: r for r in rows if r.aweme_id is not None}


def fetch_args(fake: ThreadedFake, style: str, *extra: str) -> list[str]:
    return [
        "--api-base", fake.url, "--resolve-base", fake.url, "--api-style", style,
        "--no-progress", "--rate", "1000", "--concurrency", "16", *extra,
    ]  # fmt: skip


def api_requests(fake: ThreadedFake, ids: Sequence[int]) -> int:
    """Requests the fake's API routes received for these works (short-link hops excluded)."""
    wanted = set(ids)
    return sum(1 for r in fake.fake.served if r.style != "short_link" and r.aweme_id in wanted)
