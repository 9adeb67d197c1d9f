"""The interpreter-lock bench: every stage timed alone and beside a busy thread."""

from __future__ import annotations

import sys

from loadgen.bench.gil import measure


def test_every_stage_is_timed_at_every_interval_and_the_interval_is_restored() -> None:
    before = sys.getswitchinterval()
    timings = measure([5.0, 0.5], seconds=0.05, side=64)
    assert [(t.stage, t.switch_ms) for t in timings] == [
        (stage, interval)
        for stage in ("decode", "preprocess", "postprocess")
        for interval in (5.0, 0.5)
    ]
    assert all(t.alone_ms > 0 and t.beside_ms > 0 and t.busy_kept > 0 for t in timings)
    assert sys.getswitchinterval() == before
