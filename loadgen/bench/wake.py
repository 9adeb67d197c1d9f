"""The wake penalty: how much slower this machine runs a step after an idle gap.

A one-at-a-time round trip is a chain of processes (client, nats-server, worker) that
each idle between steps. Where an idle vCPU's caches go cold, its clock drops or its host
runs something else, the same code runs slower one job at a time than in a drain. This
times one step of a `tiny` job (decode the 16x16 PNG, make the model's 8x8 input) back
to back, then each after `gap_s` asleep (the timer starts once the sleep has returned,
so the wake-up's own delay is not in it), in this process: the ratio of the medians.
"""

from __future__ import annotations

import statistics
import time

from function.models.imaging import decode_image
from function.models.tiny import TinyTask
from loadgen.bench.record import WakePenalty
from loadgen.run.runner import tiny_png

__all__ = ["wake_penalty"]


def _step_us(data: bytes, task: TinyTask, gap_s: float) -> float:
    if gap_s:
        time.sleep(gap_s)
    start = time.perf_counter_ns()
    task.preprocess(decode_image(data, "image/png", max_pixels=1 << 20, target=(8, 8)))
    return (time.perf_counter_ns() - start) / 1000


def wake_penalty(gap_s: float = 0.005, runs: int = 200) -> WakePenalty:
    """Median step time back to back, and after `gap_s` of sleep before each step."""
    data, task = tiny_png(), TinyTask()
    for _ in range(20):  # imports, first-call caches
        _step_us(data, task, 0.0)
    hot = statistics.median(_step_us(data, task, 0.0) for _ in range(runs))
    idle = statistics.median(_step_us(data, task, gap_s) for _ in range(runs))
    return WakePenalty(
        gap_ms=gap_s * 1000, back_to_back_us=hot, after_idle_us=idle, ratio=idle / hot
    )
