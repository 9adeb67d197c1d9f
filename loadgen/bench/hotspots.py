"""Turn cProfile statistics into a `TimeProfile`: top functions, and own time by package.

Time a thread spends blocked in `epoll` is idle (waiting for the network or for another
thread), so shares are of the busy time; the idle share is reported on its own.
"""

from __future__ import annotations

import cProfile
import pstats
from collections import defaultdict
from pathlib import Path
from typing import Any

from loadgen.bench.record import TimeProfile, TopFunction

__all__ = ["by_package", "to_profile"]

TOP = 15
REPO = str(Path(__file__).resolve().parents[2]) + "/"
Key = tuple[str, int, str]


def _name(key: Key) -> str:
    path, line, func = key
    for marker in ("site-packages/", REPO, "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{path}:{line}({func})" if line else func


def _package(key: Key) -> str:
    """Where a function lives: a library, one of Surge's modules, the stdlib, or I/O."""
    path, _, func = key
    if path == "~":
        if "epoll" in func or "select" in func:
            return "idle (epoll)"
        if "socket" in func:
            return "socket send/recv"
        if "onnxruntime" in func:
            return "onnxruntime (C++)"
        return "builtins"
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1].split("/")[0]
    if path.startswith(REPO):
        return path[len(REPO) :]
    if "/lib/python3" in path:
        rest = path.split("/lib/python3", 1)[1].split("/", 1)[-1]
        return "stdlib " + rest.split("/")[0].removesuffix(".py")
    return path


def _rows(stats: pstats.Stats) -> dict[Key, Any]:
    rows: dict[Key, Any] = stats.stats  # type: ignore[attr-defined]
    return rows


def _top(stats: pstats.Stats, index: int) -> list[TopFunction]:
    ranked = sorted(_rows(stats).items(), key=lambda kv: kv[1][index], reverse=True)[:TOP]
    return [
        TopFunction(function=_name(k), calls=int(v[1]), tottime_s=v[2], cumtime_s=v[3])
        for k, v in ranked
    ]


def by_package(stats: pstats.Stats) -> dict[str, float]:
    """Own time (s) per package or Surge module, largest first."""
    totals: dict[str, float] = defaultdict(float)
    for key, row in _rows(stats).items():
        totals[_package(key)] += row[2]
    return dict(sorted(totals.items(), key=lambda kv: kv[1], reverse=True))


def _summary(packages: dict[str, float], wall: float) -> str:
    idle = packages.get("idle (epoll)", 0.0)
    busy = {k: v for k, v in packages.items() if k != "idle (epoll)"}
    total = sum(busy.values()) or 1.0
    shares = ", ".join(f"{k} {v / total:.0%}" for k, v in list(busy.items())[:8])
    return (
        f"{total:.2f} s busy + {idle:.2f} s idle in epoll over {wall:.2f} s wall; "
        f"busy time by package: {shares}"
    )


def to_profile(profiler: cProfile.Profile | pstats.Stats, **fields: Any) -> TimeProfile:
    """A `TimeProfile` from a profiler or merged stats; `fields` fill the rest."""
    stats = profiler if isinstance(profiler, pstats.Stats) else pstats.Stats(profiler)
    packages = by_package(stats)
    return TimeProfile(
        top_own_time=_top(stats, 2),
        top_cumulative=_top(stats, 3),
        own_time_by_package={k: round(v, 4) for k, v in packages.items()},
        summary=_summary(packages, float(fields["wall_s"])),
        **fields,
    )
