"""The two peers of the real-peer tier: the real amagi server (a Node process) and the Douyin
stand-in it talks to (an aiohttp app on its own event loop in a background thread)."""

from __future__ import annotations

import asyncio
import collections
import queue
import shutil
import socket
import subprocess
import threading
from pathlib import Path

from douyin_standin import DouyinStandIn

HERE = Path(__file__).resolve().parent
LAUNCHER = HERE / "server.mjs"
AMAGI_PACKAGE = HERE / "node_modules" / "@ikenxuan" / "amagi" / "package.json"
READY = "AMAGI_LISTENING "
START_TIMEOUT_S = 60.0
SEED = 11  # of the fake payloads the stand-in serves; a fake compared with it uses the same


class ThreadedStandIn:
    """The Douyin stand-in, served from its own event loop so subprocesses can reach it."""

    def __init__(self, **kwargs: float) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

        async def start() -> tuple[DouyinStandIn, str]:
            standin = DouyinStandIn(**kwargs)  # type: ignore[arg-type]
            return standin, await standin.start()

        self.douyin, self.url = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.douyin.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


def refusing_address() -> tuple[socket.socket, str]:
    """A 127.0.0.1 base URL where every connection is refused: a socket bound to the port and
    never listening. Holding it keeps anything else from taking the port; close it when done."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock, f"http://127.0.0.1:{sock.getsockname()[1]}"


class AmagiServer:
    """`node server.mjs DOUYIN_BASE`: the real amagi on a free 127.0.0.1 port.

    Its output (amagi's own log) is kept, the last lines in `log`, so a test can show what amagi
    saw. It exits when its stdin closes (`close()`), or with the test session at the latest."""

    def __init__(self, douyin_base: str) -> None:
        node = shutil.which("node")
        if node is None or not AMAGI_PACKAGE.is_file():
            raise RuntimeError(
                "the real-peer tier needs Node and tests/realpeer/node_modules: run `make test` "
                "(or `make realpeer`), which installs both"
            )
        self.log: collections.deque[str] = collections.deque(maxlen=2000)
        self._ready: queue.Queue[str] = queue.Queue()
        self.proc = subprocess.Popen(
            [node, str(LAUNCHER), douyin_base],
            cwd=HERE,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        try:
            port = int(self._ready.get(timeout=START_TIMEOUT_S))
        except (queue.Empty, ValueError):
            self.close()
            tail = "\n".join(list(self.log)[-40:])
            raise RuntimeError(f"amagi did not start; its output:\n{tail}") from None
        self.url = f"http://127.0.0.1:{port}"

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:  # drained to the end, so amagi never blocks on a full pipe
            line = line.rstrip("\n")
            self.log.append(line)
            if line.startswith(READY):
                self._ready.put(line.removeprefix(READY))
        self._ready.put("")  # exited: unblock a start still waiting

    def log_text(self) -> str:
        return "\n".join(self.log)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self._reader.join(10)
