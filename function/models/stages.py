"""A task's CPU stages in a process of their own: the child side of
`function.engine.cpuprocs`.

A job borrows a slot, a file in a folder in memory (`/dev/shm` where it exists) that the
worker reuses from job to job, so its pages are never faulted in again. The worker
writes the input at the slot's start; `prepare` decodes and preprocesses it and leaves
the sample and then the decoded pixels there (the worker maps the sample); the worker
writes the model's row after them; `postprocess` rebuilds the image from the slot and
leaves the pickled outputs after the row. Only descriptions and outputs go through the
pipes, which cost far more per byte. A slot that cannot take a sample and its pixels (a
full `/dev/shm`) raises `NoRoom`: the worker then runs that job's stages itself.

A child builds its own Task (`start`), so a task runs here only if its factory gives the
same task in any process. An image keeps the `info` entries in `SHARED_INFO` only, and
its `format` is None.
"""

from __future__ import annotations

import os
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Final

import numpy as np
from PIL import Image

from function.contract.wire import Output
from function.models.base import Task
from function.models.imaging import SOURCE_SIZE, decode_image
from function.models.registry import load_task

__all__ = [
    "CALLS",
    "SHARED_INFO",
    "NoRoom",
    "Prepared",
    "image_at",
    "postprocess",
    "prepare",
    "read_at",
    "serve",
    "start",
    "write_at",
]

SHARED_INFO: Final = (SOURCE_SIZE, "dpi", "icc_profile")  # the info a child's image keeps
_task: Task | None = None
_files: dict[str, int] = {}


def start(function: str, task_ref: str | None) -> None:
    """Pool initializer: build this process's Task."""
    global _task
    _task = load_task(function, task_ref)


def _the_task() -> Task:
    if _task is None:
        raise RuntimeError("a CPU stage ran in a process that was not started with a task")
    return _task


class NoRoom(Exception):
    """The slot folder has no room for this job's data."""


@dataclass(frozen=True)
class Prepared:
    """A decoded, preprocessed job, as a slot holds it: the sample (shape and dtype), then
    the image's pixels (mode and size), then its kept info, pickled (`info_bytes` long:
    a colour profile may be megabytes, so it never goes through a pipe); and the time
    it took. The model's row goes at `row_at`."""

    shape: tuple[int, ...]
    dtype: str
    mode: str
    size: tuple[int, int]
    info_bytes: int
    prep_ns: int

    @property
    def sample_bytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize

    @property
    def image_bytes(self) -> int:
        return self.size[0] * self.size[1] * len(self.mode)

    @property
    def row_at(self) -> int:
        return self.sample_bytes + self.image_bytes + self.info_bytes


def _fd(path: str) -> int:
    """This process's descriptor for a slot file (kept open: slots are reused)."""
    fd = _files.get(path)
    if fd is None:
        fd = _files[path] = os.open(path, os.O_RDWR)
    return fd


def write_at(fd: int, offset: int, data: bytes | memoryview) -> None:
    """Write `data` into file `fd` from `offset` on."""
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def read_at(fd: int, offset: int, size: int) -> bytes:
    """`size` bytes of file `fd` from `offset` on."""
    data = os.pread(fd, size, offset)
    if len(data) != size:
        raise RuntimeError(f"slot file ended {size - len(data)} bytes early")
    return data


def prepare(
    path: str, size: int, content_type: str | None, max_pixels: int, target: Any
) -> Prepared:
    """Decode the `size` input bytes at the start of slot `path` (reduced for `target`),
    preprocess, and leave the sample and the pixels there. Raises `BadInput` for a bad
    image, `NoRoom` when the slot cannot take the sample and pixels."""
    started = time.perf_counter_ns()
    fd = _fd(path)
    image = decode_image(read_at(fd, 0, size), content_type, max_pixels=max_pixels, target=target)
    sample = np.ascontiguousarray(_the_task().preprocess(image))
    pixels = image.tobytes()
    info = pickle.dumps({key: image.info[key] for key in SHARED_INFO if key in image.info})
    try:
        write_at(fd, 0, sample.data)
        write_at(fd, sample.nbytes, pixels)
        write_at(fd, sample.nbytes + len(pixels), info)
    except OSError as exc:
        raise NoRoom(f"slot {path}: {exc}") from None
    elapsed = time.perf_counter_ns() - started
    shape = tuple(sample.shape)
    return Prepared(shape, sample.dtype.str, image.mode, image.size, len(info), elapsed)


def image_at(fd: int, prepared: Prepared) -> Image.Image:
    """The decoded image a slot holds after its sample, with its kept info."""
    at = prepared.sample_bytes
    image = Image.frombytes(prepared.mode, prepared.size, read_at(fd, at, prepared.image_bytes))
    image.info.update(pickle.loads(read_at(fd, at + prepared.image_bytes, prepared.info_bytes)))
    return image


def postprocess(
    path: str,
    prepared: Prepared,
    row_shape: tuple[int, ...],
    row_dtype: str,
    outputs: tuple[str, ...],
) -> tuple[int, dict[str, Output] | None, int]:
    """Postprocess the row (after the pixels in slot `path`) against the image; leave
    the pickled outputs after the row: (their length, the outputs instead when the slot
    could not take them, the time it took)."""
    started = time.perf_counter_ns()
    fd = _fd(path)
    image = image_at(fd, prepared)
    at = prepared.row_at
    row_bytes = int(np.prod(row_shape)) * np.dtype(row_dtype).itemsize
    row = np.frombuffer(read_at(fd, at, row_bytes), row_dtype).reshape(row_shape)
    made = _the_task().postprocess(row, image, outputs)
    elapsed = time.perf_counter_ns() - started
    packed = pickle.dumps(made, protocol=pickle.HIGHEST_PROTOCOL)
    try:
        write_at(fd, at + row_bytes, packed)
    except OSError:
        return 0, made, elapsed  # through the pipe: the worker sends it nothing large
    return len(packed), None, elapsed


CALLS: Final[dict[str, Callable[..., Any]]] = {"prepare": prepare, "postprocess": postprocess}


def serve(conn: Connection, function: str, task_ref: str | None) -> None:
    """A child's life: build the task, say so, then answer `(id, call, args)` requests
    with `(id, True, result)` or `(id, False, exception)` until the worker hangs up."""
    try:
        start(function, task_ref)
    except BaseException as exc:
        conn.send((0, False, _sendable(exc)))
        return
    conn.send((0, True, os.getpid()))
    while True:
        try:
            call_id, name, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            reply = (call_id, True, CALLS[name](*args))
        except Exception as exc:
            reply = (call_id, False, _sendable(exc))
        try:
            _send(conn, reply)
        except OSError:  # the worker hung up
            return


def _send(conn: Connection, reply: tuple[int, bool, Any]) -> None:
    """Send a reply; one that does not pickle becomes an error naming why."""
    try:
        conn.send(reply)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        call_id = reply[0]
        conn.send((call_id, False, RuntimeError(f"a result that cannot be sent: {exc}")))


def _sendable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling, else a RuntimeError naming it."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def main(argv: list[str]) -> None:
    """A child's entry, with `FD FUNCTION [TASK_REF]`: serve on socket FD."""
    fd, function, *task_ref = argv
    serve(Connection(int(fd)), function, task_ref[0] if task_ref else None)
