"""The README's Python SDK examples run as they are, against a real server and worker.

Each example is the ```python block right after a `<!-- sdk-example: NAME -->` line;
it connects to `$SURGE_NATS_URL` (its default), here the test's own server.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

from function.local.nats_server import EmbeddedNats
from tests.conftest import REPO
from tests.sdk.conftest import ThreadedWorkers

pytestmark = pytest.mark.timeout(120)

EXAMPLE = re.compile(r"^<!-- sdk-example: (\w+) -->\n```python\n(.*?)^```$", re.S | re.M)


def readme_examples() -> dict[str, str]:
    return dict(EXAMPLE.findall((REPO / "README.md").read_text()))


def test_the_readme_shows_a_sync_and_an_async_example() -> None:
    assert sorted(readme_examples()) == ["async", "sync"]


@pytest.mark.parametrize("name", ["sync", "async"])
def test_a_readme_example_runs(
    name: str,
    nats_server: EmbeddedNats,
    threaded_worker: ThreadedWorkers,
    photos: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    threaded_worker(function="remove-bg")
    monkeypatch.setenv("SURGE_NATS_URL", nats_server.url)
    monkeypatch.chdir(tmp_path)
    shutil.copy(photos["astronaut"], tmp_path / "photo.png")
    code = compile(readme_examples()[name], f"README.md ({name} example)", "exec")
    exec(code, {"__name__": "__main__"})
    with Image.open(tmp_path / "photo.png") as photo:
        size = photo.size
    if name == "sync":
        with Image.open(tmp_path / "mask.png") as mask:
            assert mask.size == size and mask.mode == "L"
    else:
        cutouts = sorted(tmp_path.glob("cutout-*.png"))
        assert len(cutouts) == 2
        with Image.open(cutouts[0]) as cutout:
            assert cutout.size == size and cutout.mode == "RGBA"
        assert "submitted 2/2" in capsys.readouterr().out
