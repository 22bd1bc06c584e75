"""A whole run against a service that sends hostile answers for some links: every good link is
loaded, every bad one is `failed` with its reason, the run ends `partial` (exit 2), and no
payload stops it. The service is a small aiohttp app built from the real payload templates."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable
from io import BytesIO

from aiohttp import web
from sqlalchemy import create_engine, text

from helpers import serving
from pipeline.cli import EXIT_SOME_FAILED, exit_code_for
from pipeline.config import FetchSettings, Settings
from pipeline.ingest import IngestJob, InputSource
from pipeline.testing.payloads import make_detail_data, sample_aweme_ids

SEED = 5
IDS = sample_aweme_ids(16, seed=SEED)


def _good(aweme_id: int) -> bytes:
    data = make_detail_data(aweme_id, seed=SEED, sim_t=0.0)
    envelope = {"code": 200, "message": "success", "data": data}
    return json.dumps(envelope, ensure_ascii=False).encode()


def _digg(literal: str) -> Callable[[int], bytes]:
    def body(aweme_id: int) -> bytes:
        good = _good(aweme_id).decode()
        start = good.index('"digg_count": ') + len('"digg_count": ')
        end = start
        while good[end] not in ",}":
            end += 1
        return (good[:start] + literal + good[end:]).encode()

    return body


HOSTILE: dict[int, tuple[Callable[[int], bytes], str]] = {
    IDS[0]: (_digg("NaN"), "upstream body is not valid JSON: NaN is not allowed"),
    IDS[1]: (_digg("Infinity"), "upstream body is not valid JSON: Infinity is not allowed"),
    IDS[2]: (_digg("1e400"), "upstream body is not valid JSON: number out of range (1e400)"),
    IDS[3]: (_digg("9" * 5000), "upstream body is not valid JSON: integer outside 64 bits"),
    IDS[4]: (
        _digg("[" * 10_000 + "]" * 10_000),
        "upstream body is not valid JSON: nested deeper than 64 levels",
    ),
    IDS[5]: (
        lambda i: _good(i).decode().encode("gbk", errors="ignore"),
        "upstream body is not valid JSON: not UTF-8",
    ),
    IDS[6]: (
        lambda i: _good(IDS[15]),  # another work's payload
        f"service answered with a different work (asked {IDS[6]}, got {IDS[15]})",
    ),
}
# Accepted: NUL and a lone surrogate in the caption.
ODD_TEXT = IDS[7]


async def _service(request: web.Request) -> web.Response:
    aweme_id = int(request.query["url"].rstrip("/").rsplit("/", 1)[1])
    if aweme_id in HOSTILE:
        return web.Response(body=HOSTILE[aweme_id][0](aweme_id))
    if aweme_id == ODD_TEXT:
        body = _good(aweme_id).replace(b'"desc": "', b'"desc": "nul\\u0000 lone\\ud83d ', 1)
        return web.Response(body=body)
    return web.Response(body=_good(aweme_id))


class NullReporter:
    def update(self, counts: Counter[str]) -> None:
        pass


async def _run(db_url: str) -> tuple[str, Counter[str]]:
    app = web.Application()
    app.router.add_get("/douyin/fetch_one_work", _service)
    engine = create_engine(db_url)
    try:
        async with serving(app) as base:
            settings = Settings(
                fetch=FetchSettings(api_base=base, rate=1000, concurrency=4),
                batch_seconds=0.1,
                batch_size=5,
            )
            lines = "".join(f"{i}\n" for i in IDS[:15]).encode()
            source = InputSource("in", BytesIO(lines))
            job = IngestJob(settings, engine, NullReporter(), [source])
            summary = await asyncio.wait_for(job.run(), timeout=60)
            return summary.status, summary.counts
    finally:
        engine.dispose()


def test_hostile_payloads_fail_their_link_and_nothing_else(db_url: str) -> None:
    status, counts = asyncio.run(_run(db_url))
    assert status == "partial"
    assert counts["loaded"] == 15 - len(HOSTILE)
    assert counts["failed"] == len(HOSTILE)
    assert counts["failed_temporary"] == 0
    assert exit_code_for(status, counts) == EXIT_SOME_FAILED
    engine = create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text("SELECT aweme_id, last_outcome, last_reason FROM share_links")
            ).all()
            stored = set(conn.execute(text("SELECT aweme_id FROM works")).scalars())
            desc = conn.execute(
                text("SELECT description FROM works WHERE aweme_id = :i"), {"i": ODD_TEXT}
            ).scalar_one()
    finally:
        engine.dispose()
    by_id = {r.aweme_id: r for r in rows}
    for aweme_id, (_, reason) in HOSTILE.items():
        assert by_id[aweme_id].last_outcome == "failed"
        assert by_id[aweme_id].last_reason.startswith(reason)
    assert stored == set(IDS[:15]) - set(HOSTILE)  # not IDS[15]: B's payload was not stored
    # Loaded, with the text cleaned (how NUL and the lone surrogate are replaced is the loader's
    # business): nothing PostgreSQL TEXT cannot hold.
    assert desc.startswith("nul")
    assert "\x00" not in desc
    desc.encode("utf-8")
