"""The `surge` command's start: no cyclic collections while it imports, then the imported
objects frozen out of later collections."""

from __future__ import annotations

import gc
import subprocess
import sys
from collections.abc import Iterator

import pytest

from function.startup import imported, importing


@pytest.fixture
def gc_restored() -> Iterator[None]:
    yield
    gc.enable()
    gc.unfreeze()


def test_collections_pause_for_the_imports_then_resume_without_them(gc_restored: None) -> None:
    importing()
    assert not gc.isenabled()
    before = gc.get_freeze_count()
    made = [object() for _ in range(1000)]
    imported()
    assert gc.isenabled() and gc.get_freeze_count() >= before + len(made)
    frozen = gc.get_freeze_count()
    imported()  # again: nothing changes
    assert gc.isenabled() and gc.get_freeze_count() == frozen


def test_a_command_runs_with_the_collector_on() -> None:
    probe = (
        "import gc, sys; sys.argv = ['surge', 'version-probe'];"
        "from function.__main__ import run; import function.cli as cli;"
        "probe = lambda: print(gc.isenabled(), gc.get_freeze_count() > 0);"
        "cli.app.command('version-probe')(probe);"
        "run()"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]
