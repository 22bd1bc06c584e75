"""Every hostile answer kind, one run per API style with a few links of each kind mixed among
good links, through the real `ingest` command. Each kind has its own test id, so a failure
names the kind. The 1,000-link run is in test_hostile_thousand.py.

One run per style (a module fixture) keeps this fast: the subprocess, the database and the
fake are shared by the assertions, which only read what the run left behind.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hostile_corpus import (
    EXPECT,
    fetch_args,
    fresh_database,
    kinds_for,
    link_for,
    query,
    reason_matches,
)
from sqlalchemy import Engine

from helpers import ThreadedFake, run_ingest
from pipeline.inputs import parse_line
from pipeline.testing.fake_upstream import FaultConfig, ServedRequest
from pipeline.testing.hostile import Hostile, other_work_id
from pipeline.testing.payloads import sample_aweme_ids

pytestmark = pytest.mark.slow

PER_KIND = 2  # one id link and one short link (id links only for identity kinds)
GOOD = 20
STYLES = ("seed", "amagi")
CASES = [(style, kind) for style in STYLES for kind in kinds_for(style)]


@dataclass
class CorpusRun:
    style: str
    fake: ThreadedFake
    listener: ThreadedFake
    url: str  # the database
    key_kind: dict[str, Hostile | None]  # link_key -> hostile kind (None: a good link)
    key_id: dict[str, int]  # link_key -> the work the input line names
    first: Any  # CompletedProcess of the first run
    links: dict[str, Any]  # share_links rows after the first run, by link_key
    served_first: list[ServedRequest]
    rerun: Any
    served_rerun: list[ServedRequest]
    forced: Any
    served_forced: list[ServedRequest]

    def keys_of(self, kind: Hostile | None) -> list[str]:
        return [k for k, v in self.key_kind.items() if v == kind]


def _corpus_run(
    style: str, tmp: Path, admin_engine: Engine, server_url: str
) -> Iterator[CorpusRun]:
    seed = 11 if style == "seed" else 12
    kinds = kinds_for(style)
    ids = sample_aweme_ids(GOOD + PER_KIND * len(kinds), seed=seed)
    good_ids, bad_ids = ids[:GOOD], ids[GOOD:]
    hostile = {aweme_id: kinds[i // PER_KIND] for i, aweme_id in enumerate(bad_ids)}
    # The works that gone answers name instead are good links of the same run: they must load
    # and stay loaded, whatever the answer for the other link said.
    good_ids += [
        other_work_id(i, seed=seed) for i, k in hostile.items() if k is Hostile.GONE_OTHER_WORK
    ]

    listener = ThreadedFake(seed=seed)
    fake = ThreadedFake(
        seed=seed, faults=FaultConfig(hostile=hostile, redirect_target=listener.url)
    )
    try:
        lines: list[str] = []
        key_kind: dict[str, Hostile | None] = {}
        key_id: dict[str, int] = {}
        for n, aweme_id in enumerate(good_ids + bad_ids):
            kind = hostile.get(aweme_id)
            line = (
                link_for(kind, aweme_id, fake, n)
                if kind
                else fake.fake.short_link(aweme_id)
                if n % 3 == 0
                else str(aweme_id)
            )
            (link,), _ = parse_line(line)
            key_kind[link.key], key_id[link.key] = kind, aweme_id
            lines.append(line)
        path = tmp / f"{style}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        with fresh_database(admin_engine, server_url, style) as url:
            # amagi resolves short links itself: a resolve base with a path prefix shows that a
            # `..` in a redirect cannot climb out of it.
            resolve = fake.url + "/sl" if style == "amagi" else fake.url
            args = ["run", str(path), *fetch_args(fake, style, "--retries", "1", "--timeout", "10"),
                    "--resolve-base", resolve]  # fmt: skip
            env = {"DATABASE_URL": url}
            first = run_ingest(args, env=env, timeout=240)
            links = {r.link_key: r for r in query(url, "SELECT * FROM share_links")}
            served_first = list(fake.fake.served)
            rerun = run_ingest(args, env=env, timeout=240)
            served_rerun = fake.fake.served[len(served_first) :]
            forced = run_ingest([*args, "--force"], env=env, timeout=240)
            served_forced = fake.fake.served[len(served_first) + len(served_rerun) :]
            yield CorpusRun(
                style, fake, listener, url, key_kind, key_id, first, links, served_first,
                rerun, served_rerun, forced, served_forced,
            )  # fmt: skip
    finally:
        fake.close()
        listener.close()


@pytest.fixture(scope="module")
def seed_run(
    tmp_path_factory: pytest.TempPathFactory, admin_engine: Engine, pg_server_url: str,
    template_url: str,
) -> Iterator[CorpusRun]:  # fmt: skip
    yield from _corpus_run("seed", tmp_path_factory.mktemp("seed"), admin_engine, pg_server_url)


@pytest.fixture(scope="module")
def amagi_run(
    tmp_path_factory: pytest.TempPathFactory, admin_engine: Engine, pg_server_url: str,
    template_url: str,
) -> Iterator[CorpusRun]:  # fmt: skip
    yield from _corpus_run("amagi", tmp_path_factory.mktemp("amagi"), admin_engine, pg_server_url)


@pytest.fixture(params=STYLES)
def corpus(request: pytest.FixtureRequest) -> CorpusRun:
    run: CorpusRun = request.getfixturevalue(f"{request.param}_run")
    return run


def _run_of(request: pytest.FixtureRequest, style: str) -> CorpusRun:
    run: CorpusRun = request.getfixturevalue(f"{style}_run")
    return run


# -- per kind -------------------------------------------------------------------------------


@pytest.mark.parametrize(("style", "kind"), CASES, ids=[f"{s}-{k}" for s, k in CASES])
def test_each_hostile_link_ends_with_its_outcome_and_reason(
    request: pytest.FixtureRequest, style: str, kind: Hostile
) -> None:
    run = _run_of(request, style)
    expect = EXPECT[kind]
    keys = run.keys_of(kind)
    assert len(keys) == PER_KIND
    for key in keys:
        row = run.links.get(key)
        assert row is not None, f"{kind}: link {key} has no share_links row"
        assert row.last_outcome == expect.outcome, (kind, key, row.last_outcome, row.last_reason)
        assert reason_matches(expect, row.last_reason), (kind, key, row.last_reason)


@pytest.mark.parametrize(
    ("style", "kind"),
    [(s, k) for s, k in CASES if EXPECT[k].outcome == "failed"],
    ids=[f"{s}-{k}" for s, k in CASES if EXPECT[k].outcome == "failed"],
)
def test_each_permanent_failure_is_not_retried(
    request: pytest.FixtureRequest, style: str, kind: Hostile
) -> None:
    """`--retries 1` was given: a second request for the same work means the answer was taken
    for a temporary problem."""
    run = _run_of(request, style)
    for key in run.keys_of(kind):
        aweme_id = run.key_id[key]
        asked = [r for r in run.served_first if r.aweme_id == aweme_id and r.style != "short_link"]
        assert len(asked) == 1, (kind, key, [r.outcome for r in asked])


# -- the run as a whole ---------------------------------------------------------------------


def test_run_finishes_with_exit_2_and_closes_its_record(corpus: CorpusRun) -> None:
    first = corpus.first
    assert first.returncode == 2, first.stdout + first.stderr
    assert "Traceback" not in first.stderr + first.stdout
    (run,) = query(corpus.url, "SELECT * FROM ingest_runs ORDER BY run_id LIMIT 1")
    assert run.status == "partial"
    assert run.finished_at is not None
    failed = sum(1 for k in corpus.key_kind.values() if k and EXPECT[k].outcome == "failed")
    invalid = sum(1 for k in corpus.key_kind.values() if k and EXPECT[k].outcome == "invalid")
    assert run.counts.get("failed", 0) == failed
    assert run.counts.get("invalid", 0) == invalid
    assert run.counts.get("failed_temporary", 0) == 0


def test_every_good_link_loads(corpus: CorpusRun) -> None:
    good = corpus.keys_of(None)
    outcomes = {k: corpus.links[k].last_outcome if k in corpus.links else None for k in good}
    assert outcomes == dict.fromkeys(good, "loaded")
    ids = {corpus.key_id[k] for k in good}
    (works,) = query(
        corpus.url, "SELECT count(*) AS n FROM works WHERE aweme_id = ANY(:ids)", ids=list(ids)
    )
    assert works.n == len(ids)


def test_every_line_has_a_row(corpus: CorpusRun) -> None:
    assert set(corpus.key_kind) <= set(corpus.links)


def test_rerun_sends_no_request_for_any_link(corpus: CorpusRun) -> None:
    assert corpus.rerun.returncode in (0, 2), corpus.rerun.stderr
    assert "Traceback" not in corpus.rerun.stderr
    assert [(r.path, r.aweme_id, r.outcome) for r in corpus.served_rerun] == []


def test_force_fetches_the_hostile_links_again(corpus: CorpusRun) -> None:
    assert corpus.forced.returncode == 2, corpus.forced.stderr
    assert "Traceback" not in corpus.forced.stderr
    asked = {r.aweme_id for r in corpus.served_forced}
    hostile_ids = {corpus.key_id[k] for k, kind in corpus.key_kind.items() if kind is not None}
    assert hostile_ids <= asked
    rows = {r.link_key: r for r in query(corpus.url, "SELECT * FROM share_links")}
    assert {k: r.last_outcome for k, r in rows.items() if k in corpus.links} == {
        k: r.last_outcome for k, r in corpus.links.items()
    }


# -- what must never happen -----------------------------------------------------------------


def test_no_request_reaches_the_listener_on_another_port(corpus: CorpusRun) -> None:
    """Redirects to another local service (with the request, and any token, attached)."""
    assert corpus.listener.fake.served == []


def test_a_payload_of_another_work_stores_nothing_of_it(corpus: CorpusRun) -> None:
    seed = 11 if corpus.style == "seed" else 12
    strangers = [
        other_work_id(corpus.key_id[k], seed=seed)
        for k in corpus.keys_of(Hostile.OTHER_WORK) + corpus.keys_of(Hostile.REDIRECT_OTHER_WORK)
    ]
    rows = query(
        corpus.url,
        "SELECT aweme_id FROM works WHERE aweme_id = ANY(:ids) "
        "UNION ALL SELECT aweme_id FROM raw_payloads WHERE aweme_id = ANY(:ids) "
        "UNION ALL SELECT aweme_id FROM share_links WHERE aweme_id = ANY(:ids)",
        ids=strangers,
    )
    assert rows == []


def test_a_gone_answer_naming_another_work_leaves_that_work_alone(seed_run: CorpusRun) -> None:
    named = [
        other_work_id(seed_run.key_id[k], seed=11)
        for k in seed_run.keys_of(Hostile.GONE_OTHER_WORK)
    ]
    rows = query(
        seed_run.url,
        "SELECT w.aweme_id, w.gone_at, s.last_outcome FROM works w "
        "JOIN share_links s ON s.aweme_id = w.aweme_id WHERE w.aweme_id = ANY(:ids)",
        ids=named,
    )
    assert len(rows) == len(named)
    assert all(r.last_outcome == "loaded" and r.gone_at is None for r in rows), rows


def test_dot_segments_in_a_redirect_stay_under_the_resolve_base_path(amagi_run: CorpusRun) -> None:
    short = [r.path for r in amagi_run.served_first if r.style == "short_link"]
    assert short, "no short link was resolved"
    assert [p for p in short if not p.startswith("/sl/")] == []


_NOT_STORABLE = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL text cannot hold them
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def _texts(corpus: CorpusRun, kinds: tuple[Hostile, ...]) -> tuple[list[int], list[str]]:
    """(work ids, every stored text of those works: description, nickname, music, hashtags)."""
    ids = [corpus.key_id[k] for kind in kinds for k in corpus.keys_of(kind)]
    rows = query(
        corpus.url,
        "SELECT w.description AS txt FROM works w WHERE w.aweme_id = ANY(:ids) "
        "UNION ALL SELECT a.nickname FROM works w JOIN authors a ON a.uid = w.author_uid "
        "  WHERE w.aweme_id = ANY(:ids) "
        "UNION ALL SELECT m.title FROM works w JOIN music m ON m.music_id = w.music_id "
        "  WHERE w.aweme_id = ANY(:ids) "
        "UNION ALL SELECT 'tag:' || hashtag_name FROM work_hashtags WHERE aweme_id = ANY(:ids)",
        ids=ids,
    )
    return ids, [r.txt for r in rows if r.txt]


def test_nul_and_lone_surrogates_are_cleaned_not_fatal(corpus: CorpusRun) -> None:
    ids, texts = _texts(corpus, (Hostile.NUL_CHARS, Hostile.LONE_SURROGATES))
    assert [t for t in texts if _NOT_STORABLE.search(t)] == []
    assert sum("坏" in t for t in texts) == len(ids)  # every spoiled description did load
    assert any(t.startswith("tag:") for t in texts)
    (raw,) = query(
        corpus.url, "SELECT count(*) AS n FROM raw_payloads WHERE aweme_id = ANY(:ids)", ids=ids
    )
    assert raw.n == len(ids)


def test_control_characters_never_reach_hashtag_names(corpus: CorpusRun) -> None:
    """ESC and friends in a hashtag would split one tag into look-alikes and can drive a
    terminal; a description may keep its newlines."""
    _, texts = _texts(corpus, (Hostile.CONTROL_CHARS,))
    tags = [t for t in texts if t.startswith("tag:")]
    assert tags
    assert [t for t in tags if _CONTROL.search(t)] == []
