"""Candles stay true when the writer dies mid-minute: two real ``perseus core`` processes (exchange mode,
``sim``), the leader SIGKILLed in the middle of a minute, the standby taking over.

After the next close, every stored candle of the symbol (1m, 5m, 15m, 1h, 4h, 1d: whichever have closed)
must equal the aggregate of the stored ticks of its interval: open (first tick by time), high, low, close
(last tick by time) and volume. Candles carry no trade count, so "count" is checked as the number of
candles per interval: exactly one for every interval up to the newest close, a synthetic one (volume 0)
only where no tick was stored.

A real minute boundary is the only clock there is, so one run sees the 1m candle (and a 5m, 15m or 1h
candle only when its boundary falls in the run); candles of every timeframe closing after a takeover are
covered with a controlled clock in ``test_exchange_pipeline.py`` and ``tests/unit/test_candles.py``.
The test waits for at most one minute boundary (under about 80 s).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import Callable
from datetime import timedelta
from decimal import Decimal

import asyncpg
import pytest

from core.adapters.redis_keys import RedisKeys
from core.domain.timeframes import Timeframe
from tests.support.processes import Process, free_port, grpc_serving, run_cli, spawn, wait_until
from tests.support.redis_target import sync_redis_client

pytestmark = pytest.mark.integration

LEASE_MS = 1_500
KILL_FROM_S, KILL_UNTIL_S = 20, 48  # second of the minute: mid-minute, with time to take over before it ends
MIN = 60_000

INTERVALS = {tf: timedelta(milliseconds=tf.ms) for tf in Timeframe}

# The reference, written independently of the core's query: window functions over the ticks of each
# interval, ordered by time and then by insertion (the order the writer saw ticks of the same millisecond).
AGGREGATES = """
SELECT DISTINCT (extract(epoch FROM date_bin($2::interval, ts, timestamptz 'epoch')) * 1000)::bigint AS open_time,
       first_value(price) OVER w AS open, max(price) OVER w AS high, min(price) OVER w AS low,
       last_value(price) OVER w AS close, sum(volume) OVER w AS volume
FROM price_feeds WHERE symbol = $1 AND source = 'sim'
WINDOW w AS (PARTITION BY date_bin($2::interval, ts, timestamptz 'epoch') ORDER BY ts, id
             ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING)
"""

CANDLES = """
SELECT (extract(epoch FROM open_time) * 1000)::bigint AS open_time, open, high, low, close, volume, is_synthetic
FROM candles WHERE symbol = $1 AND timeframe = $2 AND exchange_id = (SELECT id FROM exchanges WHERE name = 'sim')
"""

Ohlcv = tuple[Decimal, Decimal, Decimal, Decimal, Decimal]
# Instance names of their own: rows are told apart by writer, and other tests share this database.
A, B = "takeover-a", "takeover-b"


def start_core(env: dict[str, str], instance: str) -> Process:
    addr = f"127.0.0.1:{free_port()}"
    process = spawn(["core"], {**env, "PERSEUS_CORE_ADDR": addr, "PERSEUS_INSTANCE_ID": instance}, addr)
    wait_until(lambda: grpc_serving(addr), process, f"core {instance}")
    return process


def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout} s")


def query(database_url: str, sql: str, *args: object) -> list[asyncpg.Record]:
    async def fetch() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetch(sql, *args)
        finally:
            await conn.close()

    return asyncio.run(fetch())


def snapshot(database_url: str, symbol: str) -> dict[Timeframe, tuple[dict[int, Ohlcv], dict[int, tuple[Ohlcv, bool]]]]:
    """Per timeframe: the tick aggregates and the stored candles by open time, read in one snapshot."""

    async def read() -> dict[Timeframe, tuple[dict[int, Ohlcv], dict[int, tuple[Ohlcv, bool]]]]:
        conn = await asyncpg.connect(database_url)
        try:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                out = {}
                for tf in Timeframe:
                    aggregates = {r[0]: tuple(r[1:6]) for r in await conn.fetch(AGGREGATES, symbol, INTERVALS[tf])}
                    candles = {r[0]: (tuple(r[1:6]), r[6]) for r in await conn.fetch(CANDLES, symbol, tf.value)}
                    out[tf] = (aggregates, candles)
                return out
        finally:
            await conn.close()

    return asyncio.run(read())


def ticks_by(database_url: str, symbol: str, instance: str, start_ms: int, end_ms: int) -> int:
    rows = query(
        database_url,
        "SELECT count(*) FROM price_feeds WHERE symbol = $1 AND worker_id = $2"
        " AND ts >= to_timestamp($3 / 1000.0) AND ts < to_timestamp($4 / 1000.0)",
        symbol,
        f"venue:sim@{instance}",
        start_ms,
        end_ms,
    )
    return int(rows[0][0])


def has_candle(database_url: str, symbol: str, open_ms: int) -> bool:
    rows = query(database_url, CANDLES + " AND open_time = to_timestamp($3 / 1000.0)", symbol, "1m", open_ms)
    return bool(rows)


def test_candles_equal_the_stored_ticks_after_the_leader_is_killed_mid_minute(
    base_env: dict[str, str], database_url: str, redis_url: str
) -> None:
    assert run_cli(["migrate"], base_env).returncode == 0
    symbol = f"TKO{secrets.token_hex(3).upper()}-USD"
    prefix = base_env["PERSEUS_REDIS_PREFIX"] + "takeover:"
    env = {
        **base_env,
        "PERSEUS_REDIS_PREFIX": prefix,  # leases and terms of its own
        "PERSEUS_WRITER_LEASE_MS": str(LEASE_MS),
        "PERSEUS_SIM_SYMBOLS": symbol,
        "PERSEUS_SIM_TRADES_PER_S": "40",  # 4 trades per 100 ms step: ticks of the same millisecond too
    }
    rds = sync_redis_client(redis_url)
    holder = lambda: (rds.get(RedisKeys(prefix).exchange_writer_lock("sim")) or b"").decode()  # noqa: E731
    a = b = None
    try:
        a = start_core(env, A)
        eventually(lambda: holder() == A, 10, "a leads")
        b = start_core(env, B)
        second = time.time() % 60
        if not KILL_FROM_S <= second < KILL_UNTIL_S:
            time.sleep((KILL_FROM_S - second) % 60)
        killed_ms = time.time_ns() // 1_000_000
        minute = killed_ms - killed_ms % MIN
        os.kill(a.pid, signal.SIGKILL)

        eventually(lambda: holder() == B, 10, "b takes over")
        eventually(lambda: has_candle(database_url, symbol, minute), 70, "the killed minute's 1m candle")
        assert ticks_by(database_url, symbol, A, minute, killed_ms) > 0  # the dead leader's part of the minute
        assert ticks_by(database_url, symbol, B, killed_ms, minute + MIN) > 0  # and the new one's

        checked = {tf: 0 for tf in Timeframe}
        stored = snapshot(database_url, symbol)
        horizon = max(stored[Timeframe.M1][1]) + MIN  # the newest close: every interval before it is final
        for tf, (aggregates, candles) in stored.items():
            first = min(aggregates)
            for open_time in range(first, horizon - tf.ms + 1, tf.ms):
                assert open_time in candles, f"{tf} candle at {open_time} missing"
                ohlcv, synthetic = candles[open_time]
                if open_time in aggregates:
                    assert not synthetic and ohlcv == aggregates[open_time], f"{tf} at {open_time}"
                    checked[tf] += 1
                else:
                    assert synthetic and ohlcv[4] == 0, f"{tf} at {open_time}: a candle without ticks"
            assert all(t < first or t + tf.ms > horizon or t in aggregates or candles[t][1] for t in candles)
        assert checked[Timeframe.M1] >= 1 and minute in stored[Timeframe.M1][1]
        assert ticks_by(database_url, symbol, A, minute, minute + MIN) < sum(  # sanity: not all from a
            ticks_by(database_url, symbol, who, minute, minute + MIN) for who in (A, B)
        )
    finally:
        for process in (a, b):
            if process is not None:
                process.close()
        rds.close()
