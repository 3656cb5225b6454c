"""Degraded, not broken: reads with Redis down or frozen, and API keys while PostgreSQL stalls.

A real core and REST gateway over a seeded database and a Redis of the module's own, which the tests
kill or freeze (SIGSTOP): candles, symbols and exchanges then come from PostgreSQL, never a 500. Each
query is one the core has not answered before, so no cached answer can stand in for PostgreSQL.
PostgreSQL is stalled for key lookups by an ``ACCESS EXCLUSIVE`` lock on ``api_keys`` held by another
connection: a key confirmed within the grace keeps reading, the 503s say the key cannot be checked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import signal
import time
from collections.abc import Iterator

import asyncpg
import grpc
import httpx
import pytest

from gateways.common.auth import CACHE_TTL_S, KEY_UNCHECKABLE
from perseus.marketdata.v1 import common_pb2, market_data_service_pb2 as md, market_data_service_pb2_grpc as md_grpc
from perseus_cli.devstack.valkey import EmbeddedRedis
from tests.support.market_seed import Seed
from tests.support.rest_stack import RestStack, make_key, seeded_rest_stack

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("embedded-redis-degraded")]

SEED = Seed(exchange="degradex", exchange_id=730_001, symbol_id=730_002, symbol="DGR-USD")
CANDLES = f"/public/v1/candles/{SEED.exchange}/{SEED.symbol}"
GATEWAY_DEADLINE_S = 2.0
KEY_GRACE_S = 9.0


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str, embedded_redis: EmbeddedRedis) -> Iterator[RestStack]:
    env = {**base_env, "PERSEUS_REDIS_URL": embedded_redis.url}
    gateway_env = {"PERSEUS_CORE_DEADLINE_S": str(GATEWAY_DEADLINE_S), "PERSEUS_KEY_GRACE_S": str(KEY_GRACE_S)}
    with seeded_rest_stack(env, admin_database_url, SEED, **gateway_env) as stack:
        yield stack


def iso(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def expected(indexes: range) -> list[tuple[str, str]]:
    return [(iso(SEED.open_ms(i)), SEED.price(i)) for i in indexes]


def candles(stack: RestStack, **params: object) -> list[tuple[str, str]]:
    started = time.monotonic()
    response = stack.get(CANDLES, params={"timeframe": "1h", **params})
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < GATEWAY_DEADLINE_S
    return [(c["timestamp"], c["close"]) for c in response.json()["data"]]


def assert_reads_from_postgres(stack: RestStack, limit: int, first: int) -> None:
    """Queries spanning the window and the history; ``limit``/``first`` make each one new to the core."""
    assert candles(stack, limit=limit) == expected(range(SEED.candles - limit, SEED.candles))
    start = SEED.open_ms(first)
    assert candles(stack, start=start, limit=8) == expected(range(first, first + 8))
    inside = SEED.candles - 4  # within the window alone, when there is one
    assert candles(stack, start=SEED.open_ms(inside), end=SEED.open_ms(inside + 2)) == expected(
        range(inside, inside + 2)
    )
    symbols = stack.get("/public/v1/symbols", params={"exchange": SEED.exchange})
    assert symbols.status_code == 200 and [s["symbol"] for s in symbols.json()["data"]] == [SEED.symbol]
    exchanges = stack.get("/public/v1/exchanges")
    assert exchanges.status_code == 200, exchanges.text
    # No writer can be feeding an exchange while Redis is gone: each is listed offline, without a heartbeat.
    assert {e["name"]: (e["status"], e["last_heartbeat_time"]) for e in exchanges.json()["data"]}[SEED.exchange] == (
        "offline",
        None,
    )
    with grpc.insecure_channel(stack.core.addr) as channel:
        market = md_grpc.MarketDataServiceStub(channel)
        request = md.GetCandlesRequest(
            exchange=SEED.exchange, symbol=SEED.symbol, timeframe=common_pb2.TIMEFRAME_1H, limit=limit + 1
        )
        assert len(market.GetCandles(request, timeout=GATEWAY_DEADLINE_S).candles) == limit + 1
        assert [s.symbol for s in market.ListSymbols(md.ListSymbolsRequest(exchange=SEED.exchange), timeout=2).symbols]
        assert SEED.exchange in [e.name for e in market.ListExchanges(md.ListExchangesRequest(), timeout=2).exchanges]


def test_reads_before_the_outage(stack: RestStack) -> None:
    assert candles(stack, limit=11) == expected(range(SEED.candles - 11, SEED.candles))


def test_with_redis_down_reads_come_from_postgres(stack: RestStack, embedded_redis: EmbeddedRedis) -> None:
    embedded_redis.stop()
    try:
        assert_reads_from_postgres(stack, limit=12, first=15)
        assert_reads_from_postgres(stack, limit=13, first=16)  # the limiter and the probe fail fast too
    finally:
        embedded_redis.start()
    assert candles(stack, limit=14) == expected(range(SEED.candles - 14, SEED.candles))  # and the window again


def test_with_redis_frozen_reads_come_from_postgres_within_the_deadline(
    stack: RestStack, embedded_redis: EmbeddedRedis
) -> None:
    assert candles(stack, limit=15) == expected(range(SEED.candles - 15, SEED.candles))
    assert embedded_redis.pid is not None
    os.kill(embedded_redis.pid, signal.SIGSTOP)
    try:
        assert_reads_from_postgres(stack, limit=16, first=12)
        assert_reads_from_postgres(stack, limit=17, first=11)
    finally:
        os.kill(embedded_redis.pid, signal.SIGCONT)
    assert candles(stack, limit=18) == expected(range(SEED.candles - 18, SEED.candles))


async def test_with_key_lookups_stalled_a_confirmed_key_reads_through_the_grace(stack: RestStack) -> None:
    key, never_used = make_key(stack.env, "pro"), make_key(stack.env, "free")

    def read(api_key: str) -> httpx.Response:
        return stack.get(CANDLES, headers={"X-API-Key": api_key}, params={"limit": 5})  # the window answers

    assert read(key).status_code == 200
    confirmed_at = time.monotonic()
    locker = await asyncpg.connect(stack.env["PERSEUS_DATABASE_URL"])
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE api_keys IN ACCESS EXCLUSIVE MODE")  # every key lookup now waits
            await asyncio.sleep(max(0.0, confirmed_at + CACHE_TTL_S + 0.5 - time.monotonic()))  # the answer expired
            assert read(key).status_code == 200  # the lookup went unanswered: the confirmed key still reads
            for _ in range(3):
                started = time.monotonic()
                assert read(key).status_code == 200
                assert time.monotonic() - started < 1.0  # in grace, no request waits for the stalled lookup
            refused = read(never_used)  # never confirmed: nothing to fall back on
            assert refused.status_code == 503 and refused.json()["error"]["message"] == KEY_UNCHECKABLE
            await asyncio.sleep(max(0.0, confirmed_at + KEY_GRACE_S + 0.5 - time.monotonic()))
            expired = read(key)  # the grace is over and the core still cannot say
            assert expired.status_code == 503, expired.text
            assert expired.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
            assert expired.json()["error"]["message"] == KEY_UNCHECKABLE
    finally:
        await locker.close()
    assert read(key).status_code == 200 and read(never_used).status_code == 200
