"""`CpuProcesses` with real child processes: the same samples and outputs as the task
run here, bad input as `BadInput`, a dead child replaced and its job retried."""

from __future__ import annotations

import asyncio
import base64
import io
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import pytest
from PIL import Image

from function.contract.errors import BadInput, ErrorCode, TransientError
from function.contract.settings import WorkerSettings
from function.contract.wire import ModelInfo
from function.engine import cpuchildren, cpuprocs
from function.engine.batchmodel import BatchModel
from function.engine.cpuprocs import CpuProcesses, NoRoom, cpu_processes, shared_folder
from function.models import stages
from function.models.imaging import open_image
from function.models.registry import TaskLoadError
from function.models.remove_bg import RemoveBackground
from tests.function.engine.crashing_task import CRASH_WIDTH, SLOWER_WIDTH
from tests.helpers import png_bytes

MAX_PIXELS = 40_000_000


def _png(path: Path, side: int = 512) -> bytes:
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").resize((side, side)).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
async def remove_bg(tmp_path: Path) -> AsyncIterator[CpuProcesses]:
    processes = CpuProcesses(2, "remove-bg", None, MAX_PIXELS, folder=tmp_path)
    await processes.start()
    yield processes
    processes.close()


async def test_same_sample_and_outputs_as_the_task_here(
    remove_bg: CpuProcesses, photos: dict[str, Path]
) -> None:
    data = _png(photos["astronaut"])
    task = RemoveBackground()
    pending = open_image(data, "image/png", max_pixels=MAX_PIXELS)
    pending.plan(task.decode_size(("mask", "cutout")))
    image = pending.decode()
    expected = task.preprocess(image)
    shared, sample = await remove_bg.prepare(data, "image/png", None)
    assert shared.pixels == 512 * 512 and shared.prepared.prep_ns > 0
    np.testing.assert_array_equal(sample, expected)
    row = np.random.default_rng(7).random((1, 320, 320), dtype=np.float32)
    made, elapsed = await remove_bg.postprocess(shared, row, ("mask", "cutout"))
    assert elapsed > 0
    assert made == task.postprocess(row, image, ("mask", "cutout"))
    remove_bg.discard(shared)
    again, _ = await remove_bg.prepare(data, "image/png", None)
    assert again.slot is shared.slot  # slots are reused
    remove_bg.discard(again)


async def test_bad_input_is_bad_input_and_the_processes_stay(remove_bg: CpuProcesses) -> None:
    with pytest.raises(BadInput) as raised:
        await remove_bg.prepare(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50_000, "image/png", None)
    assert raised.value.code is ErrorCode.BAD_IMAGE and raised.value.message
    _shared, sample = await remove_bg.prepare(png_bytes(64, 64), "image/png", (320, 320))
    assert sample.shape == (3, 320, 320)
    assert remove_bg.replaced == 0


async def test_a_dead_process_fails_its_job_as_transient_and_is_replaced(
    tmp_path: Path,
) -> None:
    ref = "tests.function.engine.crashing_task:CrashingTask"
    processes = CpuProcesses(1, "tiny", ref, MAX_PIXELS, folder=tmp_path)
    await processes.start()
    try:
        with pytest.raises(TransientError, match="died"):
            await processes.prepare(png_bytes(CRASH_WIDTH, 8), "image/png", None)
        _shared, sample = await processes.prepare(png_bytes(16, 16), "image/png", None)
        assert processes.replaced == 1 and sample.size > 0
        first = processes.children._children[0].process.pid
        os.kill(first, signal.SIGKILL)  # killed from outside while idle
        for _ in range(200):
            if processes.replaced == 2 and processes.children._children:
                break
            await asyncio.sleep(0.05)
        _shared, sample = await processes.prepare(png_bytes(16, 16), "image/png", None)
        assert processes.children._children[0].process.pid != first and sample.size > 0
    finally:
        processes.close()
    assert not (tmp_path / processes.folder.name).exists()


@dataclass
class _Model:
    providers: list[str]
    fast: bool

    @property
    def info(self) -> ModelInfo:
        return ModelInfo(name="m", version="v", providers=self.providers)


GPU = _Model(["CUDAExecutionProvider", "CPUExecutionProvider"], fast=False)
CPU_SLOW = _Model(["CPUExecutionProvider"], fast=False)
CPU_FAST = _Model(["CPUExecutionProvider"], fast=True)


@pytest.mark.parametrize(
    ("cpus", "model", "wanted"),
    [(2, GPU, 0), (4, GPU, 3), (16, GPU, 15), (16, CPU_FAST, 15), (16, CPU_SLOW, 0)],
)
def test_by_default_processes_from_four_cpus_unless_the_model_bounds_the_worker(
    monkeypatch: pytest.MonkeyPatch, cpus: int, model: _Model, wanted: int
) -> None:
    monkeypatch.setattr(cpuprocs, "usable_cpus", lambda: cpus)
    made = cpu_processes(WorkerSettings(), cast(BatchModel, model), screening=False)
    assert (made.processes if made else 0) == wanted
    if made is not None:
        made.folder.rmdir()


def test_explicit_setting_wins_but_never_with_a_screen() -> None:
    slow = cast(BatchModel, CPU_SLOW)
    assert cpu_processes(WorkerSettings(cpu_processes=0), slow, screening=False) is None
    assert cpu_processes(WorkerSettings(cpu_processes=2), slow, screening=True) is None
    made = cpu_processes(WorkerSettings(cpu_processes=2), slow, screening=False)
    assert made is not None and made.processes == 2
    made.folder.rmdir()


async def test_a_child_that_cannot_build_its_task_leaves_the_stages_in_threads(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    processes = CpuProcesses(2, "tiny", "no_such_module_here:Task", MAX_PIXELS, folder=tmp_path)
    try:
        with pytest.raises(TaskLoadError, match="no_such_module_here"):
            await processes.start()
        await processes.start_or_stay_in_threads()
        assert not processes.ready and not processes.children._children
        assert "stay in threads" in caplog.text
    finally:
        processes.close()


async def test_with_every_child_gone_a_call_fails_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    processes = CpuProcesses(1, "tiny", None, MAX_PIXELS, folder=tmp_path)
    await processes.start()
    try:
        shared, _ = await processes.prepare(png_bytes(16, 16), "image/png", None)

        def no_start(*args: object) -> None:
            raise RuntimeError("no room for another process")

        monkeypatch.setattr(cpuchildren, "_spawn", no_start)
        os.kill(processes.children.pids[0], signal.SIGKILL)
        for _ in range(200):
            if not processes.children.pids and not processes.ready:
                break
            await asyncio.sleep(0.05)
        row = np.zeros((1, 1), dtype=np.float32)
        with pytest.raises(TransientError, match="no CPU process"):
            await asyncio.wait_for(processes.postprocess(shared, row, ("scores",)), 5)
        with pytest.raises(TransientError):
            await asyncio.wait_for(processes.prepare(png_bytes(), "image/png", None), 5)
        processes.discard(shared)
        assert not any(slot.busy or slot.lent for slot in processes._slots)  # none leaked
    finally:
        processes.close()


async def test_a_slot_a_child_may_still_write_is_not_lent_again(tmp_path: Path) -> None:
    ref = "tests.function.engine.crashing_task:CrashingTask"
    processes = CpuProcesses(1, "tiny", ref, MAX_PIXELS, folder=tmp_path)
    await processes.start()
    try:
        slow = png_bytes(SLOWER_WIDTH, 8)  # its child takes SLOWER_S over it
        preparing = asyncio.create_task(processes.prepare(slow, "image/png", None))
        for _ in range(100):  # until the child has it
            if any(child.calls for child in processes.children._children):
                break
            await asyncio.sleep(0.005)
        preparing.cancel()
        with pytest.raises(asyncio.CancelledError):
            await preparing
        busy = processes._slots[0]
        assert busy.busy and not busy.lent and busy not in processes._free
        other, _ = await processes.prepare(png_bytes(16, 16), "image/png", None)
        assert other.slot is not busy  # waited behind the slow one, in a slot of its own
        assert not busy.busy and busy in processes._free  # back once the child was done
    finally:
        processes.close()


async def test_no_room_for_the_row_postprocesses_in_the_worker(
    remove_bg: CpuProcesses, monkeypatch: pytest.MonkeyPatch, photos: dict[str, Path]
) -> None:
    shared, _ = await remove_bg.prepare(_png(photos["coffee"]), "image/png", None)

    def full(fd: int, offset: int, data: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stages, "write_at", full)
    row = np.zeros((1, 320, 320), dtype=np.float32)
    assert await remove_bg.postprocess(shared, row, ("mask",)) is None
    image = remove_bg.image(shared)
    assert image.size == (512, 512) and image.mode == "RGB"
    with pytest.raises(NoRoom):
        await remove_bg.prepare(png_bytes(), "image/png", None)


def test_a_child_without_room_for_the_sample_says_no_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slot = tmp_path / "slot"
    data = png_bytes(32, 32)
    slot.write_bytes(data)
    stages.start("tiny", None)

    def full(fd: int, offset: int, data: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(stages, "write_at", full)
    with pytest.raises(NoRoom, match="No space"):
        stages.prepare(str(slot), len(data), "image/png", MAX_PIXELS, None)


def _jpeg_with_profile(megabytes: int) -> bytes:
    buffer = io.BytesIO()
    profile = np.random.default_rng(3).bytes(megabytes * 1024 * 1024)
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buffer, "JPEG", icc_profile=profile)
    return buffer.getvalue()


async def test_a_large_colour_profile_stays_in_the_slot(tmp_path: Path) -> None:
    """Before, the profile went through the pipes with each job: two such jobs on one
    child blocked the worker's send and the child's reply on each other, for good."""
    data = _jpeg_with_profile(12)
    processes = CpuProcesses(1, "remove-bg", None, MAX_PIXELS, folder=tmp_path)
    await processes.start()
    try:
        first, _ = await processes.prepare(data, "image/jpeg", None)
        assert first.prepared.info_bytes > 12 * 1024 * 1024
        second = asyncio.create_task(processes.prepare(data, "image/jpeg", None))
        await asyncio.sleep(0)  # its request is out; the child works on it
        row = np.zeros((1, 320, 320), dtype=np.float32)
        post = asyncio.create_task(processes.postprocess(first, row, ("cutout",)))
        _, made = await asyncio.wait_for(asyncio.gather(second, post), 30)
        assert made is not None
        cutout = base64.b64decode(made[0]["cutout"].data)
        assert b"iCCP" in cutout[:64]  # the profile came with the image, into its PNG
    finally:
        processes.close()


def test_a_gone_workers_slot_folder_is_removed_and_a_live_ones_kept(tmp_path: Path) -> None:
    gone = tmp_path / "surge-cpu-999999-12345-abcd"  # no such pid
    gone.mkdir()
    (gone / "slot-0").write_bytes(b"x" * 1000)
    mine = shared_folder(tmp_path)
    again = shared_folder(tmp_path)
    assert not gone.exists()
    assert mine.exists() and again.exists()  # this process is alive: both kept
    assert mine.name.startswith(f"surge-cpu-{os.getpid()}-")


async def test_calls_waiting_when_the_last_child_dies_give_their_slots_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ref = "tests.function.engine.crashing_task:CrashingTask"
    processes = CpuProcesses(1, "tiny", ref, MAX_PIXELS, folder=tmp_path)
    await processes.start()

    def no_start(*args: object) -> None:
        raise RuntimeError("no room for another process")

    monkeypatch.setattr(cpuchildren, "_spawn", no_start)
    try:
        jobs = [processes.prepare(png_bytes(CRASH_WIDTH, 8), "image/png", None)]
        jobs += [processes.prepare(png_bytes(16, 16), "image/png", None) for _ in range(3)]
        outcomes = await asyncio.gather(*jobs, return_exceptions=True)
        assert all(isinstance(outcome, TransientError) for outcome in outcomes)
        await asyncio.sleep(0.2)
        assert len(processes._slots) == 4
        assert all(slot in processes._free for slot in processes._slots)
    finally:
        processes.close()


async def test_free_slots_keep_their_memory_only_up_to_the_caps(
    remove_bg: CpuProcesses, monkeypatch: pytest.MonkeyPatch, photos: dict[str, Path]
) -> None:
    data = _png(photos["astronaut"])
    made = [await remove_bg.prepare(data, "image/png", None) for _ in range(4)]
    one_slot = made[0][0].slot.size()
    monkeypatch.setattr(cpuprocs, "KEPT_BYTES", 2 * one_slot + 1)  # room for two
    while made:  # each sample (a view of its slot) goes with its tuple, then the job
        remove_bg.discard(made.pop()[0])
    sizes = sorted(slot.size() for slot in remove_bg._free)
    assert sizes == [0, 0, one_slot, one_slot] and remove_bg.kept == 2 * one_slot
    monkeypatch.setattr(cpuprocs, "SLOT_KEEP_BYTES", one_slot - 1)  # now each is too big
    shared, sample = await remove_bg.prepare(data, "image/png", None)
    del sample
    remove_bg.discard(shared)
    assert shared.slot.size() == 0 and remove_bg.kept <= 2 * one_slot


async def test_a_second_discard_never_frees_the_slot_another_job_now_holds(
    remove_bg: CpuProcesses,
) -> None:
    first, _ = await remove_bg.prepare(png_bytes(64, 64), "image/png", None)
    remove_bg.discard(first)
    second, _ = await remove_bg.prepare(png_bytes(64, 64), "image/png", None)
    assert second.slot is first.slot
    remove_bg.discard(first)  # again: before, the slot went back while `second` held it
    assert second.slot.lent and second.slot not in remove_bg._free
    remove_bg.discard(second)
    assert remove_bg._free.count(second.slot) == 1
