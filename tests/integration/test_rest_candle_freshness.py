"""The candle body cache never serves a candle older than the window: a close or a rewrite shows at once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest
import redis.asyncio as aioredis

from core.adapters.candle_store import CandleStore
from core.adapters.redis_keys import RedisKeys
from core.domain.candles import Candle
from core.domain.timeframes import Timeframe
from tests.support.market_seed import Seed
from tests.support.rest_stack import RestStack, seeded_rest_stack

pytestmark = pytest.mark.integration

SEED = Seed(exchange="freshx", exchange_id=740_001, symbol_id=740_002, symbol="FRS-USD")
PATH = f"/public/v1/candles/{SEED.exchange}/{SEED.symbol}"


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str) -> Iterator[RestStack]:
    with seeded_rest_stack(base_env, admin_database_url, SEED) as stack:
        yield stack


async def add_to_window(stack: RestStack, index: int, close: str) -> None:
    """Through the core's own window writer, as the pipeline does when a candle closes."""
    client = aioredis.Redis.from_url(stack.env["PERSEUS_REDIS_URL"])
    try:
        store = CandleStore(None, client, RedisKeys(stack.env["PERSEUS_REDIS_PREFIX"]))  # type: ignore[arg-type]
        price = Decimal(close)
        candle = Candle(
            SEED.exchange, SEED.symbol, Timeframe.H1, SEED.open_ms(index), price, price, price, price, price
        )
        await store.add_to_windows(SEED.exchange_id, [candle])
    finally:
        await client.aclose()


def newest(stack: RestStack, **params: object) -> dict[str, str]:
    return stack.get(PATH, params={"limit": 5, **params}).json()["data"][-1]


def test_a_closed_candle_and_a_rewrite_are_served_at_once(stack: RestStack) -> None:
    assert newest(stack)["close"] == SEED.price(SEED.candles - 1)
    assert newest(stack)["close"] == SEED.price(SEED.candles - 1)  # now from the cache
    asyncio.run(add_to_window(stack, SEED.candles, "555.5"))
    assert newest(stack)["close"] == "555.5"
    asyncio.run(add_to_window(stack, SEED.candles, "666.25"))  # the same candle, rewritten
    assert newest(stack)["close"] == "666.25"


def test_concurrent_reads_agree_with_the_window(stack: RestStack) -> None:
    async def burst() -> list[str]:
        async with httpx.AsyncClient(timeout=10, headers={"X-API-Key": stack.keys["internal"]}) as client:
            responses = await asyncio.gather(
                *(client.get(f"http://{stack.rest.addr}{PATH}", params={"limit": 5}) for _ in range(40))
            )
        return [r.json()["data"][-1]["close"] for r in responses]

    asyncio.run(add_to_window(stack, SEED.candles + 1, "777"))
    assert set(asyncio.run(burst())) == {"777"}
