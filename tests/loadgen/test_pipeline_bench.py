"""The pipeline benchmark's model costs nothing yet is a valid `remove-bg` model."""

from __future__ import annotations

from pathlib import Path

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
