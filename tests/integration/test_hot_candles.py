"""The core's kept candle answers: reused until the series closes a candle, never kept across a close,
and dropped whole after a Redis reconnect; plus GetCandles through a real core right after a close."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from grpc import aio

from common import resp
from core.adapters.candle_store import CandleStore
from core.adapters.events import Event, EventPublisher
from core.adapters.redis_keys import RedisKeys
from core.adapters.stream_history import StreamHistory
from core.adapters.stream_hub import StreamHub
from core.codec.events import candle_channel, candle_event
from core.domain.candles import Candle
from core.domain.timeframes import Timeframe
from core.services.candle_queries import CandleQuery
from core.services.hot_candles import HotCandles
from perseus.marketdata.v1 import (
    common_pb2,
    market_data_service_pb2 as md_pb2,
    market_data_service_pb2_grpc as md_grpc,
    stream_service_pb2 as stream_pb2,
    stream_service_pb2_grpc as stream_grpc,
)
from tests.support.processes import Process
from tests.support.redis_target import pipeline

pytestmark = pytest.mark.integration

MINUTE = 60_000


def query(symbol: str, limit: int = 3) -> CandleQuery:
    return CandleQuery("sim", symbol, Timeframe.M1, limit, None, None)


def candle(symbol: str, open_time: int, close: str) -> Candle:
    price = Decimal(close)
    return Candle("sim", symbol, Timeframe.M1, open_time, price, price, price, price, Decimal("1"))


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[resp.Pipeline]:
    """The raw pipeline the core's candle store, publisher and stream history take."""
    client = pipeline(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def hot(redis_url: str, redis: resp.Pipeline, redis_prefix: str) -> AsyncIterator[HotCandles]:
    hub = StreamHub(redis_url)
    await hub.start()
    cache = HotCandles(hub, StreamHistory(redis, RedisKeys(redis_prefix)).channel_name)
    cache.start()
    yield cache
    await cache.aclose()
    await hub.aclose()


async def close_candle(redis: resp.Pipeline, prefix: str, c: Candle) -> None:
    """What the writer does on a close: the window first, then the candle_close event."""
    keys = RedisKeys(prefix)
    await CandleStore(None, redis, keys).add_to_windows(1, [c])  # type: ignore[arg-type]
    event = Event(candle_channel(c), candle_event(c, exchange_id=1, now_ms=int(time.time() * 1000)))
    await EventPublisher(redis, keys).publish([event])


async def until(check) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(5):
        while True:
            if check():
                return
            await asyncio.sleep(0.01)


async def test_an_answer_is_reused_until_its_series_closes_a_candle(
    hot: HotCandles, redis: resp.Pipeline, redis_prefix: str
) -> None:
    symbol = f"HC{secrets.token_hex(3).upper()}-USD"
    reads: list[int] = []

    async def read(q: CandleQuery) -> bytes:
        reads.append(1)
        return f"answer {len(reads)}".encode()

    assert await hot.answer(query(symbol), read) == b"answer 1"
    assert await hot.answer(query(symbol), read) == b"answer 1"
    assert await hot.answer(query(symbol, limit=5), read) == b"answer 2"  # another limit, another answer
    await close_candle(redis, redis_prefix, candle(symbol, 0, "1"))
    await until(lambda: hot.get(query(symbol)) is None)
    assert await hot.answer(query(symbol), read) == b"answer 3"
    assert await hot.answer(query(symbol, limit=5), read) == b"answer 4"
    other = f"HC{secrets.token_hex(3).upper()}-USD"
    assert await hot.answer(query(other), read) == b"answer 5"
    assert await hot.answer(query(symbol), read) == b"answer 3"  # the other series' reads changed nothing


async def test_a_close_during_the_read_is_never_kept(hot: HotCandles, redis: resp.Pipeline, redis_prefix: str) -> None:
    symbol = f"HC{secrets.token_hex(3).upper()}-USD"
    closes = 0

    async def read(q: CandleQuery) -> bytes:
        nonlocal closes
        if closes == 0:  # the window changes while this read is under way
            closes += 1
            await close_candle(redis, redis_prefix, candle(symbol, 0, "1"))
            await asyncio.sleep(0.2)
        return f"read {closes}".encode()

    assert await hot.answer(query(symbol), read) == b"read 1"
    assert hot.get(query(symbol)) is None  # not kept: it may predate the close
    assert await hot.answer(query(symbol), read) == b"read 1"
    assert hot.get(query(symbol)) == b"read 1"


async def test_unbounded_reads_are_not_kept(hot: HotCandles) -> None:
    symbol = f"HC{secrets.token_hex(3).upper()}-USD"
    calls = 0

    async def read(q: CandleQuery) -> bytes:
        nonlocal calls
        calls += 1
        return b"x"

    bounded = CandleQuery("sim", symbol, Timeframe.M1, 3, None, int(time.time() * 1000))
    await hot.answer(bounded, read)
    await hot.answer(bounded, read)
    assert calls == 2


async def test_get_candles_right_after_a_close_has_the_new_candle(
    core: Process, redis: resp.Pipeline, redis_prefix: str
) -> None:
    symbol = f"HC{secrets.token_hex(3).upper()}-USD"
    start = (int(time.time() * 1000) // MINUTE - 10) * MINUTE
    for i in range(3):
        await close_candle(redis, redis_prefix, candle(symbol, start + i * MINUTE, str(10 + i)))
    async with aio.insecure_channel(core.addr) as channel:
        market = md_grpc.MarketDataServiceStub(channel)
        request = md_pb2.GetCandlesRequest(exchange="sim", symbol=symbol, timeframe=common_pb2.TIMEFRAME_1M, limit=2)
        for _ in range(3):  # the answer is now kept by the core
            assert [c.close for c in (await market.GetCandles(request, timeout=5)).candles] == ["11", "12"]
        stream = stream_grpc.StreamServiceStub(channel).Subscribe(
            stream_pb2.SubscribeRequest(channels=[f"candles:sim:{symbol}:1m"])
        )
        await stream.read()  # subscribed
        for i in range(3, 6):
            await close_candle(redis, redis_prefix, candle(symbol, start + i * MINUTE, str(10 + i)))
            await stream.read()  # a client that saw the close...
            answer = await market.GetCandles(request, timeout=5)  # ...reads the candle it announced
            assert [c.close for c in answer.candles] == [str(9 + i), str(10 + i)]
        stream.cancel()
