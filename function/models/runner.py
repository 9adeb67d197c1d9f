"""One ONNX Runtime session per model, with an honest account of where it runs.

Providers are asked for in order (TensorRT, CUDA, CPU by default) and CPU always ends the
list. onnxruntime-gpu lists the GPU providers as available even when their CUDA/cuDNN/
TensorRT libraries are missing, then prints a loud error and falls back to CPU; so each
GPU provider library is test-loaded first, and after the session exists the providers it
really got are compared with the ones requested and logged in one line.
"""

from __future__ import annotations

import ctypes
import logging
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import onnxruntime as ort

from function.contract.errors import TransientError

__all__ = ["PROVIDERS", "OnnxRunner", "provider_problem"]

log = logging.getLogger("surge.runner")

PROVIDERS: Final[dict[str, str]] = {
    "tensorrt": "TensorrtExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "cpu": "CPUExecutionProvider",
}
_PROVIDER_LIBS: Final[dict[str, str]] = {
    "TensorrtExecutionProvider": "libonnxruntime_providers_tensorrt.so",
    "CUDAExecutionProvider": "libonnxruntime_providers_cuda.so",
}
_CPU: Final = PROVIDERS["cpu"]
_LINUX: Final = sys.platform.startswith("linux")
_problems: dict[str, str | None] = {}
_problems_lock = threading.Lock()


def provider_problem(provider: str) -> str | None:
    """Why `provider` cannot load here (e.g. a missing CUDA library), or None if it can.

    Loads the provider's shared library once per process, as ONNX Runtime would. On
    Linux a GPU provider whose library is not in the install cannot load (ONNX Runtime
    would print an error per session and drop it); providers without a separate library
    (CPU), and those of other systems, whose libraries are named otherwise, are assumed
    loadable.
    """
    with _problems_lock:
        if provider not in _problems:
            _problems[provider] = _library_problem(provider)
        return _problems[provider]


def _library_problem(provider: str) -> str | None:
    if provider not in _PROVIDER_LIBS:
        return None
    lib = Path(ort.__file__).parent / "capi" / _PROVIDER_LIBS[provider]
    if not lib.is_file():
        return f"{lib.name} is not in this onnxruntime install" if _LINUX else None
    try:
        ctypes.CDLL(str(lib))
    except OSError as exc:
        return str(exc)
    return None


def _dim(value: Any) -> int | str | None:
    return value if isinstance(value, int | str) else None


class OnnxRunner:
    """Runs one ONNX model; `run` takes a whole batch and returns one output for it."""

    def __init__(
        self,
        model_path: Path,
        *,
        providers: Sequence[str] = ("tensorrt", "cuda", "cpu"),
        intra_op_threads: int = 1,
        output_name: str | None = None,
        trt_cache_dir: Path | None = None,
        trt_fp16: bool = True,
        version: str = "",
    ) -> None:
        unknown = [name for name in providers if name not in PROVIDERS]
        if unknown:
            raise ValueError(f"unknown providers {unknown}; choose from {list(PROVIDERS)}")
        self.model_path = model_path
        self.version = version
        self.requested_providers = [PROVIDERS[name] for name in providers]
        if _CPU not in self.requested_providers:
            self.requested_providers.append(_CPU)
        available = set(ort.get_available_providers())
        skipped: dict[str, str] = {}
        chosen: list[str | tuple[str, dict[str, Any]]] = []
        for provider in self.requested_providers:
            problem = provider_problem(provider)
            if provider not in available:
                skipped[provider] = "not in this onnxruntime build"
            elif problem is not None:
                skipped[provider] = problem
            elif provider == PROVIDERS["tensorrt"]:
                chosen.append((provider, self._trt_options(trt_cache_dir, trt_fp16)))
            else:
                chosen.append(provider)
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(model_path), options, providers=chosen)
        self.providers: list[str] = list(self._session.get_providers())
        inputs = self._session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"{model_path.name}: expected one input, found {len(inputs)}")
        self.input_name: str = inputs[0].name
        self.input_shape: tuple[int | str | None, ...] = tuple(_dim(d) for d in inputs[0].shape)
        names = [out.name for out in self._session.get_outputs()]
        if output_name is not None and output_name not in names:
            raise ValueError(f"{model_path.name} has no output {output_name!r}; it has {names}")
        self.output_name: str = output_name if output_name is not None else names[0]
        self._log_providers(skipped)

    @staticmethod
    def _trt_options(cache_dir: Path | None, fp16: bool) -> dict[str, Any]:
        options: dict[str, Any] = {"trt_fp16_enable": fp16}
        if cache_dir is not None:
            cache_dir.mkdir(parents=True, exist_ok=True)
            options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(cache_dir))
        return options

    def _log_providers(self, skipped: dict[str, str]) -> None:
        """Say once, plainly, which providers were asked for and which the session got."""
        requested, got = self.requested_providers, self.providers
        summary = f"{self.model_path.name}: providers requested {requested}, got {got}"
        if got[:1] == requested[:1]:
            log.info("%s", summary)
            return
        dropped = [p for p in requested if p not in got and p not in skipped]
        reasons = "; ".join(
            [f"{name}: {why}" for name, why in skipped.items()]
            + [
                f"{name}: dropped when the session was created (ONNX Runtime's log says why)"
                for name in dropped
            ]
        )
        missing = any("cannot open shared object" in why for why in skipped.values())
        cause = "CUDA libraries are missing" if missing else "the providers before it did not load"
        where = "CPU" if got == [_CPU] else got[0]
        log.warning("%s: running on %s because %s (%s)", summary, where, cause, reasons)

    def run(self, batch: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
        """Run the model on a batch (batch axis first); return the selected output.

        ONNX Runtime failures (e.g. CUDA out of memory) are raised as `TransientError`.
        """
        feed = {self.input_name: np.ascontiguousarray(batch)}
        try:
            result = self._session.run([self.output_name], feed)
        except Exception as exc:
            raise TransientError(f"inference failed: {exc}") from exc
        return np.asarray(result[0])
