"""The fair-share benchmark runs end to end: every one of tenant B's jobs is answered in
each phase, and A's spike drains (figures are the benchmark's to print, not asserted)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loadgen.bench.fairness import _plot, _table, measure

pytestmark = [pytest.mark.nats, pytest.mark.models]


def test_three_phases_with_every_job_answered(tmp_path: Path) -> None:
    phases = measure(tmp_path, spike=300, rate=20.0, alone=20, function="tiny")
    assert [p.name for p in phases] == ["B alone", "B during A's spike", "one shared queue"]
    assert len(phases[0].round_trips) == 20
    assert all(p.round_trips and p.drain_s is not None for p in phases[1:])
    assert all(len(p.round_trips) == len(p.sent_at) and p.unanswered == 0 for p in phases)
    assert _table(phases, 300).row_count == 3
    _plot(phases, tmp_path / "fairness.png")
    assert (tmp_path / "fairness.png").read_bytes()[:4] == b"\x89PNG"
