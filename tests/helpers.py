"""Helpers shared by the end-to-end tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Mapping, Sequence

from aiohttp import web
from sqlalchemy import Connection

from pipeline.db.load import LoadResult, load_works
from pipeline.db.state import mark_fetched
from pipeline.flatten import FlatWork
from pipeline.testing.fake_upstream import FakeUpstream


class ThreadedFake:
    """The fake upstream on 127.0.0.1, served from its own event loop in a background thread,
    so tests can run the real `ingest` command in a subprocess against it."""

    def __init__(self, **kwargs: object) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

        async def start() -> tuple[FakeUpstream, str]:
            fake = FakeUpstream(**kwargs)  # type: ignore[arg-type]
            return fake, await fake.start()

        self.fake, self.url = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.fake.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@contextlib.asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    """A small aiohttp app of a test's own on 127.0.0.1, at a free port; yields its base URL."""
    runner = web.AppRunner(app, shutdown_timeout=0.2)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    try:
        yield f"http://{host}:{port}"
    finally:
        await runner.cleanup()


def ingest_command() -> list[str]:
    return [sys.executable, "-m", "pipeline"]


def run_ingest(
    args: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """The real command in a subprocess: what a user runs, exit code and all."""
    full_env = {
        k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "DOUYIN_API_TOKEN")
    }
    full_env.update(env or {})
    return subprocess.run(
        [*ingest_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        check=False,
    )


def load_fetched(conn: Connection, works: Sequence[FlatWork]) -> LoadResult:
    """What a run does with the works it fetched: merge their content, then record the fetch
    (check time, schedule, available again) as work state."""
    result = load_works(conn, works)
    mark_fetched(conn, works)
    return result
