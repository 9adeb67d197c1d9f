"""Inputs and small utilities shared by the tests."""

from __future__ import annotations

import asyncio
import io
import struct
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import onnx
from nats.js import JetStreamContext
from nats.js.api import ConsumerInfo
from onnx import TensorProto, helper
from PIL import Image

from function.contract.settings import WorkerSettings

if TYPE_CHECKING:
    import httpx

    from function.http.func import Function


def png_bytes(
    width: int = 16, height: int = 16, color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def small_jpeg(path: Path) -> bytes:
    """The photo at `path` as a JPEG of at most 256 px a side (quick to screen)."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    rgb.thumbnail((256, 256))
    buffer = io.BytesIO()
    rgb.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def gif_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format="GIF")
    return buffer.getvalue()


def bomb_png(width: int = 30_000, height: int = 30_000) -> bytes:
    """A tiny PNG whose header claims a huge image (a decompression bomb's calling card)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    row = b"\x00" + b"\x00" * width
    data = zlib.compress(row * 4)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )


def failing_model(path: Path) -> Path:
    """A real ONNX graph that always fails at run time (Reshape to an impossible shape)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 1, 8, 8])
    y = helper.make_tensor_value_info("mean", TensorProto.FLOAT, None)
    shape = helper.make_tensor("shape", TensorProto.INT64, [2], [7, 11])
    node = helper.make_node("Reshape", ["x", "shape"], ["mean"])
    graph = helper.make_graph([node], "always_fails", [x], [y], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


async def settled_consumer(
    js: JetStreamContext, consumer: str, timeout: float = 10.0
) -> ConsumerInfo:
    """Consumer info once nothing is pending or awaiting an ack (a reply may beat the ack)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        info = await js.consumer_info("SURGE_JOBS", consumer)
        if (info.num_pending == 0 and info.num_ack_pending == 0) or (
            asyncio.get_running_loop().time() > deadline
        ):
            return info
        await asyncio.sleep(0.05)


def bomb_webp(width: int = 16_384, height: int = 16_384) -> bytes:
    """A ~100-byte WebP whose VP8X header claims a width x height canvas (16x16 inside)."""
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, format="WEBP")
    vp8 = buffer.getvalue()[12:]  # the one VP8 chunk of a simple lossy file
    assert vp8.startswith(b"VP8 ")
    canvas = (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes(4) + canvas
    body = b"WEBP" + vp8x + vp8
    return b"RIFF" + struct.pack("<I", len(body)) + body


async def until_ready(function: Function, timeout: float = 120) -> None:
    """Wait for `function` to report ready; fail at once if it stops being alive."""
    deadline = time.monotonic() + timeout
    while not function.ready()[0]:
        assert function.alive()[0], function.alive()
        assert time.monotonic() < deadline, "function never became ready"
        await asyncio.sleep(0.05)


def tiny_settings(nats_url: str, model_dir: Path) -> WorkerSettings:
    """A quick `tiny` worker for tests: no warmup, short pulls, frequent heartbeats."""
    return WorkerSettings(
        nats_url=nats_url,
        model_dir=model_dir,
        function="tiny",
        warmup_batch_sizes=[],
        heartbeat_interval_s=0.2,
        fetch_timeout_s=0.5,
    )


def asgi_client(function: Function) -> httpx.AsyncClient:
    """An HTTP client speaking to `function`'s app in process (httpx's ASGI transport)."""
    import httpx

    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=function.app), base_url="http://surge"
    )
