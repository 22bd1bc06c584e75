"""Two writers on one database wait for each other only where both change the same row, and
then only for the end of the other's transaction: the loader locks its batch's works, and the
dimension rows it changes last, not every author it names (issue 13: many workers, one
database)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from pipeline.db.load import load_works
from pipeline.flatten import flatten

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _detail(fixtures_dir: Path, aweme_id: int) -> dict[str, Any]:
    body = json.loads((fixtures_dir / "video_detail_7071967230287744267.json").read_bytes())
    detail: dict[str, Any] = body["aweme_detail"]
    detail["aweme_id"] = str(aweme_id)
    return detail


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_engine(db_url)
    yield engine
    engine.dispose()


def _wait_briefly(conn: Connection) -> None:
    # A hang guard, not a timing assertion: a writer that would wait for the other one's lock
    # fails at once with lock_timeout instead of blocking the test.
    conn.execute(text("SET LOCAL lock_timeout = '2s'"))


def test_a_shared_author_the_batch_does_not_change_is_not_locked(
    engine: Engine, fixtures_dir: Path
) -> None:
    first, second, known = 7071967230287744001, 7071967230287744002, 7071967230287744267
    with engine.begin() as conn:  # the author is known from an older and a newer payload
        for hours in (-1, 1):
            load_works(conn, [flatten(_detail(fixtures_dir, known), T0 + timedelta(hours=hours))])
    with engine.connect() as a, engine.connect() as b, a.begin(), b.begin():
        _wait_briefly(a)
        _wait_briefly(b)
        load_works(a, [flatten(_detail(fixtures_dir, first), T0)])  # A keeps its locks open
        result = load_works(b, [flatten(_detail(fixtures_dir, second), T0)])
        assert result.works_inserted == 1
    with engine.connect() as conn:
        works = conn.execute(text("SELECT count(*) FROM works")).scalar_one()
        authors = conn.execute(text("SELECT count(*) FROM authors")).scalar_one()
    assert (works, authors) == (3, 1)


def test_writers_that_both_change_an_author_still_serialize(
    engine: Engine, fixtures_dir: Path
) -> None:
    first, second = 7071967230287744001, 7071967230287744002
    with engine.connect() as a, engine.connect() as b, a.begin(), b.begin():
        _wait_briefly(a)
        _wait_briefly(b)
        load_works(a, [flatten(_detail(fixtures_dir, first), T0)])  # a new author: locked
        with pytest.raises(OperationalError, match="lock timeout"):
            load_works(b, [flatten(_detail(fixtures_dir, second), T0 + timedelta(hours=1))])


def test_an_author_both_change_is_locked_only_at_the_end(
    engine: Engine, fixtures_dir: Path
) -> None:
    """The second writer gets through its works (their foreign-key checks on the author do not
    wait for the first writer's lock) and waits only where it writes the author itself."""
    first, second, known = 7071967230287744001, 7071967230287744002, 7071967230287744267
    with engine.begin() as conn:
        load_works(conn, [flatten(_detail(fixtures_dir, known), T0 - timedelta(hours=1))])
    with engine.connect() as a, engine.connect() as b, a.begin(), b.begin():
        _wait_briefly(a)
        _wait_briefly(b)
        load_works(a, [flatten(_detail(fixtures_dir, first), T0)])  # changes the author
        with pytest.raises(OperationalError, match="lock timeout") as stopped:
            load_works(b, [flatten(_detail(fixtures_dir, second), T0 + timedelta(hours=1))])
        assert "FOR NO KEY UPDATE" in str(stopped.value)  # the author's own write, at the end
