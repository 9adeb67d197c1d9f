"""A result as a person wants it: image outputs as files, or elided, never as base64.

save_result(result, images, Path("out"))  # out/<job>.json (no base64), out/<job>.mask.png
print(elided_json(result))                # each inline image's data replaced by its size
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from function.contract.wire import ImageOutput, Result

__all__ = ["elided_json", "image_file_name", "inline_size", "save_result"]

_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")  # job ids and output names may hold '/' or '\'


def _safe(name: str) -> str:
    return _UNSAFE.sub("_", name)[:128] or "_"


def image_file_name(job_id: str, name: str, output: ImageOutput) -> str:
    """`<job>.<output>.<ext>`, with anything that could leave the folder replaced by `_`."""
    extension = _EXTENSIONS.get(output.content_type, "bin")
    return f"{_safe(job_id)}.{_safe(name)}.{extension}"


def inline_size(output: ImageOutput) -> int:
    """Bytes of an inline image, from its base64 length (without decoding it)."""
    data = output.data or ""
    return len(data) * 3 // 4 - (len(data) - len(data.rstrip("=")))


def _document(result: Result) -> dict[str, Any]:
    return result.model_dump(mode="json")


def elided_json(result: Result) -> str:
    """The result as indented JSON, each inline image's data replaced by its size."""
    doc = _document(result)
    for name, output in result.outputs.items():
        if isinstance(output, ImageOutput) and output.data is not None:
            doc["outputs"][name]["data"] = (
                f"<{inline_size(output)} bytes of {output.content_type}, elided: "
                "--out DIR saves it>"
            )
    return json.dumps(doc, indent=2)


def save_result(result: Result, images: dict[str, bytes], out: Path) -> list[Path]:
    """Write `images` (output name -> encoded bytes) as files and the result as JSON
    naming them instead of holding them; return the paths written, the JSON first."""
    out.mkdir(parents=True, exist_ok=True)
    doc = _document(result)
    written = []
    for name, data in images.items():
        output = result.outputs[name]
        assert isinstance(output, ImageOutput)
        path = out / image_file_name(result.job_id, name, output)
        path.write_bytes(data)
        written.append(path)
        doc["outputs"][name]["data"] = None
        doc["outputs"][name]["file"] = path.name
    summary = out / f"{_safe(result.job_id)}.json"
    summary.write_text(json.dumps(doc, indent=2) + "\n")
    return [summary, *written]
