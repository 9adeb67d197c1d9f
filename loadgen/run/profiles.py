"""Load profiles: arrival rate over time, and open-loop Poisson arrivals drawn from them.

A profile is a piecewise-linear rate curve, a list of `(t seconds, jobs/s)` points (two
points at the same time make a step). Built-in shapes take a base rate `R`, a factor `F`
and a duration `D`, so the same shape runs in 60 s on a laptop or for hours on a cluster:

=================  ================================================================
constant           `R` for `D`
step               `R` for the first half, then `R x F` (F default 4)
ramp               `R` rising linearly to `R x F` (F default 10)
marketing-spike    quiet `R` for 20 %, a jump to `R x F` (F default 30) within 2 % of
                   `D` (1 s..5 min), plateau to 50 %, exponential-like decay to zero by
                   85 %, then nothing (scale to zero shows)
=================  ================================================================

A CSV of `time,rate` rows (header optional) replays real traffic.

    profile = build_profile("marketing-spike", rate=2, duration=60)
    for offset in poisson_arrivals(profile, seed=1): ...
"""

from __future__ import annotations

import bisect
import csv
import math
import random
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field

__all__ = [
    "BUILTIN_PROFILES",
    "Profile",
    "build_profile",
    "load_csv_profile",
    "poisson_arrivals",
    "profile_from_options",
]

BUILTIN_PROFILES = ("constant", "step", "ramp", "marketing-spike")
DEFAULT_FACTOR = {"constant": 1.0, "step": 4.0, "ramp": 10.0, "marketing-spike": 30.0}


class Profile(BaseModel):
    """A rate curve: piecewise-linear through `points` (time s, rate jobs/s)."""

    name: str
    points: list[tuple[float, float]] = Field(min_length=2)
    description: str = ""

    @property
    def duration(self) -> float:
        return self.points[-1][0]

    @property
    def peak_rate(self) -> float:
        return max(rate for _, rate in self.points)

    def rate_at(self, t: float) -> float:
        """The rate at time `t` (0 outside the profile; the right value at a step)."""
        if t < 0 or t > self.duration:
            return 0.0
        times = [p[0] for p in self.points]
        i = bisect.bisect_right(times, t) - 1
        if i >= len(self.points) - 1:
            return self.points[-1][1]
        (t0, r0), (t1, r1) = self.points[i], self.points[i + 1]
        return r0 if t1 <= t0 else r0 + (r1 - r0) * (t - t0) / (t1 - t0)

    def expected_jobs(self, until: float | None = None) -> float:
        """The integral of the rate from 0 to `until` (default: the whole profile)."""
        end = self.duration if until is None else min(until, self.duration)
        total = 0.0
        for (t0, r0), (t1, r1) in zip(self.points, self.points[1:], strict=False):
            if t1 <= t0 or t0 >= end:
                continue
            stop = min(t1, end)
            r_stop = r0 + (r1 - r0) * (stop - t0) / (t1 - t0)
            total += (r0 + r_stop) / 2 * (stop - t0)
        return total

    def scaled(self, *, duration: float | None = None, rate_scale: float = 1.0) -> Profile:
        """The same shape stretched to `duration` seconds and with rates times `rate_scale`."""
        stretch = 1.0 if duration is None or self.duration <= 0 else duration / self.duration
        points = [(t * stretch, r * rate_scale) for t, r in self.points]
        return self.model_copy(update={"points": points})

    def campaign(self) -> tuple[float, float]:
        """Where the rate is at least half its peak: (first, last) time; the 'spike'."""
        half = self.peak_rate / 2
        above = [t for t, r in self.points if r >= half]
        return (above[0], above[-1]) if above else (0.0, 0.0)


def _spike_points(rate: float, factor: float, duration: float) -> list[tuple[float, float]]:
    peak = rate * factor
    quiet = 0.2 * duration
    rise = min(max(0.02 * duration, 1.0), 300.0, 0.1 * duration)
    plateau_end = 0.5 * duration
    decay_end = 0.85 * duration
    points = [(0.0, rate), (quiet, rate), (quiet + rise, peak), (plateau_end, peak)]
    steps = 8  # decay like exp(-4 x), ending at exactly zero
    for k in range(1, steps + 1):
        x = k / steps
        value = peak * (math.exp(-4 * x) - math.exp(-4)) / (1 - math.exp(-4))
        points.append((plateau_end + x * (decay_end - plateau_end), max(value, 0.0)))
    points.append((duration, 0.0))
    return points


def build_profile(
    name: str, *, rate: float, duration: float, factor: float | None = None
) -> Profile:
    """A built-in shape (see the module docstring) or, for a `.csv` path, a replayed trace."""
    if name.endswith(".csv") or name.startswith("csv:"):
        path = Path(name.removeprefix("csv:"))
        return load_csv_profile(path).scaled(duration=duration if duration > 0 else None)
    if name not in BUILTIN_PROFILES:
        raise ValueError(f"unknown profile {name!r}: one of {', '.join(BUILTIN_PROFILES)} or a CSV")
    if rate < 0 or duration <= 0:
        raise ValueError("rate must be >= 0 and duration > 0")
    f = DEFAULT_FACTOR[name] if factor is None else factor
    half = duration / 2
    if name == "constant":
        points = [(0.0, rate), (duration, rate)]
    elif name == "step":
        points = [(0.0, rate), (half, rate), (half, rate * f), (duration, rate * f)]
    elif name == "ramp":
        points = [(0.0, rate), (duration, rate * f)]
    else:
        points = _spike_points(rate, f, duration)
    text = f"{name}: base {rate:g}/s, factor {f:g}, {duration:g} s"
    return Profile(name=name, points=points, description=text)


def profile_from_options(
    profile: str, rate: float, factor: float | None, duration: float | None, rate_scale: float
) -> Profile:
    """The profile command-line options describe: built-ins default to 60 s; a CSV keeps
    its own length unless `duration` is given."""
    is_csv = profile.endswith(".csv") or profile.startswith("csv:")
    length = (duration or 0.0) if is_csv else (duration or 60.0)
    return build_profile(profile, rate=rate, factor=factor, duration=length).scaled(
        rate_scale=rate_scale
    )


def load_csv_profile(path: Path) -> Profile:
    """Read `time,rate` rows (seconds, jobs/s; a header row is skipped); time starts at 0."""
    points: list[tuple[float, float]] = []
    with path.open(newline="") as handle:
        for row in csv.reader(handle):
            if not row or row[0].strip().startswith("#"):
                continue
            try:
                t, r = float(row[0]), float(row[1])
            except (ValueError, IndexError):
                if points:
                    raise ValueError(f"{path}: bad row {row!r}") from None
                continue  # header
            if r < 0 or (points and t < points[-1][0]):
                raise ValueError(f"{path}: times must not go back and rates must be >= 0")
            points.append((t, r))
    if len(points) < 2:
        raise ValueError(f"{path}: need at least two (time, rate) rows")
    start = points[0][0]
    shifted = [(t - start, r) for t, r in points]
    return Profile(name=path.stem, points=shifted, description=f"trace {path.name}")


def poisson_arrivals(profile: Profile, seed: int) -> Iterator[float]:
    """Arrival offsets (s) of a Poisson process at the profile's rate, by thinning; lazy."""
    rng = random.Random(seed)
    for (t0, r0), (t1, r1) in zip(profile.points, profile.points[1:], strict=False):
        top = max(r0, r1)
        if t1 <= t0 or top <= 0:
            continue
        t = t0
        while True:
            t += rng.expovariate(top)
            if t >= t1:
                break
            rate = r0 + (r1 - r0) * (t - t0) / (t1 - t0)
            if rng.random() * top < rate:
                yield t
