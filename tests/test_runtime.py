"""`pipeline.runtime.steady_gc`: the run's collector settings hold inside the block only."""

from __future__ import annotations

import gc

from pipeline.runtime import RUN_THRESHOLDS, steady_gc


def test_steady_gc_tunes_the_collector_for_the_block_and_restores_it() -> None:
    before = gc.get_threshold()
    assert before != RUN_THRESHOLDS
    with steady_gc():
        assert gc.get_threshold() == RUN_THRESHOLDS
        assert gc.get_freeze_count() > 0  # start-up objects are out of the collector's walks
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_steady_gc_restores_the_settings_after_an_error() -> None:
    before = gc.get_threshold()
    try:
        with steady_gc():
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
