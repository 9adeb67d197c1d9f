"""Turning a downloaded ONNX file into the graph the runner loads.

Two steps, each cached next to the models and skipped when its output exists:

1. If any graph input or output has a fixed batch dimension (U²-Net-p ships with 1),
   rewrite dim 0 of every input and output to the symbolic ``batch`` and drop the stored
   intermediate shapes, so shape inference cannot pin it again:
   ``<stem>-<version>.dynamic.onnx``.
2. Save ONNX Runtime's graph after its basic (provider-independent) optimisations, which
   makes later session creation faster and stays loadable by the CUDA and TensorRT
   providers: ``<...>.opt.onnx``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import onnxruntime as ort

from function.models.assets import sha256_file

__all__ = ["BATCH_DIM", "PreparedModel", "batch_dims", "make_batch_dynamic", "prepare_model"]

BATCH_DIM: Final = "batch"
_VERSION_LEN: Final = 16


@dataclass(frozen=True)
class PreparedModel:
    """The graph to load, and the version (content hash) of the original file."""

    path: Path
    version: str
    source: Path


def _tensors(model: Any) -> list[Any]:
    graph = model.graph
    return [*graph.input, *graph.output]


def batch_dims(model: Any) -> dict[str, int | str | None]:
    """Dim 0 of every graph input and output: an int, a symbol, or None when unknown."""
    dims: dict[str, int | str | None] = {}
    for value in _tensors(model):
        shape = value.type.tensor_type.shape
        if not value.type.HasField("tensor_type") or not shape.dim:
            dims[value.name] = None
            continue
        first = shape.dim[0]
        if first.HasField("dim_value"):
            dims[value.name] = int(first.dim_value)
        elif first.HasField("dim_param"):
            dims[value.name] = str(first.dim_param)
        else:
            dims[value.name] = None
    return dims


def make_batch_dynamic(model: Any) -> bool:
    """Rewrite dim 0 of every input and output to `batch` in place; False if none was fixed."""
    if not any(isinstance(dim, int) for dim in batch_dims(model).values()):
        return False
    for value in _tensors(model):
        shape = value.type.tensor_type.shape
        if value.type.HasField("tensor_type") and shape.dim:
            shape.dim[0].dim_param = BATCH_DIM
    del model.graph.value_info[:]
    return True


def _temp_path(final: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
    os.fchmod(fd, 0o644)
    os.close(fd)
    return Path(name)


def _save_model(model: Any, path: Path) -> None:
    import onnx  # only to prepare a graph: 0.14 s off every start that finds it prepared

    tmp = _temp_path(path)
    try:
        onnx.save_model(model, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_optimized(src: Path, path: Path) -> None:
    """Let ONNX Runtime (CPU, basic level) optimise `src` and save the graph to `path`."""
    tmp = _temp_path(path)
    try:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(tmp)
        options.log_severity_level = 3
        ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def prepare_model(src: Path, cache_dir: Path, *, dynamic_batch: bool = True) -> PreparedModel:
    """Make `src` batchable (when asked) and optimised; return what the runner should load."""
    version = sha256_file(src)[:_VERSION_LEN]
    cache_dir.mkdir(parents=True, exist_ok=True)
    stem = src.stem if src.stem.endswith(version) else f"{src.stem}-{version}"
    if dynamic_batch:
        target = cache_dir / f"{stem}.dynamic.opt.onnx"
        if target.is_file():
            return PreparedModel(target, version, src)
        import onnx

        model = onnx.load_model(str(src))
        if make_batch_dynamic(model):
            dynamic = cache_dir / f"{stem}.dynamic.onnx"
            _save_model(model, dynamic)
            _save_optimized(dynamic, target)
            return PreparedModel(target, version, src)
    target = cache_dir / f"{stem}.opt.onnx"
    if not target.is_file():
        _save_optimized(src, target)
    return PreparedModel(target, version, src)
