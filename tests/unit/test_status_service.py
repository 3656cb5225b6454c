"""The core's status: a probe that cannot be stopped still answers "down" within its bound, and the
components are the supervisor's tasks."""

from __future__ import annotations

import asyncio

from common.supervise import TaskSupervisor
from core.services.status import ComponentHealth, StatusService, supervised_components


async def test_a_probe_that_ignores_its_cancellation_is_down_within_the_bound_and_not_started_twice() -> None:
    # asyncpg on a stalled PostgreSQL: the cancelled query waits, shielded, for the server's acknowledgement
    release = asyncio.Event()
    started: list[int] = []

    async def stalled() -> None:
        started.append(1)
        try:
            await release.wait()
        except asyncio.CancelledError:  # like asyncpg: the cleanup waits for the server, whatever we say
            await release.wait()
            raise

    async def fine() -> None:
        return None

    status = StatusService({"postgres": stalled, "redis": fine}, timeout_s=0.1)
    async with asyncio.timeout(1.0):  # far less than the stall
        first = {d.name: d for d in await status.check()}
        second = {d.name: d for d in await status.check()}
    assert (first["postgres"].up, first["redis"].up) == (False, True)
    assert "no answer within 0.1 s" in first["postgres"].detail
    assert (second["postgres"].up, second["redis"].up) == (False, True)
    assert started == [1]  # the hanging probe is not started again while it hangs
    release.set()
    await asyncio.sleep(0.01)
    assert {d.name: d.up for d in await status.check()} == {"postgres": True, "redis": True}
    assert started == [1, 1]


async def test_components_are_the_supervised_tasks_degraded_until_they_run_again() -> None:
    tasks = TaskSupervisor(min_backoff_s=30.0, max_backoff_s=30.0)
    failed = asyncio.Event()

    async def steady() -> None:
        await asyncio.Event().wait()

    async def broken() -> None:
        failed.set()
        raise RuntimeError("boom")

    tasks.spawn("stream-hub", steady)
    tasks.spawn("price-updates", broken)
    status = StatusService({}, components=supervised_components(tasks))
    try:
        await failed.wait()
        await asyncio.sleep(0.01)
        assert status.components() == [
            ComponentHealth("price-updates", False, "RuntimeError: boom", 1),
            ComponentHealth("stream-hub", True, "", 0),
        ]
    finally:
        await tasks.aclose(1.0)
