"""Report files (JSON + PNGs), the terminal summary, and two runs side by side."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rich.table import Table

from loadgen.report.plots import write_plots
from loadgen.run.records import RunReport

__all__ = ["compare_table", "load_report", "summary_table", "write_report"]


def write_report(report: RunReport, out: Path) -> RunReport:
    """Write `report.json`, `latency.png` and `load.png` into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    files = write_plots(report, out)
    files["report_json"] = str(out / "report.json")
    report = report.model_copy(update={"files": files})
    (out / "report.json").write_text(report.model_dump_json(indent=2))
    return report


def load_report(path: Path) -> RunReport:
    """Read a `report.json` (or a directory holding one)."""
    if path.is_dir():
        path = path / "report.json"
    return RunReport.model_validate_json(path.read_text())


def _ms(value: float) -> str:
    return f"{value:,.1f}"


def _opt(value: float | int | None, fmt: str = "{:,}") -> str:
    return "-" if value is None else fmt.format(value)


def summary_table(report: RunReport) -> Table:
    """Accounting, latency, backlog and replicas of one run."""
    a, lat, lag = report.accounting, report.latency_ms, report.generator_lag_ms
    verdict = "[green]ok[/]" if report.ok else f"[bold red]FAILED: {a.lost} lost[/]"
    table = Table(title=f"loadgen {report.config.profile} -> {report.config.function}: {verdict}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    rows: list[tuple[str, str]] = [
        ("scheduled / published", f"{a.scheduled:,} / {a.published:,}"),
        ("acknowledged by JetStream", f"{a.acknowledged:,}"),
        ("rejected publishes", str(a.rejected or 0)),
        ("answered ok", f"{a.answered_ok:,}"),
        ("answered error (by code)", str(a.answered_error or 0)),
        ("dead-lettered (SURGE_DEAD)", f"{a.dead_lettered:,}"),
        ("recovered from result store", f"{a.recovered_from_store:,}"),
        ("missing", f"[bold red]{a.missing:,}[/]" if a.missing else "0"),
        (
            "offered rate / throughput (jobs/s)",
            f"{report.offered_rate:.2f} / {report.throughput:.2f}",
        ),
        ("latency p50 / p90 / p99 (ms)", f"{_ms(lat.p50)} / {_ms(lat.p90)} / {_ms(lat.p99)}"),
        ("latency max (ms)", _ms(lat.max)),
        ("generator lag p99 / max (ms)", f"{_ms(lag.p99)} / {_ms(lag.max)}"),
        ("peak backlog", _opt(report.peak_backlog)),
        ("peak ready replicas", _opt(report.peak_replicas)),
        ("replica-seconds", _opt(report.replica_seconds, "{:,.0f}")),
        ("arrival phase / elapsed (s)", f"{report.arrival_phase_s:.1f} / {report.elapsed_s:.1f}"),
    ]
    if a.missing_ids:
        rows.append(("first missing ids", ", ".join(a.missing_ids[:5])))
    for name, value in rows:
        table.add_row(name, value)
    return table


_Getter = Callable[[RunReport], float | int | None]
_COMPARED: list[tuple[str, _Getter, bool]] = [
    # (name, value, lower is better)
    ("scheduled jobs", lambda r: r.accounting.scheduled, False),
    ("answered ok", lambda r: r.accounting.answered_ok, False),
    ("answered error", lambda r: sum(r.accounting.answered_error.values()), True),
    ("dead-lettered", lambda r: r.accounting.dead_lettered, True),
    ("missing", lambda r: r.accounting.missing, True),
    ("offered rate (jobs/s)", lambda r: r.offered_rate, False),
    ("throughput (jobs/s)", lambda r: r.throughput, False),
    ("latency p50 (ms)", lambda r: r.latency_ms.p50, True),
    ("latency p90 (ms)", lambda r: r.latency_ms.p90, True),
    ("latency p99 (ms)", lambda r: r.latency_ms.p99, True),
    ("latency max (ms)", lambda r: r.latency_ms.max, True),
    ("generator lag p99 (ms)", lambda r: r.generator_lag_ms.p99, True),
    ("peak backlog", lambda r: r.peak_backlog, True),
    ("peak ready replicas", lambda r: r.peak_replicas, True),
    ("replica-seconds", lambda r: r.replica_seconds, True),
    ("elapsed (s)", lambda r: r.elapsed_s, True),
]


def _fmt(value: float | int | None) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"


def compare_table(a: RunReport, b: RunReport) -> Table:
    """A and B side by side with B/A; a better B is green, a worse one red."""
    table = Table(
        title=f"A = {a.run_id} ({a.config.profile})  vs  B = {b.run_id} ({b.config.profile})"
    )
    for column in ("metric", "A", "B", "B/A"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, get, lower_better in _COMPARED:
        va, vb = get(a), get(b)
        ratio = "-"
        if va is not None and vb is not None and va != 0:
            r = vb / va
            better = r < 1 if lower_better else r > 1
            colour = "green" if better else ("red" if r != 1 else "")
            ratio = f"[{colour}]{r:.2f}[/]" if colour else f"{r:.2f}"
        table.add_row(name, _fmt(va), _fmt(vb), ratio)
    return table
