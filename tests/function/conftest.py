"""Unit-test fixtures: the real model and photo cache, decoded photos, loaded models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

from function.models import (
    LoadedModel,
    NsfwClassifier,
    RemoveBackground,
    fetch_models,
    fetch_photos,
    load_model,
)
from function.models.imaging import decode_image

DEFAULT_CACHE = Path(__file__).resolve().parents[2] / ".cache/surge/models"


@pytest.fixture(scope="session")
def model_cache() -> Path:
    """The real cache (env SURGE_MODEL_DIR overrides), with models and photos fetched."""
    path = Path(os.environ.get("SURGE_MODEL_DIR", str(DEFAULT_CACHE)))
    fetch_models(path)
    fetch_photos(path)
    return path


@pytest.fixture(scope="session")
def photo_files(model_cache: Path) -> dict[str, Path]:
    """Test photo name -> cached file."""
    return fetch_photos(model_cache)


@pytest.fixture(scope="session")
def astronaut(photo_files: dict[str, Path]) -> Image.Image:
    """The decoded scikit-image astronaut (512x512 RGB)."""
    return decode_image(photo_files["astronaut"].read_bytes(), "image/png", max_pixels=10**7)


@pytest.fixture(scope="session")
def remove_bg(model_cache: Path) -> LoadedModel:
    """U²-Net-p on the CPU with one intra-op thread."""
    return load_model(RemoveBackground(), cache_dir=model_cache, providers=("cpu",))


@pytest.fixture(scope="session")
def nsfw(model_cache: Path) -> LoadedModel:
    """Open-NSFW on the CPU with one intra-op thread."""
    return load_model(NsfwClassifier(), cache_dir=model_cache, providers=("cpu",))
