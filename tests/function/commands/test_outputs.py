"""A result for a person: images elided when printed, written as files with --out."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from function.commands.outputs import elided_json, save_result
from function.contract.settings import DEFAULT_FUNCTION
from function.contract.wire import ImageOutput, JobStatus, Result, ScoresOutput
from tests.helpers import png_bytes

IMAGE = png_bytes(256, 256) * 50  # ~ the size of a real cut-out's base64


def _result(job_id: str = "job-1") -> Result:
    return Result(
        job_id=job_id,
        status=JobStatus.OK,
        function=DEFAULT_FUNCTION,
        outputs={
            "cutout": ImageOutput(width=256, height=256, data=base64.b64encode(IMAGE).decode()),
            "scores": ScoresOutput(scores={"sfw": 0.9}),
        },
    )


def test_printing_elides_image_data_and_shows_its_size() -> None:
    text = elided_json(_result())
    assert len(text) < 2000 < len(IMAGE)
    doc = json.loads(text)
    assert doc["outputs"]["cutout"]["data"].startswith(f"<{len(IMAGE)} bytes of image/png")
    assert doc["outputs"]["scores"]["scores"] == {"sfw": 0.9}


def test_out_writes_images_as_files_and_json_without_base64(tmp_path: Path) -> None:
    written = save_result(_result(), {"cutout": IMAGE}, tmp_path)
    assert [path.name for path in written] == ["job-1.json", "job-1.cutout.png"]
    assert (tmp_path / "job-1.cutout.png").read_bytes() == IMAGE
    doc = json.loads((tmp_path / "job-1.json").read_text())
    assert doc["outputs"]["cutout"]["data"] is None
    assert doc["outputs"]["cutout"]["file"] == "job-1.cutout.png"


def test_a_hostile_job_id_cannot_write_outside_the_folder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = save_result(_result("a/../../b"), {"cutout": IMAGE}, out)
    assert all(path.parent == out for path in written)
    assert sorted(p.name for p in out.iterdir()) == ["a_______b.cutout.png", "a_______b.json"]
