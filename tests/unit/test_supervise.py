"""The task supervisor: nothing it runs ends silently, and only aclose stops it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from common.supervise import TaskSupervisor


def fast() -> TaskSupervisor:
    restarted: list[str] = []
    supervisor = TaskSupervisor(on_restart=restarted.append, min_backoff_s=0.01, max_backoff_s=0.05)
    supervisor.restarted = restarted  # type: ignore[attr-defined]
    return supervisor


async def wait_for(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(2.0):
        while not condition():  # noqa: ASYNC110 - polling the supervisor's public state is the point
            await asyncio.sleep(0.005)


async def test_a_failing_task_is_logged_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    supervisor, runs = fast(), []

    async def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR, logger="common.supervise"):
        supervisor.spawn("flaky", flaky)
        await wait_for(lambda: len(runs) == 3)
    assert supervisor.restarts() == {"flaky": 2}
    assert supervisor.restarted == ["flaky", "flaky"]  # type: ignore[attr-defined]
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR"]
    assert "RuntimeError: boom" in caplog.text
    await wait_for(lambda: not supervisor.degraded())
    assert await supervisor.aclose(1.0) == []


async def test_a_task_is_degraded_until_it_runs_again() -> None:
    supervisor = TaskSupervisor(min_backoff_s=0.3, max_backoff_s=0.3)
    started = asyncio.Event()
    runs = []

    async def once_broken() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise OSError("redis is gone")
        started.set()
        await asyncio.Event().wait()

    supervisor.spawn("writer:sim", once_broken)
    await wait_for(lambda: bool(supervisor.degraded()))
    assert supervisor.degraded() == {"writer:sim": "OSError: redis is gone"}
    await asyncio.wait_for(started.wait(), 2)
    assert supervisor.degraded() == {}
    await supervisor.aclose(1.0)


async def test_a_stray_cancellation_from_inside_is_a_failure_not_a_stop() -> None:
    """What killed the writer: a CancelledError raised by the task itself while nobody stopped it."""
    supervisor, runs = fast(), []

    async def stray() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise asyncio.CancelledError
        await asyncio.Event().wait()

    supervisor.spawn("stray", stray)
    await wait_for(lambda: len(runs) == 2)
    assert supervisor.restarts() == {"stray": 1}
    assert supervisor.alive() == {"stray": True}
    await supervisor.aclose(1.0)


async def test_returning_is_an_unexpected_end_too() -> None:
    supervisor, runs = fast(), []

    async def returns() -> None:
        runs.append(1)
        if len(runs) > 1:
            await asyncio.Event().wait()

    supervisor.spawn("returns", returns)
    await wait_for(lambda: len(runs) == 2)
    assert supervisor.restarts() == {"returns": 1}
    await supervisor.aclose(1.0)


async def test_aclose_stops_for_good_and_names_what_did_not_stop() -> None:
    supervisor = fast()
    cancelled = asyncio.Event()

    async def polite() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            cancelled.set()

    async def stubborn() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # a slow cleanup, longer than aclose waits
            raise

    supervisor.spawn("polite", polite)
    supervisor.spawn("stubborn", stubborn)
    await asyncio.sleep(0.01)
    assert await supervisor.aclose(0.2) == ["stubborn"]
    assert cancelled.is_set()
    assert supervisor.restarts() == {"polite": 0, "stubborn": 0}
    assert supervisor.alive()["polite"] is False
    await wait_for(lambda: not any(supervisor.alive().values()))


def test_names_are_unique() -> None:
    async def go() -> None:
        supervisor = fast()
        supervisor.spawn("a", asyncio.Event().wait)
        with pytest.raises(ValueError):
            supervisor.spawn("a", asyncio.Event().wait)
        await supervisor.aclose(1.0)

    asyncio.run(go())


async def test_stop_ends_the_named_tasks_for_good_and_leaves_the_others_running(
    caplog: pytest.LogCaptureFixture,
) -> None:
    supervisor = fast()
    stopped = asyncio.Event()

    async def feed() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopped.set()

    async def other() -> None:
        await asyncio.Event().wait()

    supervisor.spawn("writer:sim", feed)
    supervisor.spawn("price-updates", other)
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.ERROR, logger="common.supervise"):
        assert await supervisor.stop(["writer:sim"], 1.0) == []
        await asyncio.sleep(0.1)  # longer than the backoff: a restart would have happened
    assert stopped.is_set()
    assert supervisor.alive() == {"writer:sim": False, "price-updates": True}
    assert supervisor.restarts() == {"writer:sim": 0, "price-updates": 0}
    assert not supervisor.degraded() and not caplog.records  # a stop is no failure
    assert await supervisor.aclose(1.0) == []
