"""Surge's inference function: NATS JetStream jobs in, ONNX Runtime results out.

`new` (the Knative Functions constructor) is imported lazily, so that importing
`function.contract.settings` from the scaler or the load generator stays light.
"""

from __future__ import annotations

from typing import Any

__all__ = ["new"]


def __getattr__(name: str) -> Any:
    if name == "new":
        from function.http.func import new

        return new
    raise AttributeError(f"module 'function' has no attribute {name!r}")
