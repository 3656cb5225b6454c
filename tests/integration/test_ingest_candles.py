"""Ingested ticks become candles like venue trades, on any core, once each (issue 17, item 7).

Real ``perseus core`` processes (exchange mode, ``sim``) on the session's PostgreSQL and Redis; ticks go in
through ``IngestService`` and candles come out of ``MarketDataService.GetCandles``, as a client sees them.

- A tick's identity includes the venue's trade id: two trades alike in all but their trade id are both stored
  and both in the candle's volume; the same trade id sent again (to either core) is stored and counted once.
- Ticks ingested on the core that does *not* lead ``sim`` reach the candle as surely as those ingested on
  the leader, and are counted once although two cores run.
- A writer that starts (after the one before it died) rebuilds the candle in progress from the stored ticks:
  the ticks the dead writer had taken, those ingested while nobody led, and those after the start are all
  in the candle, each once.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal

import asyncpg
import grpc
import pytest

from core.adapters.redis_keys import RedisKeys
from perseus.marketdata.v1 import (
    common_pb2,
    ingest_service_pb2,
    ingest_service_pb2_grpc,
    market_data_service_pb2,
    market_data_service_pb2_grpc,
    prices_pb2,
)
from tests.support.processes import Process, free_port, grpc_serving, run_cli, spawn, wait_until
from tests.support.redis_target import sync_redis_client

pytestmark = pytest.mark.integration

MIN = 60_000
LEASE_MS = 1_500


@pytest.fixture
def env(base_env: dict[str, str]) -> dict[str, str]:
    assert run_cli(["migrate"], base_env).returncode == 0
    return {
        **base_env,
        # leases and terms of their own (the sim writer of other modules' cores is not ours)
        "PERSEUS_REDIS_PREFIX": base_env["PERSEUS_REDIS_PREFIX"] + f"ingcandles{secrets.token_hex(2)}:",
        "PERSEUS_WRITER_LEASE_MS": str(LEASE_MS),
        "PERSEUS_SIM_SYMBOLS": f"ICV{secrets.token_hex(3).upper()}-USD",  # the venue's own, not the tests'
        "PERSEUS_SIM_TRADES_PER_S": "1",
        "PERSEUS_SIM_BACKFILL_MINUTES": "0",
    }


@contextmanager
def core(env: dict[str, str], instance: str) -> Iterator[tuple[Process, grpc.Channel]]:
    addr = f"127.0.0.1:{free_port()}"
    process = spawn(["core"], {**env, "PERSEUS_CORE_ADDR": addr, "PERSEUS_INSTANCE_ID": instance}, addr)
    try:
        wait_until(lambda: grpc_serving(addr), process, f"core {instance}")
        with grpc.insecure_channel(addr) as channel:
            yield process, channel
    finally:
        process.close()


def eventually(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s")


def leader(env: dict[str, str]) -> str:
    rds = sync_redis_client(env["PERSEUS_REDIS_URL"])
    try:
        return (rds.get(RedisKeys(env["PERSEUS_REDIS_PREFIX"]).exchange_writer_lock("sim")) or b"").decode()
    finally:
        rds.close()


def block_the_lease(env: dict[str, str]) -> None:
    """Nobody leads ``sim`` until :func:`free_the_lease` (as between a writer's death and the next one)."""
    rds = sync_redis_client(env["PERSEUS_REDIS_URL"])
    try:
        rds.set(RedisKeys(env["PERSEUS_REDIS_PREFIX"]).exchange_writer_lock("sim"), "test-blocker", px=120_000)
    finally:
        rds.close()


def free_the_lease(env: dict[str, str]) -> None:
    rds = sync_redis_client(env["PERSEUS_REDIS_URL"])
    try:
        rds.delete(RedisKeys(env["PERSEUS_REDIS_PREFIX"]).exchange_writer_lock("sim"))
    finally:
        rds.close()


def ingest(channel: grpc.Channel, *feeds: prices_pb2.PriceFeed) -> ingest_service_pb2.IngestPricesResponse:
    stub = ingest_service_pb2_grpc.IngestServiceStub(channel)
    reply: ingest_service_pb2.IngestPricesResponse = stub.IngestPrices(
        ingest_service_pb2.IngestPricesRequest(worker_id="test-ingest-candles", feeds=feeds), timeout=10
    )
    return reply


def feed(symbol: str, price: str, volume: str, ts_ms: int, trade_id: str | None = None) -> prices_pb2.PriceFeed:
    message = prices_pb2.PriceFeed(symbol=symbol, price=price, volume=volume, source="sim")
    message.timestamp.FromMilliseconds(ts_ms)
    if trade_id is not None:
        message.trade_id = trade_id
    return message


def candle_1m(channel: grpc.Channel, symbol: str, open_ms: int) -> tuple[str, str, str, str, str] | None:
    """The closed 1m candle of ``symbol`` opening at ``open_ms`` (open, high, low, close, volume), if any."""
    stub = market_data_service_pb2_grpc.MarketDataServiceStub(channel)
    request = market_data_service_pb2.GetCandlesRequest(
        exchange="sim", symbol=symbol, timeframe=common_pb2.TIMEFRAME_1M, limit=10
    )
    try:
        reply = stub.GetCandles(request, timeout=5)
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.NOT_FOUND:  # nothing stored for the symbol yet
            return None
        raise
    for c in reply.candles:
        if c.timestamp.ToMilliseconds() == open_ms:
            return (c.open, c.high, c.low, c.close, c.volume)
    return None


def stored_ticks(database_url: str, symbol: str) -> int:
    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM price_feeds WHERE symbol = $1", symbol))
        finally:
            await conn.close()

    return asyncio.run(count())


def waiting(database_url: str, symbol: str) -> int:
    """Ingested ticks of ``symbol`` no writer has taken into its candles yet."""

    async def count() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM candle_inbox WHERE symbol = $1", symbol))
        finally:
            await conn.close()

    return asyncio.run(count())


def minute_with_room(seconds: float) -> int:
    """The open time of the current minute, after waiting for the next one if fewer than ``seconds`` remain."""
    now = time.time() % 60
    if now > 60 - seconds:
        time.sleep(60 - now + 0.5)
    now_ms = time.time_ns() // 1_000_000
    return now_ms - now_ms % MIN


def as_decimals(ohlcv: tuple[str, ...] | None) -> tuple[Decimal, ...] | None:
    return None if ohlcv is None else tuple(Decimal(v) for v in ohlcv)


def test_trade_ids_and_ingest_on_the_core_that_does_not_lead(env: dict[str, str], database_url: str) -> None:
    symbol = f"ICA{secrets.token_hex(3).upper()}-USD"
    with core(env, "ingcandles-a") as (_, a), core(env, "ingcandles-b") as (_, b):
        eventually(lambda: leader(env) in ("ingcandles-a", "ingcandles-b"), 15, "a core leads sim")
        led, standby = (a, b) if leader(env) == "ingcandles-a" else (b, a)
        minute = minute_with_room(15)  # every tick in this minute, its candle closing at the minute's end
        t = time.time_ns() // 1_000_000
        # two genuine trades alike in all but their trade id, on the core that does not lead
        reply = ingest(standby, feed(symbol, "100", "1.5", t, "T-1"), feed(symbol, "100", "1.5", t, "T-2"))
        assert (reply.ingested, reply.failed) == (2, 0)
        # a trade without a trade id, later in the minute, also on the standby
        assert ingest(standby, feed(symbol, "104", "2", t + 2)).ingested == 1
        # redeliveries: the same trade ids again, to the leader this time, and the id-less trade again
        again = ingest(led, feed(symbol, "100", "1.5", t, "T-1"), feed(symbol, "100", "1.5", t, "T-2"))
        assert (again.ingested, again.failed) == (2, 0)  # accepted (a retry is not an error), not stored again
        assert ingest(standby, feed(symbol, "104", "2", t + 2)).ingested == 1
        # and a third trade on the leader, the minute's low
        assert ingest(led, feed(symbol, "99", "0.25", t + 3, "T-3")).ingested == 1

        assert stored_ticks(database_url, symbol) == 4
        assert time.time_ns() // 1_000_000 < minute + MIN, "the test outlasted its minute"
        eventually(lambda: candle_1m(standby, symbol, minute) is not None, 75, "the minute's 1m candle")
        expected = (Decimal("100"), Decimal("104"), Decimal("99"), Decimal("99"), Decimal("5.25"))
        assert as_decimals(candle_1m(standby, symbol, minute)) == expected
        assert as_decimals(candle_1m(led, symbol, minute)) == expected
        assert waiting(database_url, symbol) == 0


def test_a_new_writer_rebuilds_the_candle_in_progress_from_the_stored_ticks(
    env: dict[str, str], database_url: str
) -> None:
    symbol = f"ICR{secrets.token_hex(3).upper()}-USD"
    minute = minute_with_room(30)  # the whole test runs inside this minute, its candle in progress
    now_ms = lambda: time.time_ns() // 1_000_000  # noqa: E731
    with core(env, "ingcandles-first") as (first, a):
        eventually(lambda: leader(env) == "ingcandles-first", 15, "the first core leads sim")
        # before the restart: the minute's open and high, taken into the first writer's candle in progress
        t = now_ms()
        assert ingest(a, feed(symbol, "50", "1", t, "R-1"), feed(symbol, "70", "2", t + 1)).ingested == 2
        eventually(lambda: waiting(database_url, symbol) == 0, 10, "the writer took the ticks")
        os.kill(first.pid, signal.SIGKILL)
    block_the_lease(env)  # the dead writer's lease, kept by nobody for a while
    with core(env, "ingcandles-second") as (_, b):
        # while nobody leads: ingested, stored, waiting for the next writer
        assert ingest(b, feed(symbol, "40", "4", now_ms(), "R-2")).ingested == 1
        assert waiting(database_url, symbol) == 1
        free_the_lease(env)
        eventually(lambda: leader(env) == "ingcandles-second", 15, "the second core leads sim")
        eventually(lambda: waiting(database_url, symbol) == 0, 10, "the new writer took the waiting tick")
        # after the restart: the minute's close
        assert ingest(b, feed(symbol, "60", "8", now_ms(), "R-3")).ingested == 1
        assert now_ms() < minute + MIN, "the test outlasted its minute"
        eventually(lambda: candle_1m(b, symbol, minute) is not None, 75, "the minute's 1m candle")
        assert as_decimals(candle_1m(b, symbol, minute)) == (
            Decimal("50"),
            Decimal("70"),
            Decimal("40"),
            Decimal("60"),
            Decimal("15"),
        )
