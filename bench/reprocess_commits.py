"""Works/s of `ingest reprocess` as the command runs it today, against the actual code of an
earlier commit, side by side on the same server with the same works.

`bench.reprocess_speed`'s first arm compares with `bench.reprocess_baseline`: the previous
reprocess *algorithm* calling *today's* loader, so every loader gain speeds both up. This arm
compares with what really ran then. Per commit:

- its `pipeline/`, `migrations/` and `alembic.ini` are extracted with `git archive` into a
  temporary directory (so the benchmark needs the repository's history: a shallow clone
  without the commit stops with a message saying so);
- its own database is migrated by its own migrations and filled by its own flattener and
  loader (`bench/reprocess_commit_load.py` run with `PYTHONPATH` = that tree) from the same
  generated payloads (one file of `aweme_detail`s, written once): the schemas differ between
  commits, so rows cannot be copied, and loading through each commit's code stores exactly
  what its `ingest` would have stored;
- `python -m pipeline reprocess --database-url …` runs in a subprocess with the same Python
  and `PYTHONPATH` = that tree (today's arm: the working tree, the same way).

Each repeat runs every arm once, order rotated between repeats; a ratio is the median of the
per-repeat ratios of wall seconds (the command's whole run, start-up included). Client CPU per
work is the command's own and its worker processes' (`wait4`), PostgreSQL CPU per work the
server's processes' over the run (`bench.common.postgres_cpu_s`).

    python -m bench.reprocess_commits --works 10000 --repeat 3 --commits 8b616fd 8f8a72a
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text

from bench.common import (
    Result,
    create_database,
    drop_database,
    median,
    pg_server,
    postgres_cpu_s,
    print_results,
    with_database,
)
from pipeline.testing.payloads import make_aweme_detail, sample_aweme_ids

ROOT = Path(__file__).resolve().parents[1]
LOADER = Path(__file__).resolve().with_name("reprocess_commit_load.py")
SEED = 5
# What each commit is, for the summary table (a commit not listed is named by its hash only).
COMMITS = {
    "8b616fd": "main when issue 14 was filed (audit 2026-11-30: 503 works/s)",
    "8f8a72a": "last main before the issue-14 work began",
}
DEFAULT_COMMITS = ["8b616fd"]
TODAY = "today"
_DONE = re.compile(r"reprocessed (\d+) payloads")


@dataclass(frozen=True, slots=True)
class Tree:
    """A `pipeline` to run: a commit's extracted tree, or the working tree (today)."""

    name: str  # TODAY or a commit
    path: Path
    database: str


@dataclass(frozen=True, slots=True)
class Run:
    seconds: float
    client_cpu_s: float
    postgres_cpu_s: float | None


def extract(commit: str, dest: Path) -> Path:
    """`git archive` of the commit's code and migrations into `dest`."""
    verify = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    )
    if verify.returncode != 0:
        raise SystemExit(
            f"bench.reprocess_commits: commit {commit} is not in {ROOT}'s git history (a "
            "shallow clone or an export?). Fetch it (git fetch --unshallow) or pick other "
            "commits with --commits."
        )
    dest.mkdir(parents=True)
    archive = subprocess.Popen(
        ["git", "-C", str(ROOT), "archive", commit, "pipeline", "migrations", "alembic.ini"],
        stdout=subprocess.PIPE,
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise SystemExit(f"bench.reprocess_commits: git archive {commit} failed")
    return dest


def write_payloads(path: Path, n: int) -> None:
    """The works every tree loads: one generated `aweme_detail` per line."""
    with path.open("w", encoding="utf-8") as out:
        for aweme_id in sample_aweme_ids(n, seed=SEED):
            detail = make_aweme_detail(aweme_id, seed=SEED, sim_t=0.0)
            out.write(json.dumps(detail, ensure_ascii=False) + "\n")


def _env(tree: Path) -> dict[str, str]:
    # Nothing from the caller's configuration reaches the command but the URL it is given.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DOUYIN_", "INGEST_")) and k != "DATABASE_URL"
    }
    env["PYTHONPATH"] = str(tree)
    return env


def load(tree: Tree, server_url: str, payloads: Path) -> float:
    """Seconds the tree's loader spent storing the works into its own fresh database."""
    create_database(server_url, tree.database, template="template0").dispose()  # empty
    out = subprocess.run(
        [sys.executable, str(LOADER), with_database(server_url, tree.database), str(payloads),
         str(tree.path)],
        cwd=tree.path, env=_env(tree.path), capture_output=True, text=True, check=False,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"loading with {tree.name} failed: {out.stderr[-2000:]}")
    return float(out.stdout.strip().splitlines()[-1])


def stored(server_url: str, tree: Tree) -> tuple[int, int]:
    """(payloads, characters of their JSON text): the same works went into every database."""
    engine = create_engine(with_database(server_url, tree.database))
    try:
        with engine.connect() as conn:
            count, size = conn.execute(
                text("SELECT count(*), coalesce(sum(length(payload::text)), 0) FROM raw_payloads")
            ).one()
        return int(count), int(size)
    finally:
        engine.dispose()


def reprocess(tree: Tree, server_url: str, n: int, log: Path) -> Run:
    """One `python -m pipeline reprocess` of the tree on its database, as a user runs it
    (cwd = the tree, so `-m` finds that tree's `pipeline`, not the working tree's)."""
    cmd = [sys.executable, "-m", "pipeline", "reprocess", "--database-url",
           with_database(server_url, tree.database)]  # fmt: skip
    with log.open("w") as out:
        pg_before = postgres_cpu_s(server_url)
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tree.path, env=_env(tree.path), stdout=out, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)  # its pool workers are waited for: included
        seconds = time.perf_counter() - start
        pg_after = postgres_cpu_s(server_url)
    proc.returncode = os.waitstatus_to_exitcode(status)
    output = log.read_text()
    done = _DONE.search(output)
    if proc.returncode != 0 or done is None or int(done.group(1)) != n:
        raise RuntimeError(f"reprocess of {tree.name} exited {proc.returncode}: {output[-2000:]}")
    pg = None if pg_before is None or pg_after is None else pg_after - pg_before
    return Run(seconds, usage.ru_utime + usage.ru_stime, pg)


def _per_work_ms(values: list[float | None], n: int) -> str:
    known = [v for v in values if v is not None]
    return f"{median(known) * 1000 / n:.2f}" if known else "?"


def run(server_url: str, n: int, repeat: int, commits: list[str]) -> list[Result]:
    print(f"load average {os.getloadavg()[0]:.2f}; commits {' '.join(commits)} vs today")
    with tempfile.TemporaryDirectory(prefix="bench-reprocess-commits-") as tmp:
        work = Path(tmp)
        trees = [Tree(TODAY, ROOT, "bench_reprocess_today")] + [
            Tree(c, extract(c, work / c), f"bench_reprocess_{c}") for c in commits
        ]
        payloads = work / "payloads.jsonl"
        write_payloads(payloads, n)
        try:
            for tree in trees:
                seconds = load(tree, server_url, payloads)
                count, size = stored(server_url, tree)
                if count != n:
                    raise RuntimeError(f"{tree.name} stored {count} payloads, not {n}")
                print(
                    f"{tree.name}: loaded {n:,} works at {n / seconds:,.0f} works/s "
                    f"(its own loader); raw payloads {size / n:,.0f} characters each"
                )
            runs: dict[str, list[Run]] = {tree.name: [] for tree in trees}
            for i in range(repeat):
                order = trees[i % len(trees) :] + trees[: i % len(trees)]
                for tree in order:
                    runs[tree.name].append(reprocess(tree, server_url, n, work / "out.log"))
                print(f"run {i + 1}: " + ", ".join(
                    f"{t.name} {n / runs[t.name][-1].seconds:,.0f} works/s" for t in order
                ))  # fmt: skip
        finally:
            for tree in trees:
                drop_database(server_url, tree.database)
    print(f"load average {os.getloadavg()[0]:.2f}")
    today = runs[TODAY]
    results = []
    for commit in commits:
        old = runs[commit]
        ratio = median([o.seconds / t.seconds for o, t in zip(old, today, strict=True)])
        detail = (
            f"{n / median([r.seconds for r in today]):,.0f} vs "
            f"{n / median([r.seconds for r in old]):,.0f} works/s; client CPU "
            f"{_per_work_ms([r.client_cpu_s for r in today], n)} vs "
            f"{_per_work_ms([r.client_cpu_s for r in old], n)} ms/work; PostgreSQL "
            f"{_per_work_ms([r.postgres_cpu_s for r in today], n)} vs "
            f"{_per_work_ms([r.postgres_cpu_s for r in old], n)} ms/work"
        )
        role = COMMITS.get(commit, "")
        print(f"-> today {ratio:.2f}x {commit} {role}: {detail}")
        results.append(
            Result(
                "reprocess",
                f"`ingest reprocess` {n:,} works: today / {commit}'s own code",
                ratio,
                f"{detail} ({commit}: {role})" if role else detail,
            )
        )
    return results


def main(argv: list[str] | None = None) -> list[Result]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--works", type=int, default=5_000, help="works stored, then reprocessed")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per tree")
    parser.add_argument(
        "--commits", nargs="+", default=DEFAULT_COMMITS, help="earlier commits to run"
    )
    args = parser.parse_args(argv)
    with pg_server() as server_url:
        return run(server_url, args.works, args.repeat, args.commits)


if __name__ == "__main__":
    print_results(main())
