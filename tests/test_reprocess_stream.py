"""`pipeline.reprocess` streams the stored payloads as UTF-8 bytes (the server's text, not
decoded into a str by psycopg): what `decode` makes of them is what `json.loads` makes of the
text SQLAlchemy's own path returns, for every payload, whatever it holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text

from pipeline.db.load import load_works
from pipeline.flatten import flatten
from pipeline.reprocess import _payloads, _stored, _stream, decode
from pipeline.testing.payloads import make_aweme_detail, sample_aweme_ids

AT = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

STORED = [
    '{"desc": "\\u4e2d\\u6587 #话题 🎉 é", "aweme_id": "7071967230287744267"}',
    '{"big": 123456789012345678901234567890, "neg": -98765432109876543210, "f": 1.5}',
    '{"deep": ' + "[" * 900 + "]" * 900 + "}",
    '{"precise": 0.30000000000000004, "tiny": 5e-324, "ctl": "a\\u0001\\"b\\\\\\n"}',
]


@pytest.mark.parametrize("stored", STORED)
def test_decode_reads_utf8_bytes_as_json_loads_reads_the_text(stored: str) -> None:
    as_text = json.loads(stored)
    assert decode(stored.encode()) == as_text
    assert decode(json.dumps(as_text, ensure_ascii=False).encode()) == as_text


def test_streamed_payloads_decode_as_the_text_sqlalchemy_returns(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        ids = sample_aweme_ids(len(STORED), seed=7)
        with engine.begin() as conn:
            load_works(conn, [flatten(make_aweme_detail(i, seed=7, sim_t=0.0), AT) for i in ids])
            for i, (aweme_id, payload) in enumerate(zip(ids, STORED, strict=True)):
                conn.execute(
                    text(
                        "UPDATE raw_payloads SET payload = CAST(:p AS jsonb), "
                        "complete_fetched_at = :c_at, complete_payload = CAST(:c AS jsonb) "
                        "WHERE aweme_id = :id"
                    ),
                    {"id": aweme_id, "p": payload, "c_at": AT if i % 2 else None,
                     "c": STORED[0] if i % 2 else None},
                )  # fmt: skip
        query = _stored(_payloads(), stale_only=False)
        with engine.connect() as conn:
            expected = [tuple(row) for row in conn.execute(query)]
            streamed = [row for batch in _stream(conn, query, 3) for row in batch]
        assert [row[:2] for row in streamed] == [row[:2] for row in expected]
        assert all(isinstance(row[2], bytes) for row in streamed)
        for got, want in zip(streamed, expected, strict=True):
            assert decode(got[2]) == json.loads(want[2])
            assert got[3] == want[3]
            assert (got[4] is None) == (want[4] is None)
            if got[4] is not None:
                assert decode(got[4]) == json.loads(want[4])
    finally:
        engine.dispose()
