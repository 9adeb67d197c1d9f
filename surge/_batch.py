"""Many jobs at once: bounded concurrency, progress as each one lands, and the first
error stopping the rest (raised as it is, with a note of how far the batch got)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

__all__ = ["Progress", "each"]

T = TypeVar("T")
R = TypeVar("R")

Progress = Callable[[int, int], None]
"""`on_progress(done, total)`: called after each item, in the SDK's event loop."""


async def each(
    items: Sequence[T],
    work: Callable[[T], Awaitable[R | None]],
    *,
    concurrency: int,
    on_progress: Progress | None = None,
    what: str = "items",
) -> list[R | None]:
    """`work(item)` for every item, at most `concurrency` at a time; the answers in the
    items' order. `on_progress(done, total)` follows each answer that is not None."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, not {concurrency}")
    total = len(items)
    answers: list[R | None] = [None] * total
    done = 0
    queue = iter(range(total))

    async def lane() -> None:
        nonlocal done
        for index in queue:  # shared: each lane takes the next index
            answer = await work(items[index])
            answers[index] = answer
            if answer is not None:
                done += 1
                if on_progress is not None:
                    on_progress(done, total)

    lanes = [asyncio.ensure_future(lane()) for _ in range(min(concurrency, total))]
    try:
        await asyncio.gather(*lanes)
    except BaseException as exc:
        for task in lanes:
            task.cancel()
        await asyncio.gather(*lanes, return_exceptions=True)
        if isinstance(exc, Exception):
            exc.add_note(f"{done} of {total} {what} were done before this error")
        raise
    return answers
