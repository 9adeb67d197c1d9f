"""How a worker's CPU stages fare beside a busy Python thread: `python -m loadgen.bench.gil`.

A worker decodes, preprocesses and postprocesses in threads while its event loop runs
Python. Each stage spends most of its time in C code that lets go of the interpreter
lock, and waits for the lock each time it comes back: up to the switch interval when
another thread is busy in Python. Each stage of a 512x512 `remove-bg` job is timed
alone, then in a thread beside a thread that only counts (a stand-in for a busy event
loop), for each switch interval asked for; the counter's rate beside the stage, against
its rate alone, is the share of the lock the stage left it. On a many-core node these
waits, not the cores, can bound a worker's CPU side.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Annotated, NamedTuple

import typer
from rich.console import Console
from rich.table import Table

from function.models.imaging import decode_image
from function.models.remove_bg import RemoveBackground

__all__ = ["StageTiming", "main", "measure", "stages"]

console = Console()


class StageTiming(NamedTuple):
    """One stage at one switch interval: ms per run alone and beside the busy thread,
    and the share of its solo rate the busy thread kept."""

    stage: str
    switch_ms: float
    alone_ms: float
    beside_ms: float
    busy_kept: float


def stages(side: int = 512) -> dict[str, Callable[[], object]]:
    """The CPU stages of one `side` x `side` PNG `remove-bg` job."""
    from loadgen.bench.pipeline import job_image

    task = RemoveBackground()
    data = job_image(side)
    image = decode_image(data, None, max_pixels=10**8)
    row = task.preprocess(image).mean(axis=0, keepdims=True)
    return {
        "decode": lambda: decode_image(data, None, max_pixels=10**8),
        "preprocess": lambda: task.preprocess(image),
        "postprocess": lambda: task.postprocess(row, image, ("mask",)),
    }


def _count(seconds: float) -> int:
    """Python work: loop iterations in `seconds`."""
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        done += 1
    return done


def _ms_per_run(run: Callable[[], object], seconds: float) -> float:
    runs, start = 0, time.perf_counter()
    while runs == 0 or time.perf_counter() - start < seconds:
        run()
        runs += 1
    return (time.perf_counter() - start) * 1000 / runs


def _beside_busy(run: Callable[[], object], seconds: float) -> tuple[float, int]:
    """(ms per run of `run` in a thread, the counter's count) while the counter runs."""
    stop, runs = threading.Event(), [0]

    def loop() -> None:
        while not stop.is_set():
            run()
            runs[0] += 1

    thread = threading.Thread(target=loop, daemon=True)
    start = time.perf_counter()
    thread.start()
    counted = _count(seconds)
    stop.set()
    thread.join()
    return (time.perf_counter() - start) * 1000 / max(runs[0], 1), counted


def measure(switch_ms: list[float], seconds: float = 1.0, side: int = 512) -> list[StageTiming]:
    """Every stage at every switch interval (the interpreter's own is restored after)."""
    before = sys.getswitchinterval()
    timings = []
    try:
        for stage, run in stages(side).items():
            for interval in switch_ms:
                sys.setswitchinterval(interval / 1000)
                solo = _count(seconds)
                alone = _ms_per_run(run, seconds)
                beside, counted = _beside_busy(run, seconds)
                timings.append(StageTiming(stage, interval, alone, beside, counted / solo))
    finally:
        sys.setswitchinterval(before)
    return timings


def bench(
    switch_ms: Annotated[
        list[float] | None,
        typer.Option(help="Switch intervals to try, in ms (again for more)."),
    ] = None,
    seconds: Annotated[float, typer.Option(min=0.05, help="Seconds per timing.")] = 1.0,
) -> None:
    """Each CPU stage alone and beside a busy Python thread, per switch interval."""
    intervals = switch_ms or [sys.getswitchinterval() * 1000, 0.5]
    with console.status("timing each stage alone, then beside a busy thread"):
        timings = measure(intervals, seconds)
    table = Table(title="512x512 remove-bg stages beside a busy Python thread (ms per run)")
    for column in ("stage", "switch interval", "alone", "beside", "slower", "busy kept"):
        table.add_column(column, justify="right")
    for t in timings:
        table.add_row(
            t.stage,
            f"{t.switch_ms:g} ms",
            f"{t.alone_ms:.1f}",
            f"{t.beside_ms:.1f}",
            f"{t.beside_ms / t.alone_ms:.1f}x",
            f"{t.busy_kept:.0%}",
        )
    console.print(table)


def main() -> None:
    """`python -m loadgen.bench.gil`."""
    typer.run(bench)


if __name__ == "__main__":
    main()
