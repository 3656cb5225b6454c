"""Market data written straight into the stores the core reads (PostgreSQL rows, the Redis candle window).

The rows are the ones the pipeline writes (same tables, the window's
serialized ``Candle`` members with their internal fields set), with chosen
ids and internal values, so a test can look for those values in the
gateway's answers. The core is started afterwards (it loads exchange ids at
startup) in ``pw-host`` mode, so nothing else writes meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from core.adapters.redis_keys import RedisKeys
from core.domain.indicators import MacdVParams, MacdVState, MacdVValue
from core.domain.signals import Stage, Zone
from core.domain.timeframes import Timeframe
from perseus.marketdata.v1 import candles_pb2, common_pb2
from tests.support.redis_target import redis_client

HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Seed:
    exchange: str = "seedx"
    exchange_id: int = 700_001
    symbol_id: int = 700_002
    symbol: str = "SEED-USD"
    candles: int = 30  # 1h candles; the newest 10 in the Redis window, all in PostgreSQL
    window: int = 10
    first_open_ms: int = 1_790_000_000_000 - 1_790_000_000_000 % HOUR_MS
    sequence_base: int = 700_100
    alert_id_base: int = 700_200
    alerts: int = 5
    alert_type: str = "seed-alert-type"
    trigger_label: str = "seed-trigger-label"
    trigger_value: float = 700_301.5
    signal_delta: float = 700_302.25
    worker_id: str = "seed-worker"
    feed_id_base: int = 700_400
    source: str = "seedsrc"

    def open_ms(self, index: int) -> int:
        return self.first_open_ms + index * HOUR_MS

    def price(self, index: int) -> str:
        return f"{100 + index}.{index:02d}"


async def seed_market(database_url: str, redis_url: str, redis_prefix: str, seed: Seed) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO exchanges (id, name, display_name, simulated) VALUES ($1, $2, $3, false)",
            seed.exchange_id,
            seed.exchange,
            seed.exchange.title(),
        )
        base, quote = seed.symbol.split("-")
        await conn.execute(
            "INSERT INTO symbols (id, exchange_id, symbol, base, quote) VALUES ($1, $2, $3, $4, $5)",
            seed.symbol_id,
            seed.exchange_id,
            seed.symbol,
            base,
            quote,
        )
        await conn.executemany(
            "INSERT INTO candles (exchange_id, symbol, timeframe, open_time, open, high, low, close, volume,"
            " is_synthetic, sequence_num) VALUES ($1, $2, '1h', to_timestamp($3 / 1000.0), $4::numeric,"
            " $4::numeric + 1, $4::numeric - 1, $4::numeric, $5::numeric, true, $6)",
            [
                (
                    seed.exchange_id,
                    seed.symbol,
                    seed.open_ms(i),
                    seed.price(i),
                    "0" if i == 0 else f"{i}.5",
                    seed.sequence_base + i,
                )
                for i in range(seed.candles)
            ],
        )
        await conn.executemany(
            "INSERT INTO alerts (id, exchange_id, symbol, timeframe, alert_type, signal_type, direction, strength,"
            " trigger_value, signal_delta, trigger_label, price, triggered_at)"
            " VALUES ($1, $2, $3, '1h', $4, 'macd_v_cross', 'bullish', 'strong', $5, $6, $7, $8::numeric,"
            " to_timestamp($9 / 1000.0))",
            [
                (
                    seed.alert_id_base + i,
                    seed.exchange_id,
                    seed.symbol,
                    f"{seed.alert_type}-{i}",
                    seed.trigger_value + i,
                    seed.signal_delta + i,
                    f"{seed.trigger_label}-{i}",
                    seed.price(i),
                    seed.open_ms(i + 1),
                )
                for i in range(seed.alerts)
            ],
        )
        await conn.executemany(
            "INSERT INTO price_feeds (id, symbol, price, volume, source, ts, worker_id, batch_id, index_in_batch)"
            " VALUES ($1, $2, $3::numeric, $4::numeric, $5, now() - $6 * interval '1 second', $7, $8, $9)",
            [
                (
                    seed.feed_id_base + i,
                    seed.symbol,
                    seed.price(i),
                    "0",
                    f"{seed.source}{i % 2}",
                    30 - i,
                    seed.worker_id,
                    f"{seed.worker_id}-batch",
                    i,
                )
                for i in range(4)
            ],
        )
    finally:
        await conn.close()
    client = redis_client(redis_url)
    try:
        key = RedisKeys(redis_prefix).candle_window(seed.exchange, seed.symbol, "1h")
        members = {}
        for i in range(seed.candles - seed.window, seed.candles):
            candle = candles_pb2.Candle(
                exchange=seed.exchange,
                symbol=seed.symbol,
                timeframe=common_pb2.TIMEFRAME_1H,
                open=seed.price(i),
                high=f"{101 + i}.{i:02d}",
                low=f"{99 + i}.{i:02d}",
                close=seed.price(i),
                volume=f"{i}.5",
                is_synthetic=True,
                sequence_num=seed.sequence_base + i,
                exchange_id=seed.exchange_id,
            )
            candle.timestamp.FromMilliseconds(seed.open_ms(i))
            members[candle.SerializeToString()] = seed.open_ms(i)
        await client.zadd(key, members)
    finally:
        await client.aclose()


def indicator_value(seed: Seed, **fields: object) -> MacdVValue:
    """A ready MACD-V reading of the seed's newest 1h candle (its fields overridable)."""
    values: dict[str, object] = {
        "open_time": seed.open_ms(seed.candles - 1),
        "macd_v": 63.25,
        "signal": 41.5,
        "histogram": 21.75,
        "fast_ema": 101.125,
        "slow_ema": 100.0625,
        "atr": 1.6796875,
        "stage": Stage.RALLYING,
        "zone": Zone.POSITIVE,
        "ready": True,
    }
    values.update(fields)
    return MacdVValue(**values)  # type: ignore[arg-type]


async def seed_indicator(
    redis_url: str, redis_prefix: str, seed: Seed, timeframe: Timeframe | str, value: MacdVValue
) -> None:
    """Store ``value`` as the indicator state of the seed's pair on ``timeframe`` (what the core reads)."""
    state = MacdVState(MacdVParams(), 100, 70, 100.0, 0.0, 0.0, 0.0, 0.0, value)
    client = redis_client(redis_url)
    try:
        await client.set(
            RedisKeys(redis_prefix).indicator_state(seed.exchange, seed.symbol, timeframe), state.to_bytes()
        )
    finally:
        await client.aclose()
