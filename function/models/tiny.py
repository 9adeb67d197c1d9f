"""A tiny ONNX graph (mean of an 8x8 greyscale thumbnail) for message-path load tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
from PIL import Image

from function.contract.wire import Output, ScoresOutput
from function.models.assets import write_atomic
from function.models.base import Task

__all__ = ["TINY_MODEL_FILE", "TinyTask", "build_tiny_model", "tiny_model_bytes"]

TINY_MODEL_FILE: Final = "tiny-mean.onnx"
_OPSET: Final = 13
_IR_VERSION: Final = 7


def tiny_model_bytes(scale: float | None = None) -> bytes:
    """The serialised tiny graph: x float32 [batch,1,8,8] -> ReduceMean -> mean [batch];
    with `scale`, another version of it (the mean times `scale`: same input and output,
    other scores), e.g. to roll out."""
    import onnx  # building graphs only: off the import path of every worker
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])
    mean = helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["batch"])
    if scale is None:
        nodes = [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[1, 2, 3], keepdims=0)]
        graph = helper.make_graph(nodes, "surge_tiny", [x], [mean])
    else:
        nodes = [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
            helper.make_node("Mul", ["m", "k"], ["mean"]),
        ]
        k = helper.make_tensor("k", TensorProto.FLOAT, [], [scale])
        graph = helper.make_graph(nodes, "surge_tiny_scaled", [x], [mean], initializer=[k])
    model = helper.make_model(
        graph,
        producer_name="surge",
        opset_imports=[helper.make_opsetid("", _OPSET)],
        ir_version=_IR_VERSION,
    )
    onnx.checker.check_model(model, full_check=True)
    data: bytes = model.SerializeToString(deterministic=True)
    return data


def build_tiny_model(path: Path) -> Path:
    """Write the tiny graph to `path` (atomically, only if its content differs)."""
    data = tiny_model_bytes()
    if path.is_file() and path.read_bytes() == data:
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, data)
    return path


class TinyTask(Task):
    """Mean brightness of an 8x8 greyscale thumbnail, in [0, 1]."""

    name: ClassVar[str] = "tiny"
    model_name: ClassVar[str] = "tiny"
    default_outputs: ClassVar[tuple[str, ...]] = ("scores",)
    allowed_outputs: ClassVar[frozenset[str]] = frozenset({"scores"})

    def model_file(self, cache_dir: Path) -> Path:
        """Build the graph into the cache once; its bytes (and so its version) are stable."""
        return build_tiny_model(cache_dir / TINY_MODEL_FILE)

    def decode_size(self, outputs: tuple[str, ...]) -> tuple[int, int] | None:
        """The score comes from an 8x8 thumbnail."""
        return (8, 8)

    def postprocess_pixels(self, size: tuple[int, int], outputs: tuple[str, ...]) -> int:
        """A score only."""
        return 0

    def preprocess(self, image: Image.Image) -> np.ndarray[Any, Any]:
        """Greyscale 8x8 scaled to [0, 1], shape (1, 8, 8)."""
        small = image.convert("L").resize((8, 8), Image.Resampling.BILINEAR)
        return (np.asarray(small, dtype=np.float32) / 255.0)[None, :, :]

    def postprocess(
        self, output: np.ndarray[Any, Any], image: Image.Image, outputs: tuple[str, ...]
    ) -> dict[str, Output]:
        """`scores`: {"mean": value}."""
        return {"scores": ScoresOutput(scores={"mean": float(np.asarray(output).reshape(-1)[0])})}
