"""The Knative Functions (Python) contract: `new()` returns the function instance.

`func deploy` (func-python) and `surge worker` (uvicorn) serve the same object:

    f = new()
    f.start(os.environ.copy())   # returns at once; model load and warmup run in the background
    await f.handle(scope, receive, send)
    f.alive(), f.ready()         # (bool, message) for /health/liveness and /health/readiness
    f.stop()                     # drain: nothing lost on scale-in

Warmup hooks run after the model loads and before `ready()`:

    f.add_warmup_hook(lambda model: model.warmup([1, 2, 4]))
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from function.contract.errors import SurgeError
from function.contract.heartbeat import WorkerState
from function.contract.http_auth import HttpAuthSettings
from function.contract.settings import ENV_PREFIX, WorkerSettings
from function.models.warmup import WarmupHook
from function.telemetry import configure_logging, configure_tracing
from function.worker import Worker, check_startup

if TYPE_CHECKING:
    from fastapi import FastAPI

    from function.http.auth import Authenticator

__all__ = ["STUCK_AFTER_S", "Function", "new"]

log = logging.getLogger("surge.func")

STUCK_AFTER_S = 30.0  # event loop silent this long: the process is stuck


def _authenticator(settings: HttpAuthSettings) -> Authenticator | None:
    """The HTTP authenticator, or None when auth is off (its JWT and X.509 libraries
    are then never imported: they would delay the worker's start)."""
    if not settings.enabled:
        return None
    from function.http.auth import Authenticator

    return Authenticator.from_settings(settings)


def settings_from(cfg: Mapping[str, str]) -> WorkerSettings:
    """Worker settings from a config mapping (func passes `os.environ.copy()`), read as
    from the environment: list settings as JSON or comma-separated; `InvalidSettings`
    (one line) for a bad value."""
    return WorkerSettings.from_mapping(cfg)


class Function:
    """One inference function: NATS consumer and HTTP surface over one model."""

    def __init__(self, settings: WorkerSettings | None = None) -> None:
        self.settings = settings or WorkerSettings()
        self.worker: Worker | None = None
        self._hooks: list[WarmupHook] = []
        self._starting: asyncio.Task[None] | None = None
        self._stopping: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._last_tick = time.monotonic()
        self.on_fatal: Callable[[str], None] | None = None
        self.start_error: SurgeError | None = None
        # Loaded here, once: a broken configuration raises `HttpAuthError` at construction.
        self._authenticator = _authenticator(HttpAuthSettings.from_env())
        self._app: FastAPI | None = None

    @property
    def app(self) -> FastAPI:
        """The HTTP app (probes, metrics, `/v1/infer`), made on first use: importing
        FastAPI does not delay a worker's start."""
        if self._app is None:
            from function.http.app import create_app

            self._app = create_app(self, self._authenticator)
        return self._app

    def add_warmup_hook(self, hook: WarmupHook) -> None:
        """Run `hook(loaded_model)` after model load, before ready."""
        self._hooks.append(hook)

    async def handle(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """ASGI entry point for every HTTP request."""
        await self.app(scope, receive, send)

    def start(self, cfg: Mapping[str, str] | None = None) -> None:
        """Begin connecting, loading and warming in the background; return at once.

        Settings it cannot start with raise here, in one logged line, before anything
        touches NATS: the host fails its startup (uvicorn; func-python after 0.8.1), or,
        if it goes on serving (func-python 0.8.1), liveness fails and the pod restarts.
        A second call (a host's lifespan after `surge worker` started it) does nothing.
        """
        if self.worker is not None:
            return
        try:
            if cfg is not None and any(k.startswith(ENV_PREFIX) for k in cfg):
                self.settings = settings_from(cfg)
            check_startup(self.settings)
        except SurgeError as exc:
            self.start_error = exc
            log.error("cannot start: %s", exc)
            raise
        configure_logging(self.settings.log_level)
        configure_tracing(f"surge-{self.settings.function}", self.settings.otlp_endpoint)
        self.worker = Worker(self.settings, warmup_hooks=self._hooks)
        self.worker.connection.on_fatal = self._fatal
        loop = asyncio.get_running_loop()
        self._starting = loop.create_task(self.worker.start())
        self._starting.add_done_callback(self._started)
        self._ticker = loop.create_task(self._tick())

    async def _tick(self) -> None:
        while True:
            self._last_tick = time.monotonic()
            await asyncio.sleep(1.0)

    def _started(self, task: asyncio.Task[None]) -> None:
        """A start that failed ends the process (the supervisor restarts it), not a zombie."""
        if not task.cancelled() and task.exception() is not None:
            self._fatal(f"start failed: {task.exception()}")

    def _fatal(self, reason: str) -> None:
        """The worker cannot recover (its NATS connection is closed): let the host exit."""
        if self.on_fatal is not None:
            self.on_fatal(reason)

    def alive(self) -> tuple[bool, str]:
        """False when the process is stuck, its start failed, or a problem (a NATS
        connection closed for good, lost streams, failing pulls) outlasted
        `liveness_grace_s`. A connection being re-established fails readiness only."""
        if self.start_error is not None:
            return False, f"start failed: {self.start_error}"
        worker = self.worker
        if worker is not None and worker.error is not None:
            return False, f"start failed: {worker.error}"
        trouble = worker.trouble(for_liveness=True) if worker is not None else None
        if trouble is not None and time.monotonic() - trouble[1] > self.settings.liveness_grace_s:
            return False, f"{trouble[0]} for {time.monotonic() - trouble[1]:.0f}s"
        consumer = worker.consumer if worker is not None else None
        if consumer is not None and consumer.failed is not None:
            return False, f"consumer loop died: {consumer.failed!r}"
        if consumer is not None and consumer.stuck_for() > 10 * self.settings.ack_wait_s:
            return False, f"inference stuck for {consumer.stuck_for():.0f}s"
        silent = time.monotonic() - self._last_tick
        if self._ticker is not None and silent > STUCK_AFTER_S:
            return False, f"event loop silent for {silent:.0f}s"
        return True, "OK"

    def ready(self) -> tuple[bool, str]:
        """True once the model is warm and the NATS consumer is attached, while nothing
        is wrong with the connection, the streams or the pulls."""
        if self.worker is None:
            return False, "not started"
        trouble = self.worker.trouble()
        if trouble is not None:
            return False, trouble[0]
        if self.worker.ready:
            return True, "OK"
        return False, self.worker.state.value

    def stop(self) -> None:
        """Start draining (a host's synchronous hook); readiness turns false at once.

        func-python calls this without waiting, so its server may exit before the drain
        ends; unfinished jobs then return after `ack_wait`. `surge worker` (uvicorn via
        `function.http.serve`) awaits `drain()` in full, which is why the image runs it.
        """
        if self.worker is not None:
            self.worker.state = WorkerState.DRAINING
        if self._stopping is None:
            self._stopping = asyncio.ensure_future(self.drain())

    async def drain(self) -> None:
        """Stop fetching, finish or hand back in-flight jobs, close (once)."""
        if self._drained is None:
            self._drained = asyncio.ensure_future(self._drain())
        await asyncio.shield(self._drained)

    async def _drain(self) -> None:
        if self._starting is not None and not self._starting.done():
            self._starting.cancel()
        if self.worker is not None:
            await self.worker.stop()
        if self._ticker is not None:
            self._ticker.cancel()


def new() -> Function:
    """The Knative Functions constructor."""
    return Function()
