"""What storing a raw payload costs PostgreSQL, by how the column is stored (migration 0010).

N generated payloads (`make_aweme_detail`, ~32 KB of JSON each) are inserted as JSONB, one
prepared statement per row in transactions of 200 (as the loader sends them), into three
otherwise identical tables, side by side, order rotated between repeats:

- `pglz`: the PostgreSQL default (`STORAGE EXTENDED`, pglz compression), what `raw_payloads`
  used before migration 0010;
- `uncompressed`: `STORAGE EXTERNAL` (out of line, not compressed), what migration 0010 picks
  on a server built without lz4 (the embedded `pgserver` one);
- `lz4`: `COMPRESSION lz4`, what it picks on a server with lz4 (skipped, and said so, without).

Reported: PostgreSQL CPU per payload (`bench.common.postgres_cpu_s`, embedded server only) and
the tables' size on disk per payload.

    python -m bench.raw_storage --works 2000 --repeat 3
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import orjson
from sqlalchemy import Engine, text

from bench.common import (
    Result,
    create_database,
    drop_database,
    median,
    pg_server,
    postgres_cpu_s,
    print_results,
)
from pipeline.testing.payloads import make_aweme_detail, sample_aweme_ids

DB = "bench_raw_storage"
BATCH = 200
SEED = 9
STORAGE = {
    "pglz": "ALTER TABLE {t} ALTER COLUMN payload SET STORAGE EXTENDED",
    "uncompressed": "ALTER TABLE {t} ALTER COLUMN payload SET STORAGE EXTERNAL",
    "lz4": "ALTER TABLE {t} ALTER COLUMN payload SET COMPRESSION lz4",
}


def has_lz4(engine: Engine) -> bool:
    with engine.connect() as conn:
        enumvals = conn.execute(
            text("SELECT enumvals FROM pg_settings WHERE name = 'default_toast_compression'")
        ).scalar()
    return "lz4" in (enumvals or ())


def insert_all(engine: Engine, table: str, payloads: list[str]) -> None:
    stmt = text(f"INSERT INTO {table} (id, payload) VALUES (:id, CAST(:payload AS jsonb))")
    for start in range(0, len(payloads), BATCH):
        rows = [
            {"id": start + i, "payload": p} for i, p in enumerate(payloads[start : start + BATCH])
        ]
        with engine.begin() as conn:
            conn.execute(stmt, rows)


def run(server_url: str, n: int, repeat: int) -> list[Result]:
    engine = create_database(server_url, DB)
    kinds = [k for k in STORAGE if k != "lz4" or has_lz4(engine)]
    if "lz4" not in kinds:
        print("this server is built without lz4: the lz4 arm is skipped")
    payloads = [
        orjson.dumps(make_aweme_detail(aweme_id, seed=SEED, sim_t=0.0)).decode()
        for aweme_id in sample_aweme_ids(n, seed=SEED)
    ]
    average = sum(map(len, payloads)) / n
    cpu: dict[str, list[float]] = defaultdict(list)
    size: dict[str, float] = {}
    try:
        for r in range(repeat):
            order = kinds[r % len(kinds) :] + kinds[: r % len(kinds)]
            for kind in order:
                table = f"raw_{kind}"
                with engine.begin() as conn:
                    conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
                    conn.execute(text(f"CREATE TABLE {table} (id int PRIMARY KEY, payload jsonb)"))
                    conn.execute(text(STORAGE[kind].format(t=table)))
                before = postgres_cpu_s(server_url)
                insert_all(engine, table, payloads)
                after = postgres_cpu_s(server_url)
                if before is not None and after is not None:
                    cpu[kind].append((after - before) * 1000 / n)
                with engine.connect() as conn:
                    size[kind] = (
                        conn.execute(text(f"SELECT pg_total_relation_size('{table}')")).scalar_one()
                        / n
                    )
                print(
                    f"run {r + 1}, {kind}: "
                    + (f"{cpu[kind][-1]:.3f} ms PostgreSQL CPU per payload, " if cpu[kind] else "")
                    + f"{size[kind] / 1024:.1f} KB on disk per payload",
                    flush=True,
                )
    finally:
        engine.dispose()
        drop_database(server_url, DB)
    results = []
    base = "pglz"
    for kind in kinds:
        detail = f"{size[kind] / 1024:.1f} KB/payload on disk (JSON text {average / 1024:.1f} KB)"
        if cpu[kind]:
            detail = f"{median(cpu[kind]):.3f} ms PostgreSQL CPU/payload, " + detail
        ratio = median(cpu[kind]) / median(cpu[base]) if cpu[kind] and cpu[base] else None
        results.append(
            Result("raw_storage", f"store a payload: {kind} / pglz, PostgreSQL CPU", ratio, detail)
        )
    return results


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--works", type=int, default=2000, help="payloads per arm")
    parser.add_argument("--repeat", type=int, default=3, help="runs per arm, order rotated")
    args = parser.parse_args(argv)
    with pg_server() as server_url:
        return run(server_url, args.works, args.repeat)


if __name__ == "__main__":
    print_results(main())
