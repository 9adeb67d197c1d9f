"""`surge demo` end to end on the embedded stack (tiny function, real photos, real workers)."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from scaler.demo import run_demo, sparkline
from scaler.demo_files import DemoIndex


def test_sparkline_follows_time_not_sample_count() -> None:
    line = sparkline([(0.0, 0), (1.0, 2), (9.0, 2), (10.0, 0)], width=10)
    assert line[0] == " " and line[-1] == " " and line[1:9] == "█" * 8
    assert sparkline([]) == ""


def test_demo_scales_from_zero_and_back(tmp_path: Path, model_dir: Path) -> None:
    console = Console(file=io.StringIO(), width=100)
    ok = run_demo(
        jobs=6, out=tmp_path, max_workers=1, function="tiny", console=console, cooldown_s=1.0
    )
    printed = console.file.getvalue()  # type: ignore[attr-defined]
    assert ok, printed
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["ok"] == 6 and report["missing"] == 0
    assert report["timeline"][0]["replicas"] == 0 and report["timeline"][-1]["replicas"] == 0
    assert report["peak_replicas"] == 1
    bill = report["bill"]  # the demo prints its bill and keeps it
    assert bill["starts"] == 1 and bill["used_s"] > 0 and report["usage"]["cold_start_s"] > 0
    parts = bill["used_s"] + bill["starting_s"] + bill["idle_s"]
    assert abs(parts - bill["replica_s"]) < 1e-6 and len(report["usage"]["arrivals_s"]) == 6
    assert len(report["usage"]["jobs"]) == 6  # when each was answered: a range can be billed
    assert "What it cost" in printed and "fixed fleet" in printed
    # KEDA's defaults for the same arrivals, from the load generator's simulator (an
    # entry point: the scaler does not import it); its 300 s cooldown costs the most
    [(row, (keda_s, _))] = report["compared"].items()
    assert row == "KEDA defaults, same arrivals" and keda_s > bill["replica_s"]
    assert "KEDA defaults" in printed
    assert (tmp_path / "timeline.png").read_bytes().startswith(b"\x89PNG")
    assert "from 0 workers" in printed
    index = DemoIndex.model_validate_json((tmp_path / "index.json").read_text())
    assert [row.n for row in index.rows] == [1, 2, 3, 4, 5, 6] and index.missing == 0
    assert all(row.status == "ok" and row.scores for row in index.rows)  # tiny: scores only
    assert "index.html" in printed and (tmp_path / "index.html").exists()
    assert not [p for p in tmp_path.glob("*.png") if p.name != "timeline.png"]
