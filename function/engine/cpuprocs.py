"""`CpuProcesses`: a worker's decode, preprocess, postprocess and encoding in processes
of their own, so that they use every core instead of waiting on one interpreter lock.

The pool starts in the background once the worker is up; until then (and when it is
off) the stages run in the worker's threads. A job borrows a slot (see
`function.models.stages`) until it settles (`discard`); slots are files in a private
folder under `/dev/shm` (or the temporary folder), removed when the pool closes. A
process that dies (a decoder's crash, the kernel's OOM killer) breaks the pool: it is
replaced, and the jobs it held fail with a `TransientError`, so they are retried and a
job that kills it every time is dead-lettered.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import mmap
import os
import pickle
import shutil
import socket
import subprocess
import sys
import tempfile
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Final

import numpy as np

from function.contract.errors import TransientError
from function.contract.settings import WorkerSettings
from function.contract.wire import Output
from function.models import stages
from function.models.hardware import usable_cpus
from function.models.stages import Prepared

__all__ = ["CpuProcesses", "NoRoom", "SharedJob", "cpu_processes", "shared_folder"]

log = logging.getLogger("surge.cpuprocs")
SHM: Final = Path("/dev/shm")
_CHILD: Final = "import sys; from function.models.stages import main; main(sys.argv[1:])"
AUTO_FROM_CPUS: Final = 4  # below, threads: processes gained nothing measurable on 2
SLOT_KEEP_BYTES: Final = 16 * 1024 * 1024  # a slot grown past this is emptied when freed


class NoRoom(Exception):
    """The slot folder cannot take the job's input: run its stages in a thread."""


def cpu_processes(settings: WorkerSettings, screening: bool) -> CpuProcesses | None:
    """The CPU processes `settings` ask for (unset: one per usable CPU but one, where
    there are `AUTO_FROM_CPUS` or more), or None: the stages stay in threads (always with
    a `screening` worker, whose screen needs the decoded image in the worker)."""
    wanted = settings.cpu_processes
    if wanted is None:
        cpus = usable_cpus()
        wanted = cpus - 1 if cpus >= AUTO_FROM_CPUS else 0
    if wanted == 0 or screening:
        return None
    return CpuProcesses(wanted, settings.function, settings.task, settings.max_pixels)


def shared_folder(base: Path | None = None) -> Path:
    """A new private folder for slots: under `base`, else `/dev/shm` where it is
    writable (memory), else the temporary folder."""
    if base is None:
        base = SHM if SHM.is_dir() and os.access(SHM, os.W_OK) else Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix="surge-cpu-", dir=base))


@dataclass(eq=False)
class _Slot:
    path: str
    fd: int
    view: mmap.mmap | None = None  # the worker's map of it, once a sample was read

    def sample(self, prepared: Prepared) -> np.ndarray:
        """The sample at the slot's start, as a view of the slot."""
        if self.view is None or len(self.view) < prepared.sample_bytes:
            self.view = mmap.mmap(self.fd, 0, prot=mmap.PROT_READ)  # grown: map it anew
        count = int(np.prod(prepared.shape))
        return np.frombuffer(self.view, prepared.dtype, count).reshape(prepared.shape)

    def empty(self) -> None:
        """Give a grown slot's memory back, unless a sample view still holds its map."""
        if os.fstat(self.fd).st_size <= SLOT_KEEP_BYTES:
            return
        if self.view is not None:
            try:
                self.view.close()
            except BufferError:
                return
            self.view = None
        os.ftruncate(self.fd, 0)


@dataclass(eq=False)
class SharedJob:
    """A job prepared in a CPU process: its slot and what the process said of it."""

    slot: _Slot
    prepared: Prepared = field(default_factory=lambda: Prepared((), "f", "", (0, 0), {}, 0))
    done: bool = False

    @property
    def pixels(self) -> int:
        """The decoded image's pixel count."""
        return self.prepared.size[0] * self.prepared.size[1]


@dataclass(eq=False)
class _Child:
    """One CPU process, its end of the pipe and the calls it holds."""

    process: subprocess.Popen[bytes]
    conn: Connection
    calls: dict[int, asyncio.Future[Any]] = field(default_factory=dict)


class CpuProcesses:
    """`processes` children that run one task's CPU stages (`function.models.stages`),
    each given at most `DEPTH` calls at once; the rest wait here, first come first
    served, for whichever child frees up first."""

    DEPTH: Final = 2

    def __init__(
        self,
        processes: int,
        function: str,
        task_ref: str | None,
        max_pixels: int,
        folder: Path | None = None,
    ) -> None:
        self.processes = processes
        self._init_args = (function, task_ref)
        self._max_pixels = max_pixels
        self.folder = shared_folder(folder)
        self._free: list[_Slot] = []
        self._slots: list[_Slot] = []
        self._children: list[_Child] = []
        self._waiting: deque[tuple[int, str, tuple[Any, ...], asyncio.Future[Any]]] = deque()
        self._ids = itertools.count(1)
        self._closed = False
        self._spawning = 0
        self.ready = False
        self.replaced = 0  # children replaced after one died

    def _spawn(self) -> tuple[subprocess.Popen[bytes], Connection]:
        """Start one child (`python -m function.models.stages`, on one end of a socket
        pair) and wait until it has built its task (blocking)."""
        ours, theirs = socket.socketpair()
        for end in (ours, theirs):  # room for a large colour profile without a wait
            end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * 1024 * 1024)
        function, task_ref = self._init_args
        command = [sys.executable, "-c", _CHILD, str(theirs.fileno()), function]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        try:
            process = subprocess.Popen(
                [*command, *([task_ref] if task_ref else [])], pass_fds=[theirs.fileno()], env=env
            )
        finally:
            theirs.close()
        conn = Connection(ours.detach())
        try:
            _, ok, said = conn.recv()
        except (EOFError, OSError):
            conn.close()
            code = process.wait()
            raise RuntimeError(
                f"a CPU process exited with code {code} before it was ready"
            ) from None
        if not ok:
            conn.close()
            process.wait()
            raise said
        return process, conn

    async def start(self) -> None:
        """Start every child (each builds its task); the stages move here once they are
        up. Raises what stopped the first child when none started."""
        loop = asyncio.get_running_loop()
        spawned = await asyncio.gather(
            *(asyncio.to_thread(self._spawn) for _ in range(self.processes)),
            return_exceptions=True,
        )
        failed = [outcome for outcome in spawned if isinstance(outcome, BaseException)]
        for outcome in spawned:
            if not isinstance(outcome, BaseException):
                self._adopt(loop, *outcome)
        if failed and not self._children:
            raise failed[0]
        if failed:
            log.error(
                "%d of %d CPU processes did not start: %r", len(failed), len(spawned), failed[0]
            )
        self.ready = not self._closed
        pids = sorted(child.process.pid for child in self._children)
        log.info("CPU stages run in %d processes (pids %s)", len(pids), pids)

    async def start_or_stay_in_threads(self) -> None:
        """`start`; if it fails, log why and leave the stages in threads."""
        try:
            await self.start()
        except Exception:
            log.exception("the CPU processes did not start; the stages stay in threads")

    def _adopt(
        self, loop: asyncio.AbstractEventLoop, process: subprocess.Popen[bytes], conn: Connection
    ) -> None:
        if self._closed:
            conn.close()
            process.kill()
            return
        child = _Child(process, conn)
        self._children.append(child)
        loop.add_reader(conn.fileno(), self._on_reply, child)
        self._dispatch()

    def _on_reply(self, child: _Child) -> None:
        try:  # one reply a call: the loop calls again while more wait in the pipe
            call_id, ok, value = child.conn.recv()
        except (EOFError, OSError):
            self._lost(child)
            return
        except Exception:  # a reply that does not unpickle: the child is not to be trusted
            log.exception("a CPU process sent a reply that could not be read; stopping it")
            self._lost(child)
            return
        future = child.calls.pop(call_id, None)
        if future is not None and not future.done():
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)
        self._dispatch()

    def _lost(self, child: _Child) -> None:
        """A child died: fail what it held (retried), and start another."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(child.conn.fileno())
        child.conn.close()
        self._children.remove(child)
        with contextlib.suppress(ProcessLookupError):
            child.process.kill()  # when it only hung up, or sent what could not be read
        reaped = loop.run_in_executor(None, child.process.wait)  # no zombie left behind
        reaped.add_done_callback(
            lambda done: log.error("a CPU process ended (exit code %s)", done.result())
        )
        for future in child.calls.values():
            if not future.done():
                future.set_exception(TransientError("the CPU process holding the job died"))
        child.calls.clear()
        if self._closed:
            return
        self.replaced += 1
        log.error("a CPU process died; starting another")
        self._spawning += 1
        task = loop.create_task(asyncio.to_thread(self._spawn))
        task.add_done_callback(lambda done: self._respawned(loop, done))

    def _respawned(self, loop: asyncio.AbstractEventLoop, done: asyncio.Task[Any]) -> None:
        self._spawning -= 1
        if done.cancelled() or done.exception() is not None:
            log.error("could not start a CPU process: %r", done.exception())
            if not self._children and not self._spawning:
                self.ready = False  # back to threads
                self._fail_waiting(TransientError("no CPU process is running"))
            return
        self._adopt(loop, *done.result())

    def _fail_waiting(self, error: Exception) -> None:
        while self._waiting:
            _, _, _, future = self._waiting.popleft()
            if not future.done():
                future.set_exception(error)

    def _dispatch(self) -> None:
        while self._waiting:
            child = min(self._children, key=lambda c: len(c.calls), default=None)
            if child is None or len(child.calls) >= self.DEPTH:
                return
            call_id, name, args, future = self._waiting.popleft()
            if future.done():
                continue  # cancelled while it waited
            child.calls[call_id] = future
            try:
                child.conn.send((call_id, name, args))
            except (OSError, ValueError):
                self._lost(child)

    async def _call(self, name: str, *args: Any) -> Any:
        if self._closed:
            raise TransientError("the worker's CPU processes are closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting.append((next(self._ids), name, args, future))
        self._dispatch()
        return await future

    def _take(self) -> _Slot:
        if self._free:
            return self._free.pop()
        path = str(self.folder / f"slot-{len(self._slots)}")
        slot = _Slot(path, os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        self._slots.append(slot)
        return slot

    async def prepare(
        self, data: bytes, content_type: str | None, target: tuple[int, int] | None
    ) -> tuple[SharedJob, np.ndarray]:
        """Decode and preprocess `data` in a process: (the job's slot, its sample).
        Raises `NoRoom` when the slot folder cannot take `data`."""
        shared = SharedJob(self._take())
        try:
            stages.write_at(shared.slot.fd, 0, data)
        except OSError as exc:
            self.discard(shared)
            raise NoRoom(str(exc)) from exc
        try:
            prepared: Prepared = await self._call(
                "prepare", shared.slot.path, len(data), content_type, self._max_pixels, target
            )
            shared.prepared = prepared
            if prepared.inline is not None:
                return shared, prepared.inline[0]
            return shared, shared.slot.sample(prepared)
        except BaseException:
            self.discard(shared)
            raise

    async def postprocess(
        self, shared: SharedJob, row: np.ndarray, outputs: tuple[str, ...]
    ) -> tuple[dict[str, Output], int]:
        """Postprocess `row` against the job's image in a process: (outputs, ns)."""
        row = np.ascontiguousarray(row)
        prepared = shared.prepared
        at = prepared.sample_bytes + prepared.image_bytes
        inline_row: np.ndarray | None = None
        try:
            stages.write_at(shared.slot.fd, at, row.data)
        except OSError:
            inline_row = row
        args = (tuple(row.shape), row.dtype.str, outputs, inline_row)
        length, made, elapsed = await self._call("postprocess", shared.slot.path, prepared, *args)
        if made is None:
            made = pickle.loads(stages.read_at(shared.slot.fd, at + row.nbytes, length))
        return made, elapsed

    def discard(self, shared: SharedJob) -> None:
        """The job settled: its slot is free again; safe to call again."""
        if shared.done:
            return
        shared.done = True
        if self._closed:
            return
        shared.slot.empty()
        self._free.append(shared.slot)

    def close(self) -> None:
        """Stop the processes, fail the calls they hold, remove every slot."""
        self._closed = True
        self.ready = False
        error = TransientError("the worker's CPU processes closed")
        self._fail_waiting(error)
        for child in self._children:
            for future in child.calls.values():
                if not future.done():
                    future.set_exception(error)
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                asyncio.get_running_loop().remove_reader(child.conn.fileno())
            child.conn.close()  # the child reads EOF and exits
        for child in self._children:
            try:
                child.process.wait(2)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        self._children.clear()
        for slot in self._slots:
            os.close(slot.fd)
        shutil.rmtree(self.folder, ignore_errors=True)
