"""What the process may really use: CPUs from its affinity and its cgroup quota, and the
runners and threads that fill them.

A pod limited to 2 CPUs on a 64-core node sees 64 in `os.cpu_count()`; ONNX Runtime would
start 64 threads and the kernel would throttle them. `usable_cpus()` takes the smallest of
the affinity mask and the cgroup quota (v2 `cpu.max`, v1 `cpu.cfs_quota_us`), rounded up.
`parallelism()` turns that into concurrent runners on one shared session and intra-op
threads each; explicit settings win.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

__all__ = ["CGROUP_ROOT", "Parallelism", "cgroup_cpu_limit", "parallelism", "usable_cpus"]

CGROUP_ROOT = Path("/sys/fs/cgroup")
_GPU_RUNNERS = 2  # one batch on the device while the next is handed over


class Parallelism(NamedTuple):
    """Concurrent inference runners on one session, and intra-op threads per run."""

    runners: int
    threads: int


def _v2_limit(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _v1_limit(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        period = int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def _own_paths(proc_cgroup: Path) -> list[str]:
    """This process's cgroup paths (`/proc/self/cgroup`), v2 first."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return []
    paths = [line.split(":", 2)[2] for line in lines if line.count(":") >= 2]
    return sorted({p.lstrip("/") for p in paths if p}, key=len, reverse=True)


def cgroup_cpu_limit(
    root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")
) -> float | None:
    """CPUs the cgroup quota allows (e.g. 1.5), or None when unlimited or unknown."""
    folders = [root / path for path in _own_paths(proc_cgroup)] + [root, root / "cpu"]
    limits = []
    for folder in folders:
        for read in (_v2_limit, _v1_limit):
            limit = read(folder)
            if limit is not None:
                limits.append(limit)
    return min(limits) if limits else None


def usable_cpus(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """CPUs this process may keep busy: affinity, capped by the cgroup quota (rounded up)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def parallelism(cpus: int, *, gpu: bool, runners: int = 0, threads: int = 0) -> Parallelism:
    """Runners and threads for `cpus` CPUs; a non-zero `runners` or `threads` is kept.

    On CPU, one single-threaded run per CPU beats one run over all CPUs (the convolutions
    of one image do not scale across threads as well as separate images do), and they
    share one session, so one copy of the model. On a GPU two runners keep it fed.
    """
    if gpu:
        return Parallelism(runners or _GPU_RUNNERS, threads or 1)
    if runners and threads:
        return Parallelism(runners, threads)
    if threads:
        return Parallelism(max(1, cpus // threads), threads)
    if runners:
        return Parallelism(runners, max(1, cpus // runners))
    return Parallelism(cpus, 1)
