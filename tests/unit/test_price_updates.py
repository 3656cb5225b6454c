"""The after-commit price writer: coalesces queued ticks, bounds its queue, retries while Redis is down."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from decimal import Decimal

import pytest

from core.domain.errors import StorageUnavailable
from core.domain.prices import Tick
from core.services import price_updates as module
from core.services.price_updates import PriceUpdates


def tick(n: int) -> Tick:
    return Tick("BTC-USD", Decimal(n), Decimal(1), "sim", 1_700_000_000_000 + n)


class Cache:
    """The LatestPriceWriter port in memory; down for its first ``failures`` writes, as the adapter reports it."""

    def __init__(self, failures: int = 0) -> None:
        self.writes: list[list[Tick]] = []
        self.failures = failures

    async def write(self, ticks: Sequence[Tick]) -> None:
        if self.failures:
            self.failures -= 1
            raise StorageUnavailable("redis", "redis is down")
        self.writes.append(list(ticks))


async def run_until_drained(updates: PriceUpdates) -> None:
    task = asyncio.create_task(updates.run())
    try:
        await asyncio.wait_for(updates.drained(), 5)
    finally:
        task.cancel()


async def test_ticks_queued_meanwhile_are_written_together_in_order() -> None:
    cache = Cache()
    updates = PriceUpdates(cache)
    await updates([tick(1), tick(2)])
    await updates([tick(3)])
    await run_until_drained(updates)
    assert cache.writes == [[tick(1), tick(2), tick(3)]]


async def test_a_full_queue_drops_the_oldest_and_counts_them() -> None:
    cache = Cache()
    updates = PriceUpdates(cache, max_pending=3)
    await updates([tick(n) for n in range(5)])
    await run_until_drained(updates)
    assert cache.writes == [[tick(2), tick(3), tick(4)]]
    assert updates.dropped == 2


async def test_a_redis_outage_is_retried_without_losing_the_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "RETRY_S", (0.01,))
    cache = Cache(failures=2)
    updates = PriceUpdates(cache)
    await updates([tick(1)])
    await run_until_drained(updates)
    assert cache.writes == [[tick(1)]]
    assert updates.failures == 2
