"""The `surge` command's start: the cyclic garbage collector waits while the program is
imported. Those imports make hundreds of thousands of objects (classes, pydantic
schemas) that live as long as the process; scanning them, again and again as they pile
up, cost a worker about an eighth of its import time. Once imported, they are frozen out
of every later collection, so the job path's collections do not scan them either."""

from __future__ import annotations

import gc

__all__ = ["imported", "importing"]


def importing() -> None:
    """Before the program's imports: no cyclic collections until `imported()`."""
    gc.disable()


def imported() -> None:
    """After them: what exists now is never collected nor scanned again; collections
    resume for what comes next (safe to call more than once)."""
    if not gc.isenabled():
        gc.freeze()
        gc.enable()
