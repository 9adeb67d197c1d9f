"""Settings checked before a worker creates anything: its function's task, its warmup
hooks and its screen's task must load (`check_startup`)."""

from __future__ import annotations

from function.contract.errors import SurgeError
from function.contract.settings import WorkerSettings
from function.models import load_task
from function.models.warmup import resolve_hooks

__all__ = ["StartupError", "check_startup"]


class StartupError(SurgeError):
    """Settings the worker cannot start with: an unknown function, a task, a warmup
    hook or a screen that does not load. Raised before anything is created on NATS
    (a screen without the score it names: once its model has loaded)."""


def check_startup(settings: WorkerSettings) -> None:
    """Raise `StartupError` (one line) unless the function's task and hooks, and the
    screen's task, load."""
    try:
        load_task(settings.function, settings.task)
        resolve_hooks(settings.warmup_hooks)
    except SurgeError as exc:
        raise StartupError(str(exc)) from None
    if settings.screen is not None:
        try:
            load_task(settings.screen.function)
        except SurgeError as exc:
            raise StartupError(f"SURGE_SCREEN {settings.screen}: {exc}") from None
