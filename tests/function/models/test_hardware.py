"""CPUs from affinity and the cgroup quota; runners and threads from them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from function.models.hardware import Parallelism, cgroup_cpu_limit, parallelism, usable_cpus


def _cgroup(tmp_path: Path, files: dict[str, str], own: str = "0::/pod/worker") -> Path:
    root = tmp_path / "cgroup"
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "self-cgroup").write_text(own + "\n")
    return root


def test_a_v2_quota_of_the_process_cgroup_is_read(tmp_path: Path) -> None:
    root = _cgroup(tmp_path, {"pod/worker/cpu.max": "150000 100000\n", "cpu.max": "max 100000"})
    assert cgroup_cpu_limit(root, tmp_path / "self-cgroup") == 1.5
    assert usable_cpus(root, tmp_path / "self-cgroup") == min(2, len(os.sched_getaffinity(0)))


def test_a_v1_quota_is_read_and_unlimited_is_none(tmp_path: Path) -> None:
    root = _cgroup(
        tmp_path,
        {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"},
        own="4:cpu,cpuacct:/",
    )
    assert cgroup_cpu_limit(root, tmp_path / "self-cgroup") == 1.0
    assert usable_cpus(root, tmp_path / "self-cgroup") == 1
    unlimited = _cgroup(tmp_path / "u", {"cpu.max": "max 100000\n"})
    assert cgroup_cpu_limit(unlimited, tmp_path / "u" / "self-cgroup") is None


def test_unreadable_or_garbled_files_mean_no_limit(tmp_path: Path) -> None:
    root = _cgroup(tmp_path, {"cpu.max": "garbage"}, own="nonsense")
    assert cgroup_cpu_limit(root, tmp_path / "self-cgroup") is None
    assert cgroup_cpu_limit(tmp_path / "absent", tmp_path / "absent-file") is None
    assert usable_cpus(tmp_path / "absent", tmp_path / "absent-file") >= 1


@pytest.mark.parametrize(
    ("cpus", "gpu", "runners", "threads", "want"),
    [
        (4, False, 0, 0, Parallelism(4, 1)),  # one single-threaded run per CPU
        (4, False, 0, 2, Parallelism(2, 2)),  # threads given: runners fill the rest
        (4, False, 1, 0, Parallelism(1, 4)),  # runners given: threads fill the rest
        (4, False, 3, 3, Parallelism(3, 3)),  # both given: kept as they are
        (1, False, 0, 4, Parallelism(1, 4)),
        (16, True, 0, 0, Parallelism(2, 1)),  # a GPU: two runners keep it fed
    ],
)
def test_parallelism(cpus: int, gpu: bool, runners: int, threads: int, want: Parallelism) -> None:
    assert parallelism(cpus, gpu=gpu, runners=runners, threads=threads) == want
