"""common.bounded.within: a wait that ends on time even when the awaited code swallows its cancellation."""

from __future__ import annotations

import asyncio
import time

import pytest

from common.bounded import within


async def _swallowing(seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            await asyncio.sleep(left)
        except asyncio.CancelledError:
            continue
    return "late"


async def test_asyncio_timeout_is_held_by_a_step_that_swallows_its_cancel() -> None:
    """Why within exists: the standard timeout waits for the step to give up."""
    started = time.monotonic()
    async with asyncio.timeout(0.05):
        assert await _swallowing(0.3) == "late"
    assert time.monotonic() - started >= 0.3


async def test_within_ends_on_time_whatever_the_step_does() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await within(_swallowing(0.5), 0.05)
    assert time.monotonic() - started < 0.3


async def test_within_returns_the_result_and_raises_the_error_of_a_step_on_time() -> None:
    async def fails() -> None:
        raise ValueError("no")

    assert await within(asyncio.sleep(0, result=7), 1.0) == 7
    with pytest.raises(ValueError, match="no"):
        await within(fails(), 1.0)


async def test_a_cancelled_caller_cancels_its_step() -> None:
    step = asyncio.Event()

    async def waits() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            step.set()

    caller = asyncio.create_task(within(waits(), 10.0))
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await asyncio.wait_for(step.wait(), 1.0)
