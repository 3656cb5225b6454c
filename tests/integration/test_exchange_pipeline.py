"""The exchange pipeline against real PostgreSQL and Redis, with a clock the test controls."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal as D

import asyncpg
import pytest
import redis.asyncio as aioredis

from core.adapters.candle_store import CandleStore
from core.adapters.events import EventPublisher
from core.adapters.migrations import migrate
from core.adapters.redis_keys import RedisKeys
from core.adapters.tick_store import TickStore
from core.domain.channels import Channel, ChannelFamily
from core.domain.market_events import ExchangeCandle, Trade
from core.domain.prices import Tick
from core.domain.timeframes import Timeframe
from core.services.exchange_pipeline import ExchangePipeline, LeaseLost
from perseus.marketdata.v1 import candles_pb2, stream_service_pb2

pytestmark = pytest.mark.integration

MIN = 60_000
T0 = 1_800_000_000_000 - 1_800_000_000_000 % (24 * 3600 * 1000)  # a UTC day boundary in 2027


Stores = tuple[asyncpg.Pool, aioredis.Redis, RedisKeys]


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> int:
        return self.now


@pytest.fixture(scope="module")
async def stores(database_url: str, redis_url: str, redis_prefix: str) -> AsyncIterator[Stores]:
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=4)
    await migrate(pool)
    client = aioredis.Redis.from_url(redis_url)
    yield pool, client, RedisKeys(redis_prefix + "pipeline:")
    await client.aclose()
    await pool.close()


def pipeline(stores: Stores, exchange: str, clock: Clock, **kw: object) -> ExchangePipeline:
    pool, client, keys = stores
    after: list[Tick] = []

    async def after_ticks(ticks: list[Tick]) -> None:
        after.extend(ticks)

    p = ExchangePipeline(
        exchange,
        {"sim": 1, "coinbase": 2, "binance": 3, "kraken": 4}[exchange],
        ticks=TickStore(pool),
        after_ticks=after_ticks,  # type: ignore[arg-type]
        candles=CandleStore(pool, client, keys),
        publisher=EventPublisher(client, keys),
        clock_ms=clock,
        may_write=kw.pop("may_write", lambda: True),  # type: ignore[arg-type]
        build_from_trades=bool(kw.pop("build_from_trades", True)),
    )
    p.after = after  # type: ignore[attr-defined]
    return p


def trade(symbol: str, price: str, size: str, ts: int, exchange: str = "sim") -> Trade:
    return Trade(exchange, symbol, D(price), D(size), ts, trade_id=f"{ts}")


async def test_trades_become_stored_ticks_and_candles_that_close_on_the_clock(stores: Stores) -> None:
    pool, client, keys = stores
    clock = Clock()
    p = pipeline(stores, "sim", clock)
    await p.on_events([trade("PIPE-USD", "10", "1", T0 + 1_000), trade("PIPE-USD", "12", "2", T0 + 20_000)])
    await p.on_events([trade("PIPE-USD", "9", "1", T0 + 59_000)])
    clock.now = T0 + MIN + 1_000
    await p.advance()
    assert await pool.fetchval("SELECT count(*) FROM candles WHERE symbol = 'PIPE-USD'") == 0  # grace not over
    clock.now = T0 + MIN + 2_000
    await p.advance()
    row = await pool.fetchrow(
        "SELECT open::text, high::text, low::text, close::text, volume::text, sequence_num FROM candles"
        " WHERE symbol = 'PIPE-USD' AND timeframe = '1m'"
    )
    assert tuple(row) == ("10", "12", "9", "9", "4", T0 // MIN)
    assert await pool.fetchval("SELECT count(*) FROM price_feeds WHERE symbol = 'PIPE-USD' AND source = 'sim'") == 3
    assert len(p.after) == 3  # type: ignore[attr-defined]

    window = await client.zrange(keys.candle_window("sim", "PIPE-USD", Timeframe.M1), 0, -1, withscores=True)
    assert [score for _, score in window] == [T0]
    assert candles_pb2.Candle.FromString(window[0][0]).close == "9"
    history = await client.xrange(keys.stream_history(Channel(ChannelFamily.CANDLES, "sim", "PIPE-USD", Timeframe.M1)))
    assert len(history) == 1  # one candle-close event
    event = stream_service_pb2.StreamEvent.FromString(history[0][1][b"p"])
    assert event.channel == "candles:sim:PIPE-USD:1m" and event.candle_close.high == "12"


async def test_a_replayed_trade_is_not_counted_twice(stores: Stores) -> None:
    pool, _, _ = stores
    clock = Clock()
    p = pipeline(stores, "sim", clock)
    first = [trade("DUP-USD", "5", "1", T0 + 1_000), trade("DUP-USD", "6", "1", T0 + 2_000)]
    await p.on_events(first)
    await p.on_events([*first, trade("DUP-USD", "7", "1", T0 + 3_000)])  # a reconnect snapshot, then a new trade
    clock.now = T0 + MIN + 2_000
    await p.advance()
    assert await pool.fetchval("SELECT volume FROM candles WHERE symbol = 'DUP-USD' AND timeframe = '1m'") == 3
    assert p.stats.duplicate_trades == 2


async def test_a_restarted_pipeline_resumes_after_stored_candles(stores: Stores) -> None:
    pool, _, _ = stores
    clock = Clock()
    p = pipeline(stores, "coinbase", clock)
    await p.on_events([trade("RES-USD", "100", "1", T0 + 1_000, "coinbase")])
    clock.now = T0 + MIN + 2_000
    await p.advance()
    restarted = pipeline(stores, "coinbase", clock)
    await restarted.on_events([trade("RES-USD", "1", "1", T0 + 5_000, "coinbase")])  # late for a stored candle
    await restarted.on_events([trade("RES-USD", "101", "1", T0 + 3 * MIN + 1_000, "coinbase")])
    rows = await pool.fetch(
        "SELECT open_time, close::text, is_synthetic FROM candles WHERE symbol = 'RES-USD' AND timeframe = '1m'"
        " ORDER BY open_time"
    )
    assert [(int(r[0].timestamp() * 1000) - T0, r[1], r[2]) for r in rows] == [
        (0, "100", False),
        (MIN, "100", True),
        (2 * MIN, "100", True),
    ]


async def test_venue_minute_candles_are_the_source_when_configured(stores: Stores) -> None:
    pool, _, _ = stores
    clock = Clock()
    p = pipeline(stores, "binance", clock, build_from_trades=False)
    kline = ExchangeCandle("binance", "KL-USDT", T0, D("1.5"), D("2"), D("1"), D("1.75"), D("10"), closed=True)
    await p.on_events([kline, trade("KL-USDT", "1.6", "3", T0 + 5_000, "binance")])
    clock.now = T0 + MIN + 2_000
    await p.advance()
    row = await pool.fetchrow(
        "SELECT open::text, close::text, volume::text FROM candles WHERE symbol = 'KL-USDT' AND timeframe = '1m'"
    )
    assert tuple(row) == ("1.5", "1.75", "10")  # the trade is a tick only: not counted into the candle


async def test_without_the_lease_nothing_is_written(stores: Stores) -> None:
    pool, _, _ = stores
    p = pipeline(stores, "sim", Clock(), may_write=lambda: False)
    with pytest.raises(LeaseLost):
        await p.on_events([trade("NOLEASE-USD", "1", "1", T0 + 1_000)])
    assert await pool.fetchval("SELECT count(*) FROM price_feeds WHERE symbol = 'NOLEASE-USD'") == 0
