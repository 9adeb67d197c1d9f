"""`Children`: the worker's CPU processes themselves. Each is `python -c` serving
`function.models.stages` on one end of a socket pair, builds its own task, and is given
at most `DEPTH` calls at once; the other calls wait here, first come first served, for
whichever child frees up first. Replies are read on the event loop (`add_reader`); the
worker only ever sends small requests, so a send never waits on a busy child.

A child that dies (or sends what cannot be read) is killed, reaped off the loop and
replaced; the calls it held fail with a `TransientError`, so their jobs are retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Final

from function.contract.errors import TransientError

__all__ = ["Children"]

log = logging.getLogger("surge.cpuprocs")
_CHILD: Final = "import sys; from function.models.stages import main; main(sys.argv[1:])"
START_TIMEOUT_S: Final = 120.0  # a child that has not built its task by then is killed
_SEND_BUFFER: Final = 4 * 1024 * 1024  # room for a large colour profile without a wait


@dataclass(eq=False)
class _Call:
    """A request, its future, and what to do once no child works on it any more."""

    id: int
    name: str
    args: tuple[Any, ...]
    future: asyncio.Future[Any]
    idle: Callable[[], None]

    def fail(self, error: Exception) -> None:
        """No child works on it any more, and it ends with `error` (unless cancelled)."""
        self.idle()
        if not self.future.done():
            self.future.set_exception(error)


@dataclass(eq=False)
class _Child:
    """One CPU process, its end of the pipe and the calls it holds."""

    process: subprocess.Popen[bytes]
    conn: Connection
    calls: dict[int, _Call] = field(default_factory=dict)


def _spawn(
    function: str, task_ref: str | None, closed: Callable[[], bool] = lambda: False
) -> tuple[subprocess.Popen[bytes], Connection]:
    """Start one child and wait until it has built its task (blocking); give up, killing
    it, after `START_TIMEOUT_S` or once `closed()`."""
    ours, theirs = socket.socketpair()
    for end in (ours, theirs):
        end.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _SEND_BUFFER)
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
        deadline = time.monotonic() + START_TIMEOUT_S
        while not conn.poll(0.2):
            if closed() or time.monotonic() > deadline:
                process.kill()
                why = "closed" if closed() else f"not ready after {START_TIMEOUT_S:g} s"
                raise RuntimeError(f"a CPU process was {why}")
        _, ok, said = conn.recv()
    except (EOFError, OSError, RuntimeError) as exc:
        conn.close()
        code = process.wait()
        raise RuntimeError(f"a CPU process exited ({code}) before it was ready: {exc}") from None
    if not ok:
        conn.close()
        process.wait()
        raise said
    return process, conn


class Children:
    """`count` CPU processes serving one task's stages."""

    DEPTH: Final = 2

    def __init__(self, count: int, function: str, task_ref: str | None) -> None:
        self.count = count
        self._task = (function, task_ref)
        self._children: list[_Child] = []
        self._waiting: deque[_Call] = deque()
        self._ids = itertools.count(1)
        self._spawning = 0
        self._closed = False
        self.ready = False
        self.replaced = 0  # children replaced after one died

    def _is_closed(self) -> bool:
        return self._closed

    @property
    def pids(self) -> list[int]:
        return sorted(child.process.pid for child in self._children)

    async def start(self) -> None:
        """Start every child; ready once at least one is up. Raises what stopped the
        first child when none started."""
        loop = asyncio.get_running_loop()
        self._spawning += self.count
        try:
            spawned = await asyncio.gather(
                *(
                    asyncio.to_thread(_spawn, *self._task, self._is_closed)
                    for _ in range(self.count)
                ),
                return_exceptions=True,
            )
        finally:
            self._spawning -= self.count
        failed = [outcome for outcome in spawned if isinstance(outcome, BaseException)]
        if self._closed:
            return  # closed while they started: each was given up, or is reaped in _adopt
        for outcome in spawned:
            if not isinstance(outcome, BaseException):
                self._adopt(loop, *outcome)
        if failed and not self._children:
            raise failed[0]
        if failed:
            log.error(
                "%d of %d CPU processes did not start: %r", len(failed), self.count, failed[0]
            )
        self.ready = bool(self._children) and not self._closed
        log.info("CPU stages run in %d processes (pids %s)", len(self._children), self.pids)

    def _adopt(
        self, loop: asyncio.AbstractEventLoop, process: subprocess.Popen[bytes], conn: Connection
    ) -> None:
        if self._closed:
            conn.close()  # it reads the hang-up and exits
            _reap_later([process], grace_s=2.0)
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
        call = child.calls.pop(call_id, None)
        if call is not None:
            call.idle()
            if not call.future.done():
                if ok:
                    call.future.set_result(value)
                else:
                    call.future.set_exception(value)
        self._dispatch()

    def _lost(self, child: _Child) -> None:
        """A child died or is dropped: kill and reap it, fail what it held (retried),
        and start another."""
        loop = asyncio.get_running_loop()
        loop.remove_reader(child.conn.fileno())
        child.conn.close()
        self._children.remove(child)
        with contextlib.suppress(ProcessLookupError):
            child.process.kill()  # so it writes no more into a slot
        _reap_later([child.process], grace_s=0.0)
        for call in child.calls.values():
            call.fail(TransientError("the CPU process holding the job died"))
        child.calls.clear()
        if self._closed:
            return
        self.replaced += 1
        log.error("a CPU process died; starting another")
        self._spawning += 1
        respawn = loop.run_in_executor(None, _spawn, *self._task, self._is_closed)
        respawn.add_done_callback(lambda done: self._respawned(loop, done))

    def _respawned(self, loop: asyncio.AbstractEventLoop, done: asyncio.Future[Any]) -> None:
        self._spawning -= 1
        error = None if done.cancelled() else done.exception()
        if done.cancelled() or error is not None:
            log.error("could not start a CPU process: %r", error)
            self._fail_if_none_left()
            return
        self._adopt(loop, *done.result())

    def _fail_if_none_left(self) -> None:
        """With no child running or starting, the stages go back to threads and the
        calls waiting fail (retried)."""
        if self._children or self._spawning:
            return
        self.ready = False
        while self._waiting:
            self._waiting.popleft().fail(TransientError("no CPU process is running"))

    def _dispatch(self) -> None:
        while self._waiting:
            child = min(self._children, key=lambda c: len(c.calls), default=None)
            if child is None or len(child.calls) >= self.DEPTH:
                self._fail_if_none_left()
                return
            call = self._waiting.popleft()
            if call.future.done():
                call.idle()  # cancelled while it waited: no child ever saw it
                continue
            child.calls[call.id] = call
            try:
                child.conn.send((call.id, call.name, call.args))
            except (OSError, ValueError):
                self._lost(child)

    async def call(self, name: str, args: tuple[Any, ...], idle: Callable[[], None]) -> Any:
        """`name(*args)` in a child; `idle()` runs once no child works on it any more
        (it replied, or died), even when the caller was cancelled meanwhile."""
        if self._closed or (not self._children and not self._spawning):
            idle()
            raise TransientError("no CPU process is running")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        call = _Call(next(self._ids), name, args, future, idle)
        self._waiting.append(call)
        self._dispatch()
        try:
            return await future
        finally:
            if call in self._waiting:  # never sent: nothing will call idle() for it
                self._waiting.remove(call)
                idle()

    def close(self, grace_s: float = 2.0) -> None:
        """Hang up on every child (each exits), fail the calls they held; a thread kills
        those still running after `grace_s` in all and reaps them."""
        self._closed = True
        self.ready = False
        error = TransientError("the worker's CPU processes closed")
        while self._waiting:
            self._waiting.popleft().fail(error)
        for child in self._children:
            for call in child.calls.values():
                call.fail(error)
            with contextlib.suppress(RuntimeError, ValueError, OSError):
                asyncio.get_running_loop().remove_reader(child.conn.fileno())
            child.conn.close()
        _reap_later([child.process for child in self._children], grace_s)
        self._children.clear()


def _reap_later(processes: list[subprocess.Popen[bytes]], grace_s: float) -> None:
    """In a thread: wait for `processes` to exit, kill those still running after
    `grace_s` in all, and log how each ended (no zombie is left behind)."""

    def reap() -> None:
        deadline = time.monotonic() + grace_s
        for process in processes:
            try:
                code = process.wait(max(deadline - time.monotonic(), 0.0))
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            log.info("a CPU process ended (exit code %s)", code)

    threading.Thread(target=reap, name="surge-cpu-reap", daemon=True).start()
