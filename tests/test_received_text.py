"""A body's text as received (`received_text`) becomes, in PostgreSQL, exactly the JSONB that
the decoded detail encoded again (`json_text`) becomes: NUL and lone surrogate escapes, escaped
backslashes, surrogate pairs, number spellings, a BOM. Where it could not, it says so (None)
and the loader encodes the decoded value instead."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, text

from pipeline.douyin import json_text, received_text
from pipeline.inputs import canonical_link
from pipeline.run import outcome_record
from pipeline.upstream.contracts import DETAIL_PATH, SeedContract
from pipeline.upstream.decode import Reading, read_body
from pipeline.upstream.outcomes import FetchResult, Outcome

SAME = text(
    "SELECT (CAST(:received AS jsonb) #> CAST(:path AS text[]))::text,"
    " CAST(:encoded AS jsonb)::text"
)


def _envelope(detail_json: bytes) -> bytes:
    return b'{"code":0,"message":"ok","data":{"aweme_detail":' + detail_json + b',"x":1}}'


def _both(db: Connection, body: bytes) -> tuple[str, str] | None:
    """(stored from the received text, stored from the decoded detail), or None when the
    received text is not offered."""
    doc, reading = read_body(body)
    assert isinstance(doc, dict), doc
    received = received_text(body, reading)
    if received is None:
        return None
    params = {
        "received": received,
        "path": list(DETAIL_PATH),
        "encoded": json_text(doc["data"]["aweme_detail"]),
    }
    row = db.execute(SAME, params).one()
    return row[0], row[1]


LITERALS = [
    r'"a\u0000b"',
    r'"a\\u0000b"',  # a backslash, then "u0000": no NUL
    r'"a\\\u0000b"',  # a backslash, then a NUL
    r'"\\\\u0000"',
    r'"\ud83d\ude00 and \uD83D\uDE00"',  # pairs, both cases
    r'"\ud83d"',
    r'"\udc00\ud83d\ud83d\ude00"',  # lone low, lone high, then a pair
    r'"\\ud83d"',  # a backslash, then "ud83d": no surrogate
    r'"\u00e9\/\n\t\"\\"',
    r'"1.50, 2E2"',  # number lookalikes in a string
    "1.5",
    "30.2592444",
    "-0",
    "-0.0",
    "1.0",
    "18446744073709551615",
    "-9223372036854775808",
    "[0.1, 2.50, 1e2]",
    "[1.0e+2]",
    "5e-324",
]


def test_every_literal_stores_as_the_decoded_value(db: Connection) -> None:
    offered = 0
    for literal in LITERALS:
        for key in ("k", "k\\u0000", "k\\ud800"):
            body = _envelope(f'{{"aweme_id":"1","{key}":{literal}}}'.encode())
            both = _both(db, body)
            if both is not None:
                offered += 1
                assert both[0] == both[1], literal
    assert offered >= len(LITERALS)  # most go the fast way: the test exercises it


def test_a_bom_and_pretty_printing_are_fine(db: Connection) -> None:
    detail = {"aweme_id": "1", "desc": "日落🌄\x00", "n": [1, -2, None, True]}
    pretty = json.dumps({"code": 0, "data": {"aweme_detail": detail}}, indent=2).encode()
    both = _both(db, b"\xef\xbb\xbf" + pretty)
    assert both is not None
    assert both[0] == both[1]


def test_floats_and_lenient_bodies_take_the_decoded_way() -> None:
    for body in (
        _envelope(b'{"aweme_id":"1","n":2.50}'),  # orjson writes 2.5
        _envelope(b'{"aweme_id":"1","n":1E2}'),
        _envelope(b'{"aweme_id":"1","n":2.5}'),  # any float: its spelling is not checked
        _envelope(b'{"aweme_id":"1","s":"raw\ttab"}'),  # raw control character: lenient
        _envelope(b'{"aweme_id":"1","s":"\\ud83d"}'),  # lone surrogate: orjson refuses it
    ):
        doc, reading = read_body(body)
        assert isinstance(doc, dict)
        assert received_text(body, reading) is None
        assert reading is Reading.LENIENT or reading is Reading.FLOATS


def test_the_contract_offers_the_received_text_for_ok_only() -> None:
    ok = SeedContract().classify(200, _envelope(b'{"aweme_id":"7"}'), {})
    assert ok.outcome is Outcome.OK
    assert ok.payload is not None
    assert ok.payload.path == DETAIL_PATH
    failed = SeedContract().classify(200, b'{"code":503,"message":"x","data":null}', {})
    assert failed.payload is None


_TEXT = st.text(
    st.characters(codec=None, exclude_categories=()) | st.sampled_from(["\x00", "\ud800", "\\"])
)
_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=12,
)


# The fixture's transaction is only read from: sharing it between examples is harmless.
@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(value=st.dictionaries(_TEXT, _VALUES, max_size=5), ascii_only=st.booleans())
def test_any_value_stores_alike_either_way(db: Connection, value: Any, ascii_only: bool) -> None:
    value["aweme_id"] = "1"
    detail = json.dumps(value, ensure_ascii=ascii_only)
    try:
        body = _envelope(detail.encode())
    except UnicodeEncodeError:  # a lone surrogate written raw: not UTF-8, never received
        return
    both = _both(db, body)
    if both is not None:
        assert both[0] == both[1]


def test_ingest_hands_the_received_text_to_the_loader() -> None:
    """`outcome_record` (what `ingest` runs per link) keeps the body's text for raw_payloads,
    not the decoded detail; without a text it keeps the detail."""
    body = _envelope(b'{"aweme_id":"7071967230287744267","desc":"a\\u0000b"}')
    c = SeedContract().classify(200, body, {})
    assert c.payload is not None
    assert c.detail is not None
    link = canonical_link(7071967230287744267)
    at = datetime(2026, 11, 1, tzinfo=UTC)
    ok = FetchResult(Outcome.OK, c.detail, link.aweme_id, "", 1, 200, payload=c.payload)
    work = outcome_record(link, "test", ok, at).work
    assert work is not None
    assert work.raw is c.payload
    assert '"a\\ufffdb"' in c.payload.text
    decoded = FetchResult(Outcome.OK, c.detail, link.aweme_id, "", 1, 200)
    work = outcome_record(link, "test", decoded, at).work
    assert work is not None
    assert work.raw is c.detail
