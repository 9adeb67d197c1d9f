"""Finding the Task for a function: a built-in one, or a user's `module:factory`."""

from __future__ import annotations

import importlib
from typing import Final

from function.contract.errors import ErrorCode, JobError, SurgeError
from function.models.base import Task
from function.models.nsfw import NsfwClassifier
from function.models.remove_bg import RemoveBackground
from function.models.tiny import TinyTask

__all__ = ["BUILTIN_TASKS", "TaskLoadError", "UnknownFunction", "load_task"]

BUILTIN_TASKS: Final[dict[str, type[Task]]] = {
    "remove-bg": RemoveBackground,
    "nsfw": NsfwClassifier,
    "tiny": TinyTask,
}


class UnknownFunction(JobError):
    """No task serves this function name."""

    def __init__(self, function: str) -> None:
        builtin = ", ".join(BUILTIN_TASKS)
        super().__init__(
            ErrorCode.UNKNOWN_FUNCTION,
            f"unknown function {function!r}; built-in functions are {builtin} "
            "(or set SURGE_TASK=module:factory for your own)",
        )
        self.function = function


class TaskLoadError(SurgeError):
    """A `module:factory` task reference could not be imported or did not give a Task."""


def _resolve(task_ref: str) -> object:
    module_name, sep, attr_path = task_ref.partition(":")
    if not sep or not module_name or not attr_path:
        raise TaskLoadError(f"task reference {task_ref!r} is not of the form 'module:factory'")
    try:
        target: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise TaskLoadError(f"cannot import {module_name!r} for task {task_ref!r}: {exc}") from exc
    for attr in attr_path.split("."):
        try:
            target = getattr(target, attr)
        except AttributeError as exc:
            raise TaskLoadError(f"{task_ref!r}: {module_name} has no {attr_path!r}") from exc
    return target


def load_task(function: str, task_ref: str | None = None) -> Task:
    """The Task for `function`: from `task_ref` ('module:factory') if given, else built-in.

    The factory may be a Task subclass, a callable returning a Task, or a Task instance.
    """
    if task_ref is None:
        if function not in BUILTIN_TASKS:
            raise UnknownFunction(function)
        return BUILTIN_TASKS[function]()
    target = _resolve(task_ref)
    if isinstance(target, Task):
        return target
    if not callable(target):
        raise TaskLoadError(f"{task_ref!r} is neither a Task nor callable")
    task = target()
    if not isinstance(task, Task):
        raise TaskLoadError(f"{task_ref!r} returned {type(task).__name__}, not a Task")
    return task
