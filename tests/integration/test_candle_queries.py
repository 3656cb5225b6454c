"""Candle reads over the Redis window and PostgreSQL together, against real stores: no gap, no duplicate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from decimal import Decimal as D

import asyncpg
import grpc
import pytest

from core.adapters.candle_store import CandleRowsReader, CandleStore
from core.adapters.migrations import migrate
from core.adapters.redis_keys import RedisKeys
from core.domain.candles import Candle
from core.domain.errors import InvalidArgument, NotFound
from core.domain.timeframes import Timeframe
from core.services.candle_queries import CandleQueries
from perseus.marketdata.v1 import (
    candles_pb2,
    common_pb2,
    market_data_service_pb2 as md_pb2,
    market_data_service_pb2_grpc as md_grpc,
)
from tests.support.redis_target import pipeline, redis_client

pytestmark = pytest.mark.integration

MIN = 60_000
T0 = 1_790_000_000_000 - 1_790_000_000_000 % MIN
WINDOW = 5
COUNT = 12  # candles 0..11; the window keeps 7..11, PostgreSQL has all
EXCHANGE_IDS = {"sim": 1, "coinbase": 2, "binance": 3, "kraken": 4}


def candle(i: int) -> Candle:
    price = D(100 + i)
    return Candle("coinbase", "CQ-USD", Timeframe.M1, T0 + i * MIN, price, price + 1, price - 1, price, D(i))


@pytest.fixture(scope="module")
async def queries(database_url: str, redis_url: str, redis_prefix: str) -> AsyncIterator[CandleQueries]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    await migrate(pool)
    client, bus = redis_client(redis_url), pipeline(redis_url)
    keys = RedisKeys(redis_prefix + "candles:")
    store = CandleStore(pool, bus, keys, window_size=WINDOW)
    candles = [candle(i) for i in range(COUNT)]
    await store.insert(EXCHANGE_IDS["coinbase"], candles)
    await store.add_to_windows(EXCHANGE_IDS["coinbase"], candles)
    await bus.aclose()
    yield CandleQueries(CandleRowsReader(pool, client, keys, EXCHANGE_IDS), EXCHANGE_IDS)
    await client.aclose()
    await pool.close()


async def indexes(queries: CandleQueries, **kw: object) -> list[int]:
    args = {"timeframe": Timeframe.M1, "limit": 0, "start_ms": None, "end_ms": None, **kw}
    query = queries.query("coinbase", "CQ/USD", **args)  # type: ignore[arg-type]
    return [
        (candles_pb2.Candle.FromString(c).timestamp.seconds * 1000 - T0) // MIN for c in await queries.candles(query)
    ]


@pytest.mark.parametrize(
    ("kw", "expected"),
    [
        ({"limit": 3}, [9, 10, 11]),  # the window alone
        ({"limit": 8}, list(range(4, 12))),  # window + PostgreSQL before it
        ({"limit": 100}, list(range(12))),  # everything, once each
        ({"limit": 3, "end_ms": T0 + 9 * MIN}, [6, 7, 8]),  # across the boundary
        ({"limit": 3, "end_ms": T0 + 4 * MIN}, [1, 2, 3]),  # PostgreSQL alone
        ({"limit": 4, "start_ms": T0 + 8 * MIN}, [8, 9, 10, 11]),  # from inside the window
        ({"limit": 6, "start_ms": T0 + 3 * MIN}, [3, 4, 5, 6, 7, 8]),  # from PostgreSQL into the window
        ({"limit": 10, "start_ms": T0 + 3 * MIN, "end_ms": T0 + 9 * MIN}, [3, 4, 5, 6, 7, 8]),
        ({"limit": 2, "start_ms": T0 + 100 * MIN}, []),
    ],
)
async def test_reads_merge_the_window_and_history(
    queries: CandleQueries, kw: dict[str, int], expected: list[int]
) -> None:
    assert await indexes(queries, **kw) == expected


async def test_candles_keep_their_exact_values_and_internal_fields(queries: CandleQueries) -> None:
    query = queries.query("coinbase", "CQ-USD", Timeframe.M1, 100, None, None)
    first, last = (candles_pb2.Candle.FromString(c) for c in (await queries.candles(query))[::11])
    assert (first.open, first.volume, last.close) == ("100", "0", "111")  # 0 from PostgreSQL, 11 from the window
    assert first.sequence_num == T0 // MIN and first.exchange_id == EXCHANGE_IDS["coinbase"]


@pytest.mark.parametrize(
    ("exchange", "symbol", "limit", "start", "end", "error"),
    [
        ("nyse", "CQ-USD", 10, None, None, NotFound),
        ("", "CQ-USD", 10, None, None, InvalidArgument),
        ("coinbase", "CQ_USD!", 10, None, None, InvalidArgument),
        ("coinbase", "CQ-USD", 1001, None, None, InvalidArgument),
        ("coinbase", "CQ-USD", -1, None, None, InvalidArgument),
        ("coinbase", "CQ-USD", 10, T0 + MIN, T0, InvalidArgument),
    ],
)
async def test_bad_requests_are_refused(
    queries: CandleQueries, exchange: str, symbol: str, limit: int, start: int | None, end: int | None, error: type
) -> None:
    with pytest.raises(error):
        queries.query(exchange, symbol, Timeframe.M1, limit, start, end)


async def test_get_candles_over_grpc(
    channel: grpc.Channel, database_url: str, redis_url: str, redis_prefix: str, migrated_env: dict[str, str]
) -> None:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    client = pipeline(redis_url)
    try:
        store = CandleStore(pool, client, RedisKeys(redis_prefix), window_size=WINDOW)  # the core's prefix
        candles = [replace(candle(i), symbol="GC-USD") for i in range(COUNT)]
        await store.insert(EXCHANGE_IDS["coinbase"], candles)
        await store.add_to_windows(EXCHANGE_IDS["coinbase"], candles)
    finally:
        await client.aclose()
        await pool.close()
    stub = md_grpc.MarketDataServiceStub(channel)
    request = md_pb2.GetCandlesRequest(exchange="coinbase", symbol="gc/usd", timeframe=common_pb2.TIMEFRAME_1M, limit=8)
    reply = stub.GetCandles(request, timeout=5)
    assert [c.close for c in reply.candles] == [str(100 + i) for i in range(4, 12)]
    assert all(c.exchange == "coinbase" and c.symbol == "GC-USD" for c in reply.candles)
    for bad, code in [
        (md_pb2.GetCandlesRequest(exchange="nyse", symbol="GC-USD"), grpc.StatusCode.NOT_FOUND),
        (md_pb2.GetCandlesRequest(exchange="coinbase", symbol="GC-USD", limit=5000), grpc.StatusCode.INVALID_ARGUMENT),
        (md_pb2.GetCandlesRequest(exchange="coinbase", symbol="G C"), grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetCandles(bad, timeout=5)
        assert caught.value.code() is code
