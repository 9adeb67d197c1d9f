"""A model rollout under load, as a timeline: `python -m loadgen.bench.rollout`.

One nats-server and `--workers` in-process `tiny` workers serve a steady `--rate` jobs/s
for `--seconds`. A second version of the model (`tiny_model_bytes(scale)`: other scores,
same input and output) is pushed first; at `--canary-at` it gets `--canary` of the jobs,
at `--promote-at` it is promoted. Every result names the version that produced it.

Prints, per second of arrival, the jobs answered by each version; the canary's share
while it was one (against its target); when each change reached the results; the longest
wait between two consecutive results (a gap would show there); and how many jobs were
answered more than once or not at all (both must be 0). Writes `rollout.png` and a JSON
record to `--out`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import matplotlib
import typer
from nats.aio.msg import Msg
from pydantic import BaseModel

from function.client import SurgeClient
from function.contract.settings import WorkerSettings
from function.contract.wire import Result
from function.local.nats_server import EmbeddedNats
from function.models.tiny import tiny_model_bytes
from function.transport.modelstore import ModelStore
from function.worker import Worker
from loadgen.run.runner import tiny_png
from scaler.plotting import save_png

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the backend

__all__ = ["RolloutTimeline", "main", "measure"]

MODEL_DIR = Path(os.environ.get("SURGE_MODEL_DIR", ".cache/surge/models")).resolve()
FUNCTION = "tiny"


class RolloutTimeline(BaseModel):
    """What the run saw: per second of arrival, jobs answered by each version."""

    rate: float
    seconds: float
    canary_share: float
    canary_at_s: float
    promote_at_s: float
    stable: str
    new: str
    per_second: list[dict[str, int]]
    canary_seen_share: float
    first_new_s: float | None
    last_old_s: float | None
    longest_gap_ms: float
    jobs: int
    answered_twice: int
    unanswered: int


async def measure(
    rate: float, seconds: float, canary: float, canary_at: float, promote_at: float, workers: int
) -> RolloutTimeline:
    """Run the load and the rollout on a fresh server; the timeline."""
    with tempfile.TemporaryDirectory() as folder, EmbeddedNats(store_dir=Path(folder)) as server:
        new_file = Path(folder) / "tiny-v2.onnx"
        new_file.write_bytes(tiny_model_bytes(0.5))
        settings = WorkerSettings(nats_url=server.url, function=FUNCTION, model_dir=MODEL_DIR)
        running = [Worker(settings) for _ in range(workers)]
        for worker in running:
            await worker.start()
        try:
            async with await SurgeClient.connect(server.url) as client:
                store = await ModelStore.open(client.js, create=True)
                new = await store.push(FUNCTION, new_file)
                stable = running[0].model.info.version if running[0].model else "?"
                answers: Counter[str] = Counter()
                results: dict[str, tuple[float, Result]] = {}
                sent: dict[str, float] = {}
                inbox = client.nc.new_inbox()
                start = time.monotonic()

                async def on_result(msg: Msg) -> None:
                    result = Result.model_validate_json(msg.data)
                    answers[result.job_id] += 1
                    results.setdefault(result.job_id, (time.monotonic() - start, result))

                await client.nc.subscribe(inbox, cb=on_result)
                changes = [
                    (canary_at, lambda r: r.canary_of(new, canary)),
                    (promote_at, lambda r: r.promoted()),
                ]
                total = int(rate * seconds)
                for i in range(total):
                    due = i / rate
                    await asyncio.sleep(max(0.0, start + due - time.monotonic()))
                    while changes and due >= changes[0][0]:
                        await store.change(FUNCTION, changes.pop(0)[1])
                    job_id = await client.submit(tiny_png(), function=FUNCTION, reply_to=inbox)
                    sent[job_id] = due
                for _ in range(1200):  # up to 60 s for the last results
                    if len(results) >= total:
                        break
                    await asyncio.sleep(0.05)
                await asyncio.sleep(0.5)  # a late duplicate would still arrive
        finally:
            for worker in running:
                await worker.stop(timeout=10)
    return _timeline(
        rate, seconds, canary, canary_at, promote_at, stable, new, sent, results, answers
    )


def _version(result: Result) -> str:
    return result.model.version if result.model is not None else "?"


def _timeline(
    rate: float,
    seconds: float,
    canary: float,
    canary_at: float,
    promote_at: float,
    stable: str,
    new: str,
    sent: dict[str, float],
    results: dict[str, tuple[float, Result]],
    answers: Counter[str],
) -> RolloutTimeline:
    per_second = [{stable: 0, new: 0} for _ in range(math.ceil(seconds))]
    during = Counter[str]()
    for job_id, due in sent.items():
        if job_id not in results:
            continue
        version = _version(results[job_id][1])
        per_second[int(due)][version] = per_second[int(due)].get(version, 0) + 1
        if canary_at + 1 <= due < promote_at:  # a second for the workers to load it
            during[version] += 1
    answered = sorted(t for t, _ in results.values())
    gaps = [b - a for a, b in itertools.pairwise(answered)]
    new_at = [t for t, r in results.values() if _version(r) == new]
    old_after = [t for t, r in results.values() if _version(r) != new]
    return RolloutTimeline(
        rate=rate,
        seconds=seconds,
        canary_share=canary,
        canary_at_s=canary_at,
        promote_at_s=promote_at,
        stable=stable,
        new=new,
        per_second=per_second,
        canary_seen_share=during[new] / max(sum(during.values()), 1),
        first_new_s=min(new_at) if new_at else None,
        last_old_s=max(old_after) if old_after else None,
        longest_gap_ms=max(gaps, default=0.0) * 1000,
        jobs=len(sent),
        answered_twice=sum(1 for n in answers.values() if n > 1),
        unanswered=len(sent) - len(results),
    )


def plot(timeline: RolloutTimeline, path: Path) -> Path:
    """Stacked bars: jobs per second of arrival by the version that answered them."""
    fig, ax = plt.subplots(figsize=(9, 4))
    seconds = range(len(timeline.per_second))
    old = [s.get(timeline.stable, 0) for s in timeline.per_second]
    new = [s.get(timeline.new, 0) for s in timeline.per_second]
    ax.bar(seconds, old, color="#4c72b0", label=f"stable {timeline.stable[:8]}")
    ax.bar(seconds, new, bottom=old, color="#dd8452", label=f"new {timeline.new[:8]}")
    top = max((a + b for a, b in zip(old, new, strict=True)), default=1)
    ax.set_ylim(0, top * 1.2)
    for at, what in ((timeline.canary_at_s, "canary"), (timeline.promote_at_s, "promote")):
        ax.axvline(at - 0.5, color="black", linestyle="--", linewidth=1)
        ax.text(at - 0.45, top * 1.08, what, fontsize=8)
    ax.set_xlabel("second of arrival")
    ax.set_ylabel("jobs answered")
    rate, share = timeline.rate, timeline.canary_share
    ax.set_title(f"Rollout under load: {rate:g} jobs/s, canary {share:.0%}")
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save_png(fig, path)


def main(
    rate: Annotated[float, typer.Option(help="Jobs per second, steady.")] = 40.0,
    seconds: Annotated[float, typer.Option(help="How long the load lasts.")] = 12.0,
    canary: Annotated[float, typer.Option(help="The canary's share, 0..1.")] = 0.1,
    canary_at: Annotated[float, typer.Option(help="When the canary starts (s).")] = 3.0,
    promote_at: Annotated[float, typer.Option(help="When it is promoted (s).")] = 8.0,
    workers: Annotated[int, typer.Option(help="In-process tiny workers.")] = 2,
    out: Annotated[Path, typer.Option(help="Where the PNG and JSON go.")] = Path("reports"),
) -> None:
    """A model rollout under steady load: versions over time, no gap, none lost."""
    timeline = asyncio.run(measure(rate, seconds, canary, canary_at, promote_at, workers))
    typer.echo(f"stable {timeline.stable}, new {timeline.new}; {timeline.jobs} jobs")
    typer.echo("second  stable  new")
    for second, counts in enumerate(timeline.per_second):
        old, new = counts.get(timeline.stable, 0), counts.get(timeline.new, 0)
        typer.echo(f"{second:6d}  {old:6d}  {new:3d}")
    typer.echo(
        f"canary share while it was one: {timeline.canary_seen_share:.1%} "
        f"(target {timeline.canary_share:.0%}); first new-version result at "
        f"{timeline.first_new_s or 0:.2f} s (canary at {timeline.canary_at_s:g} s); last "
        f"stable-version result at {timeline.last_old_s or 0:.2f} s (promote at "
        f"{timeline.promote_at_s:g} s); longest wait between results "
        f"{timeline.longest_gap_ms:.0f} ms; answered twice {timeline.answered_twice}, "
        f"unanswered {timeline.unanswered}"
    )
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    record = out / f"rollout-{stamp}.json"
    record.write_text(json.dumps(timeline.model_dump(), indent=2))
    typer.echo(f"record: {record}, plot: {plot(timeline, out / f'rollout-{stamp}.png')}")


if __name__ == "__main__":
    typer.run(main)
