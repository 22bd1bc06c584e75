"""The fake upstream (seed style) with its OK bodies rendered before timing, in a process of its
own: the upstream a client's own costs are measured against.

The bundled fake builds and serialises every payload per request (~1.6 ms of CPU), which caps any
client near 600 requests/s on 2 cores, so it would measure the fake. Here `--templates` real
payloads (`make_detail_data`, ~27 KB each) are rendered once; the answer for work X is template
`X % K` with the template's id replaced by X (9 places: ids, share URL), a `bytes.replace` of
~10 µs. Every work is thus distinct by id and answers exactly like the bundled fake would for a
work with that template's author, music and text.

    python -m bench.prerendered_fake --templates 256     # prints its base URL, serves until EOF
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from pipeline.testing import payloads
from pipeline.testing.fake_upstream import FakeUpstream, _Answer, _json

SEED = 0


class PrerenderedFake(FakeUpstream):
    def __init__(self, templates: int, **kwargs: Any) -> None:
        super().__init__(seed=SEED, style="seed", **kwargs)
        ids = payloads.sample_aweme_ids(templates, seed=SEED + 1)
        self._templates = []
        for aweme_id in ids:
            data = payloads.make_detail_data(aweme_id, seed=SEED, sim_t=0.0)
            body = _json({"code": 0, "message": "success", "data": data})
            self._templates.append((str(aweme_id).encode(), body))

    def _work(self, style: str, aweme_id: int, path: str) -> _Answer:
        old_id, body = self._templates[aweme_id % len(self._templates)]
        return _Answer(200, body.replace(old_id, str(aweme_id).encode()), "ok", aweme_id)


async def _serve(templates: int) -> None:
    async with PrerenderedFake(templates) as fake:
        base = await fake.start()
        print(base, flush=True)
        # Serve until the parent closes our stdin (or kills us).
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--templates", type=int, default=256, help="distinct payloads rendered")
    args = parser.parse_args()
    asyncio.run(_serve(args.templates))


if __name__ == "__main__":
    main()
