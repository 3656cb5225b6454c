"""``make bench-indicators``: one close wave of 1,000 symbols x 6 timeframes through the IndicatorService.

End to end through Redis, as the exchange pipeline calls it after a wave of
candles is stored: one pipelined read of 6,000 states, MACD-V stepped per
close, alert detection, the alerts inserted in PostgreSQL (and published),
one pipelined write of the states, then one ``indicator_update`` event per
ready close on its ``indicators:`` stream (6,000 per wave here). States are warm (every series has history
and a ready value), so no warm-up read happens. Reports ms per wave over
``--waves`` waves against the limit of issue 4 (under 250 ms; aim 100 ms).

    python -m bench.indicators [--symbols 1000] [--waves 20]
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import time
from decimal import Decimal

import asyncpg
import uvloop

from bench.stack import ADMIN_URL, REDIS_URL
from bench.stats import summary
from common.redis_clients import open_mode, pipeline
from common.runtime import tune_gc
from core.adapters.alert_store import AlertStore
from core.adapters.events import EventPublisher
from core.adapters.indicator_store import CandleHistory, IndicatorStore
from core.adapters.migrations import migrate
from core.adapters.redis_client import redis_client
from core.adapters.redis_keys import RedisKeys
from core.domain.candles import Candle
from core.domain.indicators import Bar, MacdVState, step
from core.domain.timeframes import TIMEFRAMES
from core.services.indicators import IndicatorService

HISTORY_BARS = 60  # closes folded into each series before the clock starts (ready from the 35th)
WARMUP_WAVES = 2
LIMIT_MS = 250.0
AIM_MS = 100.0
STEP = 0.004  # standard deviation of a close-to-close move
WICK = 0.006  # largest wick beyond open/close: intrabar ranges as wide as real ones, so ATR is not understated
T0 = 1_800_000_000_000 - 1_800_000_000_000 % (24 * 3600 * 1000)


class Walk:
    """A seeded random walk per series, yielding closed candles one after the other."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.price = 100.0 + rng.random() * 50

    def next(self) -> tuple[Decimal, Decimal, Decimal, Decimal]:
        start = self.price
        self.price = max(1.0, self.price * (1 + self.rng.gauss(0, STEP)))
        high = max(start, self.price) * (1 + self.rng.random() * WICK)
        low = min(start, self.price) * (1 - self.rng.random() * WICK)
        return tuple(Decimal(f"{x:.4f}") for x in (start, high, low, self.price))  # type: ignore[return-value]


def make_wave(walks: dict[tuple[str, int], Walk], symbols: list[str], index: int) -> list[Candle]:
    candles = []
    for symbol in symbols:
        for tf_index, tf in enumerate(TIMEFRAMES):
            o, h, lo, c = walks[symbol, tf_index].next()
            candles.append(Candle("sim", symbol, tf, T0 + index * tf.ms, o, h, lo, c, Decimal(1)))
    return candles


async def run(symbols_count: int, waves: int) -> None:
    run_id = secrets.token_hex(4)
    database = f"perseus_bench_{run_id}"
    admin = await asyncpg.connect(ADMIN_URL)
    await admin.execute(f'CREATE DATABASE "{database}"')
    prefix = f"perseus-bench:{run_id}:"
    mode = await open_mode(REDIS_URL)
    redis, bus = redis_client(REDIS_URL, mode), pipeline(REDIS_URL, mode, client_name="bench-indicators")
    pool = await asyncpg.create_pool(ADMIN_URL.rsplit("/", 1)[0] + f"/{database}", min_size=1, max_size=4)
    try:
        await migrate(pool)
        ids = {row["name"]: row["id"] for row in await pool.fetch("SELECT id, name FROM exchanges")}
        keys = RedisKeys(prefix)
        states = IndicatorStore(bus, keys)
        service = IndicatorService(
            states=states,
            history=CandleHistory(pool),
            alerts=AlertStore(pool),
            signals=EventPublisher(bus, keys),
            exchange_ids=ids,
        )
        rng = random.Random(7)
        symbols = [f"S{i:04d}-USD" for i in range(symbols_count)]
        walks = {(s, t): Walk(rng) for s in symbols for t in range(len(TIMEFRAMES))}
        print(f"machine: {os.cpu_count()} CPUs; {symbols_count} symbols x {len(TIMEFRAMES)} timeframes per wave")
        started = time.perf_counter()
        for chunk in range(0, len(symbols), 100):
            items = []
            for symbol in symbols[chunk : chunk + 100]:
                for tf_index, tf in enumerate(TIMEFRAMES):
                    state: MacdVState | None = None
                    for i in range(HISTORY_BARS):
                        _, h, lo, c = walks[symbol, tf_index].next()
                        state, _ = step(state, Bar(T0 + (i - HISTORY_BARS) * tf.ms, float(h), float(lo), float(c)))
                    assert state is not None
                    items.append((("sim", symbol, tf), state))
            await states.save(items)
        print(f"warm states written in {time.perf_counter() - started:.1f} s")
        tune_gc()  # the core's policy once serving (common/runtime.py), so the waves run as they would there
        timings: list[float] = []
        alerts: list[int] = []
        for index in range(WARMUP_WAVES + waves):
            wave = make_wave(walks, symbols, index)
            begun = time.perf_counter()
            stored = await service.process(wave)
            elapsed = time.perf_counter() - begun
            if index >= WARMUP_WAVES:
                timings.append(elapsed)
                alerts.append(len(stored))
        assert service.stats.warmups == 0 and service.stats.errors == 0
        figures = summary(timings)
        print(
            f"wave of {len(wave)} closes: median {figures['p50_ms']:.1f} ms  p95 {figures['p95_ms']:.1f} ms  "
            f"max {max(timings) * 1000:.1f} ms  ({len(timings)} waves; alerts per wave "
            f"{min(alerts)}-{max(alerts)}, median {sorted(alerts)[len(alerts) // 2]})"
        )
        verdict = "met" if figures["p95_ms"] < LIMIT_MS else "NOT met"
        print(f"limit {LIMIT_MS:.0f} ms per wave: {verdict} (p95); aim {AIM_MS:.0f} ms")
    finally:
        await bus.aclose()
        await pool.close()
        async for key in redis.scan_iter(match=f"{prefix}*", count=1000):
            await redis.unlink(key)
        await redis.aclose()
        await admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", type=int, default=1_000)
    parser.add_argument("--waves", type=int, default=20)
    args = parser.parse_args()
    uvloop.run(run(args.symbols, args.waves))


if __name__ == "__main__":
    main()
