"""The writer fence in PostgreSQL: only the newest lease term writes, and a claim waits for writes in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from core.adapters.migrations import migrate
from core.adapters.writer_fence import WriterFence
from core.domain.errors import LeaseLost

pytestmark = pytest.mark.integration

KRAKEN_ID = 4  # a seeded exchange no other test writes a fence for


@pytest.fixture
async def fence(database_url: str) -> AsyncIterator[WriterFence]:
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=4)
    await migrate(pool)
    await pool.execute("DELETE FROM writer_fences WHERE exchange_id = $1", KRAKEN_ID)
    yield WriterFence(pool, KRAKEN_ID)
    await pool.close()


async def test_only_the_newest_term_may_write(fence: WriterFence) -> None:
    await fence.claim(1, "a")
    async with fence.transaction(1):
        pass
    await fence.claim(2, "b")
    with pytest.raises(LeaseLost):
        async with fence.transaction(1):
            pytest.fail("an old term must not get a transaction")
    with pytest.raises(LeaseLost):
        await fence.claim(1, "a")  # a late claim of an older term changes nothing
    async with fence.transaction(2):
        pass


async def test_a_claim_waits_for_the_old_writers_transaction_in_flight(fence: WriterFence) -> None:
    await fence.claim(5, "old")
    order: list[str] = []
    async with fence.transaction(5):
        claim = asyncio.create_task(fence.claim(6, "new"))
        await asyncio.sleep(0.3)
        assert not claim.done()  # blocked on the old writer's row lock
        order.append("old commit")
    await claim
    order.append("new claim")
    assert order == ["old commit", "new claim"]
    with pytest.raises(LeaseLost):
        async with fence.transaction(5):
            pass
