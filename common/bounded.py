"""Waits that end on time even when the awaited code does not honour its cancellation.

``asyncio.timeout`` ends a wait by cancelling the waiting task and turning the
``CancelledError`` into ``TimeoutError``; code that swallows the cancellation
(catches it and carries on, or retries) holds the wait for as long as it
likes. A writer's lease renewal through redis-py's cluster client did that
once while a master failed over (Python 3.11): the renewal never returned, so
the writer neither kept its lease nor gave it up, and stored nothing until it
was restarted. :func:`within` waits for a task of its own instead: at the
deadline the caller gets ``TimeoutError`` whatever that task does; the task is
cancelled and left to end by itself (its result or error is dropped).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

__all__ = ["within"]

T = TypeVar("T")


async def within(step: Awaitable[T], timeout_s: float) -> T:
    """The result of ``step``, or ``TimeoutError`` after ``timeout_s`` even if ``step`` ignores cancellation."""
    task = asyncio.ensure_future(step)
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:  # our caller is stopping: so does the step (it may take its time)
        task.cancel()
        task.add_done_callback(_drop)
        raise
    if task in done:
        return task.result()
    task.cancel()
    task.add_done_callback(_drop)
    raise TimeoutError(f"no answer within {timeout_s:g} s")


def _drop(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: an abandoned step's error is not "never retrieved"
