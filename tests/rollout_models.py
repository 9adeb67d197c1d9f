"""Versions of the `tiny` model for rollout tests: a scaled one, and one whose every
answer the tiny task's postprocessing rejects (it loads and warms like any other)."""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import TensorProto, helper

from function.models.tiny import tiny_model_bytes

__all__ = ["broken_tiny", "scaled_tiny"]


def _save(
    nodes: list[onnx.NodeProto], inits: list[onnx.TensorProto], out_shape: list[object], path: Path
) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])
    out = helper.make_tensor_value_info("mean", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, "surge_tiny_variant", [x], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
    onnx.checker.check_model(model, full_check=True)
    path.write_bytes(model.SerializeToString(deterministic=True))
    return path


def scaled_tiny(path: Path, scale: float) -> Path:
    """mean(x) * scale: a version whose scores differ from the tiny model's."""
    path.write_bytes(tiny_model_bytes(scale))
    return path


def broken_tiny(path: Path) -> Path:
    """An empty row per image: runs (and warms), but no job gets a score from it."""
    consts = [
        helper.make_tensor(name, TensorProto.INT64, [1], [value])
        for name, value in (("s", 8), ("e", 8), ("a", 3))
    ]
    nodes = [helper.make_node("Slice", ["x", "s", "e", "a"], ["mean"])]
    return _save(nodes, consts, ["batch", 1, 8, 0], path)
