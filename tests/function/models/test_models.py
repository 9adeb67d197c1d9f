"""The runner, the built-in tasks on real models, the registry and the loader."""

from __future__ import annotations

import base64
import io
import logging
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from function.contract.errors import BadInput, ErrorCode, JobError, TransientError
from function.contract.wire import ImageOutput, ScoresOutput
from function.models import (
    MODELS,
    LoadedModel,
    OnnxRunner,
    RemoveBackground,
    TaskLoadError,
    TinyTask,
    UnknownFunction,
    build_tiny_model,
    load_model,
    load_task,
    prepare_model,
)
from function.models.assets import sha256_file
from function.models.imaging import decode_image

CPU = "CPUExecutionProvider"


def _image(output: ImageOutput) -> Image.Image:
    with Image.open(io.BytesIO(base64.b64decode(output.data or ""))) as image:
        image.load()
        return image.copy()


# --- runner -------------------------------------------------------------------------


def _reshape_model(path: Path) -> Path:
    """x float32 [n, 3] reshaped to [5]: valid graph, fails whenever it runs."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [5])
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [5])
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    graph = helper.make_graph([node], "bad_reshape", [x], [y], initializer=[shape])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=7)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def test_runner_raises_transient_error_on_run_failure(tmp_path: Path) -> None:
    runner = OnnxRunner(_reshape_model(tmp_path / "bad.onnx"), providers=("cpu",))
    with pytest.raises(TransientError, match=r"inference failed: .*[Rr]eshape"):
        runner.run(np.zeros((2, 3), dtype=np.float32))


def test_runner_reports_the_providers_it_really_got(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    path = build_tiny_model(tmp_path / "tiny.onnx")
    with caplog.at_level(logging.INFO, logger="surge.runner"):
        runner = OnnxRunner(path, version="v1")
    assert runner.requested_providers[-1] == CPU
    assert runner.providers[-1] == CPU
    records = [r for r in caplog.records if r.name == "surge.runner"]
    assert len(records) == 1
    assert f"got {runner.providers}" in records[0].getMessage()
    if runner.providers == [CPU] and runner.requested_providers != [CPU]:
        assert records[0].levelno == logging.WARNING
        assert "running on CPU because" in records[0].getMessage()
    out, err = capfd.readouterr()
    assert "EP Error" not in out + err
    assert "onnxruntime" not in err
    assert (runner.input_name, runner.input_shape) == ("x", ("batch", 1, 8, 8))
    assert (runner.output_name, runner.version) == ("mean", "v1")


def test_a_gpu_provider_library_missing_or_broken_is_a_reason_not_an_onnxruntime_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from types import SimpleNamespace

    from function.models import runner

    capi = tmp_path / "onnxruntime" / "capi"
    capi.mkdir(parents=True)
    monkeypatch.setattr(runner, "ort", SimpleNamespace(__file__=str(capi.parent / "x.py")))
    monkeypatch.setattr(runner, "_LINUX", True)
    problem = runner._library_problem("TensorrtExecutionProvider")
    assert problem == "libonnxruntime_providers_tensorrt.so is not in this onnxruntime install"
    (capi / "libonnxruntime_providers_cuda.so").write_bytes(b"not a shared object")
    assert "libonnxruntime_providers_cuda.so" in (
        runner._library_problem("CUDAExecutionProvider") or ""
    )
    assert runner._library_problem(CPU) is None
    monkeypatch.setattr(runner, "_LINUX", False)  # named otherwise there: left to ONNX Runtime
    assert runner._library_problem("TensorrtExecutionProvider") is None


def test_a_provider_dropped_by_onnxruntime_itself_is_named_in_the_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    runner = OnnxRunner(build_tiny_model(tmp_path / "tiny.onnx"), providers=("cpu",))
    trt, cuda = "TensorrtExecutionProvider", "CUDAExecutionProvider"
    runner.requested_providers, runner.providers = [trt, cuda, CPU], [cuda, CPU]
    with caplog.at_level(logging.WARNING, logger="surge.runner"):
        runner._log_providers({})
    message = caplog.records[-1].getMessage()
    assert "running on CUDAExecutionProvider because the providers before it did not load" in (
        message
    )
    assert f"{trt}: dropped when the session was created" in message and "(-)" not in message


def test_runner_always_ends_with_cpu_and_checks_names(tmp_path: Path) -> None:
    path = build_tiny_model(tmp_path / "tiny.onnx")
    assert OnnxRunner(path, providers=()).requested_providers == [CPU]
    with pytest.raises(ValueError, match="unknown providers"):
        OnnxRunner(path, providers=("gpu",))
    with pytest.raises(ValueError, match="no output 'nope'"):
        OnnxRunner(path, providers=("cpu",), output_name="nope")


# --- tasks --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def astronaut_outputs(remove_bg: LoadedModel, astronaut: Image.Image) -> dict[str, object]:
    return dict(remove_bg.infer([astronaut], [("mask", "cutout")])[0])


def test_remove_bg_mask_on_astronaut(
    astronaut_outputs: dict[str, object], astronaut: Image.Image
) -> None:
    output = astronaut_outputs["mask"]
    assert isinstance(output, ImageOutput)
    mask = _image(output)
    assert mask.mode == "L"
    assert mask.size == astronaut.size == (output.width, output.height)
    pixels = np.asarray(mask, dtype=np.float32)
    assert pixels[256, 256] > 0.5 * 255
    assert pixels[:64, :64].mean() < 0.1 * 255


def test_remove_bg_cutout_is_rgba(
    astronaut_outputs: dict[str, object], astronaut: Image.Image
) -> None:
    mask, cutout = astronaut_outputs["mask"], astronaut_outputs["cutout"]
    assert isinstance(mask, ImageOutput)
    assert isinstance(cutout, ImageOutput)
    image = _image(cutout)
    assert (image.mode, image.size) == ("RGBA", astronaut.size)
    rgba = np.asarray(image)
    assert np.array_equal(rgba[:, :, 3], np.asarray(_image(mask)))
    assert np.array_equal(rgba[:, :, :3], np.asarray(astronaut))


def test_remove_bg_batch_of_three_equals_three_of_one(
    remove_bg: LoadedModel, photo_files: dict[str, Path]
) -> None:
    assert remove_bg.max_batch is None
    task = remove_bg.task
    names = ("astronaut", "chelsea", "rocket")
    images = [decode_image(photo_files[n].read_bytes(), None, max_pixels=10**7) for n in names]
    samples = [task.preprocess(image) for image in images]
    assert samples[0].shape == (3, 320, 320)
    assert samples[0].dtype == np.float32
    batched = remove_bg.run_batch(samples)
    assert batched.shape == (3, 1, 320, 320)
    singles = np.concatenate([remove_bg.run_batch([sample]) for sample in samples])
    np.testing.assert_allclose(batched, singles, atol=1e-5)


def _normalised_pixel_by_pixel(image: Image.Image) -> np.ndarray:
    """remove-bg's preprocessing as plain arithmetic on every pixel."""
    small = image.convert("RGB").resize((320, 320), Image.Resampling.BILINEAR)
    pixels = np.asarray(small, dtype=np.float32)
    pixels /= max(float(pixels.max()), 1e-6)
    mean = np.array([0.485, 0.456, 0.406], dtype=np.float32)
    std = np.array([0.229, 0.224, 0.225], dtype=np.float32)
    return np.ascontiguousarray(((pixels - mean) / std).transpose(2, 0, 1))


@pytest.mark.parametrize("seed", range(4))
def test_remove_bg_preprocessing_is_the_pixel_by_pixel_arithmetic_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    top = [255, 1, 0, 37][seed]  # full range, one level, all black, a dark picture
    side = (rng.integers(1, 700), rng.integers(1, 700))
    noise = rng.integers(0, top + 1, size=(*side, 3), dtype=np.uint8)
    for image in (Image.fromarray(noise), Image.fromarray(noise).convert("RGBA")):
        made = RemoveBackground().preprocess(image)
        assert made.dtype == np.float32 and made.flags.c_contiguous
        assert np.array_equal(made, _normalised_pixel_by_pixel(image))


def test_remove_bg_outputs_are_checked() -> None:
    task = RemoveBackground()
    assert task.check_outputs(()) == ("mask",)
    assert task.check_outputs(("cutout", "mask", "cutout")) == ("cutout", "mask")
    with pytest.raises(BadInput, match=r"unknown output 'x'.*choose from cutout, mask") as caught:
        task.check_outputs(("x",))
    assert caught.value.code == ErrorCode.BAD_ENVELOPE


def test_nsfw_scores_on_astronaut(nsfw: LoadedModel, astronaut: Image.Image) -> None:
    assert nsfw.task.preprocess(astronaut).shape == (224, 224, 3)
    scores = nsfw.infer([astronaut], [()])[0]["scores"]
    assert isinstance(scores, ScoresOutput)
    assert set(scores.scores) == {"nsfw", "sfw"}
    assert all(0.0 <= value <= 1.0 for value in scores.scores.values())
    assert scores.scores["nsfw"] + scores.scores["sfw"] == pytest.approx(1.0)
    assert scores.scores["nsfw"] < 0.5


def test_tiny_model_gives_the_mean(tmp_path: Path) -> None:
    model = load_model(TinyTask(), cache_dir=tmp_path, providers=("cpu",))
    grey = Image.new("RGB", (32, 32), (51, 51, 51))
    gradient = TinyTask().warmup_image()
    results = model.infer([grey, gradient], [(), ("scores",)])
    first, second = results[0]["scores"], results[1]["scores"]
    assert isinstance(first, ScoresOutput)
    assert isinstance(second, ScoresOutput)
    assert first.scores["mean"] == pytest.approx(0.2, abs=1e-6)
    expected = float(TinyTask().preprocess(gradient).mean())
    assert second.scores["mean"] == pytest.approx(expected, abs=1e-6)


def test_tiny_model_bytes_and_version_are_stable(tmp_path: Path) -> None:
    first = TinyTask().model_file(tmp_path / "a")
    second = TinyTask().model_file(tmp_path / "b")
    assert first.read_bytes() == second.read_bytes()
    onnx.checker.check_model(onnx.load(str(first)), full_check=True)
    assert prepare_model(first, tmp_path / "a").version == sha256_file(second)[:16]


# --- registry and loader ------------------------------------------------------------


def test_load_builtin_and_unknown_tasks() -> None:
    assert isinstance(load_task("remove-bg"), RemoveBackground)
    assert load_task("nsfw").name == "nsfw"
    with pytest.raises(UnknownFunction) as caught:
        load_task("colorize")
    assert isinstance(caught.value, JobError)
    assert caught.value.code == ErrorCode.UNKNOWN_FUNCTION
    assert "'colorize'" in caught.value.message
    assert "remove-bg" in caught.value.message


@pytest.fixture
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    source = """
        from function.models import TinyTask

        class Brightness(TinyTask):
            name = "brightness"

        def make():
            return Brightness()

        instance = Brightness()

        def not_a_task():
            return 42
    """
    (tmp_path / "surge_user_task.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "surge_user_task", raising=False)
    return "surge_user_task"


@pytest.mark.parametrize("attr", ["Brightness", "make", "instance"])
def test_load_task_from_module_factory(user_module: str, attr: str) -> None:
    task = load_task("brightness", f"{user_module}:{attr}")
    assert task.name == "brightness"
    assert isinstance(task, TinyTask)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        ("surge_user_task", "not of the form"),
        ("surge_no_such_module_xyz:make", "cannot import"),
        ("surge_user_task:missing", "has no 'missing'"),
        ("surge_user_task:not_a_task", "returned int, not a Task"),
    ],
)
def test_bad_task_refs(user_module: str, ref: str, message: str) -> None:
    with pytest.raises(TaskLoadError, match=message):
        load_task("brightness", ref)


def test_loader_with_own_model_file_and_warmup(tmp_path: Path) -> None:
    own = build_tiny_model(tmp_path / "own" / "my-model.onnx")
    model = load_model(TinyTask(), cache_dir=tmp_path / "cache", model_path=own, providers=("cpu",))
    assert model.info.name == "my-model"
    assert model.info.version == sha256_file(own)[:16]
    assert model.info.providers == [CPU]
    timings = model.warmup([1, 4])
    assert sorted(timings) == [1, 4]
    assert all(ms >= 0 for ms in timings.values())
    with pytest.raises(ValueError, match="1 images but 2"):
        model.infer([TinyTask().warmup_image()], [(), ()])


def test_fixed_batch_model_reports_its_max_batch(model_cache: Path, tmp_path: Path) -> None:
    source = model_cache / MODELS["u2netp"].filename
    shutil.copyfile(source, tmp_path / source.name)
    model = load_model(
        RemoveBackground(),
        cache_dir=tmp_path,
        model_path=tmp_path / source.name,
        providers=("cpu",),
        dynamic_batch=False,
    )
    assert model.max_batch == 1
