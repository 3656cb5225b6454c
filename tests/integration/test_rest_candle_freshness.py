"""The candle body cache never keeps a candle older than the window: a close or a rewrite is served next."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from decimal import Decimal

import httpx
import pytest

from core.adapters.candle_store import CandleStore
from core.adapters.events import Event, EventPublisher
from core.adapters.redis_keys import RedisKeys
from core.codec.events import candle_channel, candle_event
from core.domain.candles import Candle
from core.domain.timeframes import Timeframe
from tests.support.market_seed import Seed
from tests.support.redis_target import pipeline
from tests.support.rest_stack import RestStack, seeded_rest_stack

pytestmark = pytest.mark.integration

SEED = Seed(exchange="freshx", exchange_id=740_001, symbol_id=740_002, symbol="FRS-USD")
PATH = f"/public/v1/candles/{SEED.exchange}/{SEED.symbol}"
CLOSE_EVENT_TRIP_S = 0.5


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str) -> Iterator[RestStack]:
    with seeded_rest_stack(base_env, admin_database_url, SEED) as stack:
        yield stack


async def add_to_window(stack: RestStack, index: int, close: str) -> None:
    """As the exchange pipeline does when a candle closes: into the window, then ``candle_close`` published."""
    client = pipeline(stack.env["PERSEUS_REDIS_URL"])
    try:
        keys = RedisKeys(stack.env["PERSEUS_REDIS_PREFIX"])
        store = CandleStore(None, client, keys)  # type: ignore[arg-type]
        price = Decimal(close)
        candle = Candle(
            SEED.exchange, SEED.symbol, Timeframe.H1, SEED.open_ms(index), price, price, price, price, price
        )
        await store.add_to_windows(SEED.exchange_id, [candle])
        event = candle_event(candle, exchange_id=SEED.exchange_id, now_ms=int(time.time() * 1000))
        await EventPublisher(client, keys).publish([Event(candle_channel(candle), event)])
    finally:
        await client.aclose()


def newest(stack: RestStack, **params: object) -> dict[str, str]:
    return stack.get(PATH, params={"limit": 5, **params}).json()["data"][-1]


def served_from_now_on(stack: RestStack, close: str) -> None:
    """``close`` is served within the close event's trip (the core may answer from its own cache until the
    event arrives), and from then on always: no older body is ever kept."""
    deadline = time.monotonic() + CLOSE_EVENT_TRIP_S
    while newest(stack)["close"] != close:
        assert time.monotonic() < deadline, f"{close} not served {CLOSE_EVENT_TRIP_S} s after it closed"
        time.sleep(0.01)
    assert {newest(stack)["close"] for _ in range(20)} == {close}


def test_a_closed_candle_and_a_rewrite_are_served_and_nothing_older_after(stack: RestStack) -> None:
    assert newest(stack)["close"] == SEED.price(SEED.candles - 1)
    assert newest(stack)["close"] == SEED.price(SEED.candles - 1)  # now from the cache
    asyncio.run(add_to_window(stack, SEED.candles, "555.5"))
    served_from_now_on(stack, "555.5")
    asyncio.run(add_to_window(stack, SEED.candles, "666.25"))  # the same candle, rewritten
    served_from_now_on(stack, "666.25")


def test_concurrent_reads_agree_with_the_window(stack: RestStack) -> None:
    async def burst() -> list[str]:
        async with httpx.AsyncClient(timeout=10, headers={"X-API-Key": stack.keys["internal"]}) as client:
            responses = await asyncio.gather(
                *(client.get(f"http://{stack.rest.addr}{PATH}", params={"limit": 5}) for _ in range(40))
            )
        return [r.json()["data"][-1]["close"] for r in responses]

    asyncio.run(add_to_window(stack, SEED.candles + 1, "777"))
    served_from_now_on(stack, "777")
    assert set(asyncio.run(burst())) == {"777"}
