"""`CpuProcesses`: a worker's decode, preprocess, postprocess and encoding in processes
of their own (`cpuchildren`), so that they use every core instead of waiting on one
interpreter lock.

The processes start in the background once the worker is up; until then (and when they
are off) the stages run in the worker's threads. A job borrows a slot (see
`function.models.stages`) until it settles (`discard`); slots are files in a private
folder under `/dev/shm` (or the temporary folder), reused from job to job (a free slot
keeps its memory, up to `SLOT_KEEP_BYTES`, and all of them up to `KEPT_BYTES`) and
removed when the pool closes. A slot a child may still write to is never lent again until the
child is done with it. A slot folder without room (`NoRoom`) sends the job back to the
worker's threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mmap
import os
import pickle
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from PIL import Image

from function.contract.settings import WorkerSettings
from function.contract.wire import Output
from function.engine.batchmodel import BatchModel
from function.engine.cpuchildren import Children
from function.models import stages
from function.models.hardware import usable_cpus
from function.models.stages import NoRoom, Prepared

__all__ = [
    "CpuProcesses",
    "NoRoom",
    "SharedJob",
    "cpu_processes",
    "model_bound",
    "shared_folder",
    "start_ticks",
]

log = logging.getLogger("surge.cpuprocs")
SHM: Final = Path("/dev/shm")
AUTO_FROM_CPUS: Final = 4  # below, threads: processes gained little on 2, for 72 MB each
LOOP_WRITE_BYTES: Final = 1024 * 1024  # a larger input is written into its slot off the loop
SLOT_KEEP_BYTES: Final = 16 * 1024 * 1024  # a slot grown past this is emptied when freed
KEPT_BYTES: Final = 256 * 1024 * 1024  # what the free slots may keep between them


def model_bound(model: BatchModel) -> bool:
    """Whether the model, not the CPU stages, bounds a worker: it runs on the CPU and a
    batch takes more than a thread hop (there the cores run inference)."""
    return model.info.providers[:1] == ["CPUExecutionProvider"] and not model.fast


def cpu_processes(
    settings: WorkerSettings, model: BatchModel, *, screening: bool
) -> CpuProcesses | None:
    """The CPU processes `settings` ask for, or None: the stages stay in threads. Unset,
    one per usable CPU but one where there are `AUTO_FROM_CPUS` or more and the model
    does not bound the worker anyway (`model_bound`). Never with a `screening` worker,
    whose screen needs the decoded image in the worker."""
    wanted = settings.cpu_processes
    if wanted is None:
        cpus = usable_cpus()
        wanted = cpus - 1 if cpus >= AUTO_FROM_CPUS and not model_bound(model) else 0
    if wanted == 0 or screening:
        return None
    return CpuProcesses(wanted, settings.function, settings.task, settings.max_pixels)


def start_ticks(pid: int | str = "self") -> int | None:
    """When process `pid` started, in clock ticks after boot (field 22 of its /proc
    stat), or None where that cannot be read."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _remove_stale(base: Path) -> None:
    """Remove the slot folders of workers that are gone (killed before they closed):
    each is named after its worker's pid and start time."""
    for folder in base.glob("surge-cpu-*-*-*"):
        _, _, pid, started, _ = folder.name.split("-", 4)
        if pid.isdigit() and str(start_ticks(int(pid))) != started:
            shutil.rmtree(folder, ignore_errors=True)


def shared_folder(base: Path | None = None) -> Path:
    """A new private folder for slots: under `base`, else `/dev/shm` where it is
    writable (memory), else the temporary folder. Stale folders there go first."""
    if base is None:
        base = SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else Path(tempfile.gettempdir())
    started = start_ticks()
    if started is None:  # not Linux: no way to tell a stale folder
        return Path(tempfile.mkdtemp(prefix="surge-cpu-", dir=base))
    _remove_stale(base)
    return Path(tempfile.mkdtemp(prefix=f"surge-cpu-{os.getpid()}-{started}-", dir=base))


@dataclass(eq=False)
class _Slot:
    path: str
    fd: int
    view: mmap.mmap | None = None  # the worker's map of it, once a sample was read
    busy: bool = False  # a child may be writing to it
    lent: bool = False  # a job holds it
    kept: int = 0  # bytes of memory it keeps while free

    def sample(self, prepared: Prepared) -> np.ndarray:
        """The sample at the slot's start, as a view of the slot."""
        if self.view is None or len(self.view) < prepared.sample_bytes:
            self.view = mmap.mmap(self.fd, 0, prot=mmap.PROT_READ)  # grown: map it anew
        count = int(np.prod(prepared.shape))
        return np.frombuffer(self.view, prepared.dtype, count).reshape(prepared.shape)

    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def empty(self) -> int:
        """Give the slot's memory back, unless a sample view still holds its map; the
        bytes it keeps."""
        if self.view is not None:
            try:
                self.view.close()
            except BufferError:
                return self.size()
            self.view = None
        os.ftruncate(self.fd, 0)
        return 0


@dataclass(eq=False)
class SharedJob:
    """A job prepared in a CPU process: its slot and what the process said of it."""

    slot: _Slot
    prepared: Prepared
    discarded: bool = False  # its slot went back (`CpuProcesses.discard`)

    @property
    def pixels(self) -> int:
        """The decoded image's pixel count."""
        return self.prepared.size[0] * self.prepared.size[1]


class CpuProcesses:
    """Slots, and the `processes` children (`Children`) that run one task's CPU stages."""

    DEPTH: Final = Children.DEPTH

    def __init__(
        self,
        processes: int,
        function: str,
        task_ref: str | None,
        max_pixels: int,
        folder: Path | None = None,
    ) -> None:
        self.processes = processes
        self.children = Children(processes, function, task_ref)
        self._max_pixels = max_pixels
        self.folder = shared_folder(folder)
        self._free: list[_Slot] = []
        self._slots: list[_Slot] = []
        self.kept = 0  # bytes the free slots keep between them (at most `KEPT_BYTES`)
        self._closed = False

    @property
    def ready(self) -> bool:
        return self.children.ready and not self._closed

    @property
    def running(self) -> int:
        """Children running the stages now (0: the worker's threads run them)."""
        return len(self.children.pids) if self.ready else 0

    @property
    def room(self) -> int:
        """Jobs the children can hold at once."""
        return self.processes * self.DEPTH

    @property
    def replaced(self) -> int:
        return self.children.replaced

    async def start(self) -> None:
        """Start the children; the stages move to them once one is up."""
        await self.children.start()

    async def start_or_stay_in_threads(self) -> None:
        """`start`; if it fails, log why and leave the stages in threads."""
        try:
            await self.start()
        except Exception:
            log.exception("the CPU processes did not start; the stages stay in threads")

    def _take(self) -> _Slot:
        if self._free:
            slot = self._free.pop()
            self.kept -= slot.kept
            slot.kept = 0
        else:
            path = str(self.folder / f"slot-{len(self._slots)}")
            slot = _Slot(path, os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
            self._slots.append(slot)
        slot.lent = True
        return slot

    def _give_back(self, slot: _Slot) -> None:
        """Lend the slot again once no job holds it and no child writes to it; it keeps
        its memory (no page faults next time) unless it grew past `SLOT_KEEP_BYTES` or
        the free slots would keep more than `KEPT_BYTES`."""
        if slot.lent or slot.busy or self._closed:
            return
        size = slot.size()
        if size > SLOT_KEEP_BYTES or self.kept + size > KEPT_BYTES:
            size = slot.empty()
        slot.kept = size
        self.kept += size
        self._free.append(slot)

    def _idle(self, slot: _Slot) -> None:
        slot.busy = False
        self._give_back(slot)

    def _return(self, slot: _Slot) -> None:
        """No job holds `slot` any more."""
        slot.lent = False
        self._give_back(slot)

    async def _in_child(self, slot: _Slot, name: str, *args: object) -> Any:
        slot.busy = True
        return await self.children.call(name, (slot.path, *args), lambda: self._idle(slot))

    async def prepare(
        self, data: bytes, content_type: str | None, target: tuple[int, int] | None
    ) -> tuple[SharedJob, np.ndarray]:
        """Decode and preprocess `data` in a process: (the job's slot, its sample, a view
        of the slot). Raises `NoRoom` when the slot folder cannot take the job, what the
        decode raises (`BadInput`), or `TransientError` when the process died."""
        slot = self._take()
        try:
            try:
                if len(data) > LOOP_WRITE_BYTES:
                    await asyncio.to_thread(stages.write_at, slot.fd, 0, data)
                else:
                    stages.write_at(slot.fd, 0, data)
            except OSError as exc:
                raise NoRoom(str(exc)) from exc
            made: Prepared = await self._in_child(
                slot, "prepare", len(data), content_type, self._max_pixels, target
            )
            return SharedJob(slot, made), slot.sample(made)
        except BaseException:
            self._return(slot)
            raise

    async def postprocess(
        self, shared: SharedJob, row: np.ndarray, outputs: tuple[str, ...]
    ) -> tuple[dict[str, Output], int] | None:
        """Postprocess `row` against the job's image in a process: (outputs, ns); None
        when the slot has no room for the row (postprocess `image(shared)` here)."""
        row = np.ascontiguousarray(row)
        prepared = shared.prepared
        at = prepared.row_at
        try:
            stages.write_at(shared.slot.fd, at, row.data)
        except OSError:
            return None
        args = (prepared, tuple(row.shape), row.dtype.str, outputs)
        length, made, elapsed = await self._in_child(shared.slot, "postprocess", *args)
        if made is None:
            made = pickle.loads(stages.read_at(shared.slot.fd, at + row.nbytes, length))
        return made, elapsed

    def image(self, shared: SharedJob) -> Image.Image:
        """The job's decoded image, read from its slot."""
        return stages.image_at(shared.slot.fd, shared.prepared)

    def discard(self, shared: SharedJob) -> None:
        """The job settled: its slot is lent again (once no child writes to it); safe to
        call again (the slot, which may be lent to another job by then, goes back once)."""
        if not shared.discarded:
            shared.discarded = True
            self._return(shared.slot)

    def close(self) -> None:
        """Stop the processes and remove every slot."""
        self._closed = True
        self.children.close()
        for slot in self._slots:
            with contextlib.suppress(OSError):
                os.close(slot.fd)
        shutil.rmtree(self.folder, ignore_errors=True)
