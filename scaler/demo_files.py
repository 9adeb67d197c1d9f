"""The demo's output files: results named so a person finds them, and an index of every job.

    rows = await save_from(url, report.results.values(), out, {job_id: photo, ...})
    write_index(DemoIndex(jobs=48, missing=0, rows=rows), out)

Results are numbered in the order they finished, and each image output, inline or kept
in the Object Store for being too large, is written as `<n>-<photo>-<output>.png`
(`07-astronaut-cutout.png`), the photo named by the demo that sent it.
`index.html` (open it in a browser), `index.csv` and `index.json` list every answered
job: number, job id, photo, status, error code, latency, queue wait, batch size, files.
"""

from __future__ import annotations

import csv
import html
import logging
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

from pydantic import BaseModel, Field

from function.client import SurgeClient
from function.contract.wire import ImageOutput, Result, ScoresOutput

__all__ = [
    "DemoIndex",
    "IndexRow",
    "OutputReader",
    "save_from",
    "save_results",
    "write_index",
]

log = logging.getLogger("surge.scaler.demo")

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class IndexRow(BaseModel):
    """One answered job of the demo."""

    n: int = Field(description="Its place in the order the results finished, from 1.")
    job_id: str
    photo: str = Field(description="The input photo's name, or `photo` when not recognised.")
    status: str
    error: str | None = Field(default=None, description="The error code of a failed job.")
    latency_ms: float = Field(description="Publish to result, as the worker measured it.")
    queued_ms: float
    batch_size: int
    files: list[str] = Field(default_factory=list, description="Its output files, by name.")
    unsaved: list[str] = Field(
        default_factory=list, description="Outputs that could not be read back (by name)."
    )
    scores: dict[str, float] = Field(default_factory=dict)


class DemoIndex(BaseModel):
    """`index.json`: every answered job, and how many were never answered."""

    jobs: int
    missing: int
    rows: list[IndexRow]


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name).strip("_")[:64] or "output"


OutputReader = Callable[[ImageOutput], Awaitable[bytes]]
"""An image output's bytes, inline or from the Object Store (`SurgeClient.output_bytes`)."""


async def save_results(
    results: Iterable[Result], out: Path, photos: Mapping[str, str], read: OutputReader
) -> list[IndexRow]:
    """Write each result's image outputs as `<n>-<photo>-<output>.png`; one row each.
    `photos` names each job's input photo by job id (`photo` when it does not)."""
    ordered = sorted(results, key=lambda r: (r.finished_at, r.job_id))
    width = len(str(len(ordered)))
    rows = []
    for n, result in enumerate(ordered, start=1):
        photo = _safe(photos.get(result.job_id, "photo"))
        row = IndexRow(
            n=n,
            job_id=result.job_id,
            photo=photo,
            status=result.status.value,
            error=result.error.code.value if result.error else None,
            latency_ms=round(result.timings.total_ms, 1),
            queued_ms=round(result.timings.queued_ms, 1),
            batch_size=result.timings.batch_size,
        )
        for name, output in sorted(result.outputs.items()):
            if isinstance(output, ScoresOutput):
                row.scores.update(output.scores)
                continue
            try:
                data = await read(output)
            except Exception as exc:  # a blob gone from the store: say so, keep the rest
                log.warning("output %s of job %s not saved: %s", name, result.job_id, exc)
                row.unsaved.append(name)
                continue
            file = f"{n:0{width}d}-{photo}-{_safe(name)}.png"
            (out / file).write_bytes(data)
            row.files.append(file)
        rows.append(row)
    return rows


async def save_from(
    url: str, results: Iterable[Result], out: Path, photos: Mapping[str, str]
) -> list[IndexRow]:
    """`save_results` with outputs too large to inline read from the server at `url`."""
    async with await SurgeClient.connect(url) as client:
        return await save_results(results, out, photos, client.output_bytes)


_COLUMNS = ("n", "job_id", "photo", "status", "error", "latency_ms", "queued_ms", "batch_size")


def _cell(value: object) -> str:
    return "" if value is None else html.escape(str(value))


def _html(index: DemoIndex) -> str:
    head = "".join(f"<th>{c}</th>" for c in (*_COLUMNS, "outputs"))
    body = []
    for row in index.rows:
        values = row.model_dump()
        cells = "".join(f"<td>{_cell(values[c])}</td>" for c in _COLUMNS)
        links = " ".join(
            f'<a href="{html.escape(f)}"><img src="{html.escape(f)}" height="64" '
            f'title="{html.escape(f)}"></a>'
            for f in row.files
        )
        notes = [f"{k} {v:.3f}" for k, v in row.scores.items()]
        notes += [f"{name}: not saved" for name in row.unsaved]
        body.append(f"<tr>{cells}<td>{links}{html.escape(', '.join(notes))}</td></tr>")
    return (
        '<!doctype html>\n<html><head><meta charset="utf-8"><title>Surge demo results</title>'
        "<style>body{font-family:sans-serif}td,th{padding:2px 8px;text-align:left}"
        "tr:nth-child(even){background:#f4f4f4}</style></head><body>\n"
        f"<h1>Surge demo: {len(index.rows)} of {index.jobs} jobs answered, "
        f"{index.missing} missing</h1>\n"
        '<p><a href="timeline.png"><img src="timeline.png" height="240"></a></p>\n'
        f"<table>\n<tr>{head}</tr>\n" + "\n".join(body) + "\n</table>\n</body></html>\n"
    )


def write_index(index: DemoIndex, out: Path) -> dict[str, Path]:
    """`index.html`, `index.csv` and `index.json` in `out`."""
    paths = {name: out / f"index.{name}" for name in ("html", "csv", "json")}
    paths["json"].write_text(index.model_dump_json(indent=2))
    paths["html"].write_text(_html(index))
    with paths["csv"].open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow((*_COLUMNS, "files", "unsaved"))
        for row in index.rows:
            values = row.model_dump()
            files, unsaved = " ".join(row.files), " ".join(row.unsaved)
            writer.writerow((*(values[c] for c in _COLUMNS), files, unsaved))
    return paths
