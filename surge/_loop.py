"""One private event loop in a daemon thread: how the sync face runs the async one.

Each sync call hands a coroutine to the loop (`asyncio.run_coroutine_threadsafe`) and
blocks until it ends; the connection, its subscriptions and its reconnects live on that
loop between calls. Interrupting a call (Ctrl-C) cancels its coroutine.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from surge.errors import NotConnected

__all__ = ["LoopThread"]

T = TypeVar("T")
_CLOSE_S = 5.0


class LoopThread:
    """An event loop running in its own daemon thread until `close()`."""

    def __init__(self, name: str = "surge-sdk") -> None:
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()
        self._started.wait()

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(self._started.set)
        self._loop.run_forever()

    @property
    def closed(self) -> bool:
        return self._loop.is_closed() or not self._thread.is_alive()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run `coro` on the loop and return its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError(
                "a sync Surge call from inside the SDK's own loop (e.g. from an on_progress "
                "callback) would wait for ever: use AsyncSurge there"
            )
        if self.closed:
            coro.close()
            raise NotConnected("this client is closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result()
        except BaseException:  # KeyboardInterrupt included: stop the coroutine too
            future.cancel()
            raise

    def close(self) -> None:
        """Cancel what still runs on the loop, stop it, and wait for its thread."""
        if self.closed:
            return
        if threading.current_thread() is self._thread:
            raise RuntimeError("close() from inside the SDK's own loop")
        done = asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop)
        try:
            done.result(_CLOSE_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_CLOSE_S)
            if not self._thread.is_alive():
                self._loop.close()

    async def _shutdown(self) -> None:
        current = asyncio.current_task()
        tasks = [t for t in asyncio.all_tasks() if t is not current]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._loop.shutdown_asyncgens()
        await self._loop.shutdown_default_executor()
