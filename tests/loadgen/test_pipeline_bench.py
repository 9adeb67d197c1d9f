"""The pipeline benchmark's model costs nothing yet is a valid `remove-bg` model."""

from __future__ import annotations

from pathlib import Path

import pytest

from function.models import RemoveBackground, load_model
from function.models.imaging import decode_image
from loadgen.bench.pipeline import free_model, job_image


def test_the_free_model_runs_as_remove_bg(tmp_path: Path) -> None:
    model = load_model(
        RemoveBackground(),
        cache_dir=tmp_path,
        model_path=free_model(tmp_path / "free.onnx"),
        providers=("cpu",),
    )
    image = decode_image(job_image(64), None, max_pixels=10**6)
    [outputs] = model.infer([image], [("mask",)])
    assert set(outputs) == {"mask"}
    batch = model.run_batch([model.task.preprocess(image)] * 3)
    assert batch.shape == (3, 1, 320, 320)


def test_the_16_core_projection_follows_amdahls_law_not_a_straight_line() -> None:
    from loadgen.bench.pipeline import amdahl

    assert amdahl(30.0, 60.0, 2, 16) == (0.0, 480.0)  # perfect scaling: a straight line
    serial, projected = amdahl(30.0, 42.0, 2, 16)  # 0.70 of 2 x one
    assert round(serial, 3) == 0.429 and 60 < projected < 70  # not 16 x 30 x 0.70 = 336
    serial, projected = amdahl(39.7, 123.4, 16, 16)  # an H100 node's own run
    assert projected == pytest.approx(123.4) and 0.27 < serial < 0.28
    assert amdahl(30.0, 20.0, 2, 16) == (1.0, 30.0)  # slower on more: nothing gained
    assert amdahl(30.0, 0.0, 2, 16) == amdahl(30.0, 45.0, 1, 16) == (1.0, 30.0)  # no claim
