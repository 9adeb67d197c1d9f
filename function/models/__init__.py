"""Models: assets, graph preparation, the ONNX runner and the tasks around it."""

from __future__ import annotations

from function.models.assets import (
    MODELS,
    PHOTOS,
    AssetError,
    WheelAsset,
    fetch,
    fetch_models,
    fetch_photos,
)
from function.models.base import Task
from function.models.loader import LoadedModel, load_model
from function.models.nsfw import NsfwClassifier
from function.models.prepare import PreparedModel, prepare_model
from function.models.registry import BUILTIN_TASKS, TaskLoadError, UnknownFunction, load_task
from function.models.remove_bg import RemoveBackground
from function.models.runner import OnnxRunner
from function.models.tiny import TinyTask, build_tiny_model

__all__ = [
    "BUILTIN_TASKS",
    "MODELS",
    "PHOTOS",
    "AssetError",
    "LoadedModel",
    "NsfwClassifier",
    "OnnxRunner",
    "PreparedModel",
    "RemoveBackground",
    "Task",
    "TaskLoadError",
    "TinyTask",
    "UnknownFunction",
    "WheelAsset",
    "build_tiny_model",
    "fetch",
    "fetch_models",
    "fetch_photos",
    "load_model",
    "load_task",
    "prepare_model",
]
