"""docs/reliability.md names, for each promise, the tests that prove it: every test it names
must exist, and every hostile kind must be in its corpus table and in the expectations."""

from __future__ import annotations

import re
from pathlib import Path

from hostile_corpus import EXPECT, TEMPORARY

from pipeline.testing.hostile import Hostile

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reliability.md"
_REFERENCE = re.compile(r"`(tests/[\w/]+\.py)::(test_\w+)(?:\[[^\]]*\])?`")


def test_every_test_the_doc_names_exists() -> None:
    text = DOC.read_text("utf-8")
    references = _REFERENCE.findall(text)
    assert len(references) >= 30
    missing = []
    for path, name in references:
        source = ROOT / path
        found = source.is_file() and re.search(
            rf"^(async )?def {name}\(", source.read_text("utf-8"), re.M
        )
        if not found:
            missing.append(f"{path}::{name}")
    assert missing == []


def test_every_promise_row_names_at_least_one_test() -> None:
    rows = [ln for ln in DOC.read_text("utf-8").splitlines() if re.match(r"\| \d+ \|", ln)]
    assert len(rows) >= 10
    assert [r[:60] for r in rows if not _REFERENCE.search(r)] == []


def test_every_hostile_kind_is_documented_and_has_an_expectation() -> None:
    text = DOC.read_text("utf-8")
    undocumented = [k.value for k in Hostile if f"`{k.value}`" not in text]
    assert undocumented == []
    unexpected = set(Hostile) - set(EXPECT) - set(TEMPORARY) - {Hostile.MODERATE_NESTING}
    assert unexpected == set()
