"""The writer comes back after a Redis outage: a real core, a Redis of the test's own, frozen or killed.

A lost writer lease means "stand by and contend again when Redis answers", however long Redis was gone:
after each outage the core stores new ticks, closes candles, reports the exchange online again and has
logged that it stood by. (On Python 3.11 a TaskGroup whose child raised left the writer's task with a
cancellation count, and the writer's task ended silently at the first lost lease: nothing more was
written until the core was restarted.)
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable

import asyncpg
import grpc
import pytest

from perseus.marketdata.v1 import market_data_service_pb2 as md_pb2, market_data_service_pb2_grpc as md_grpc, market_pb2
from perseus_cli.devstack.valkey import EmbeddedRedis
from tests.support.processes import Process, running_core

pytestmark = pytest.mark.integration

# A short lease: even a 1 s outage loses it (renewals every ~0.33 s, the local lease ends 0.5 s after one).
LEASE_MS = "1000"
STANDBY_LINE = "standby for sim (leader:"
MINUTE_S = 60


def core_env(migrated_env: dict[str, str], redis: EmbeddedRedis, name: str, symbol: str) -> dict[str, str]:
    return {
        **migrated_env,
        "PERSEUS_REDIS_URL": redis.url,
        "PERSEUS_REDIS_PREFIX": f"{migrated_env['PERSEUS_REDIS_PREFIX']}{name}:",
        "PERSEUS_INSTANCE_ID": name,
        "PERSEUS_EXCHANGES": "sim",
        "PERSEUS_WRITER_LEASE_MS": LEASE_MS,
        "PERSEUS_SIM_SYMBOLS": symbol,
        "PERSEUS_SIM_TRADES_PER_S": "20",
    }


def eventually(condition: Callable[[], bool], timeout: float, what: str, core: Process) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout} s; core log:\n{core.output()[-4000:]}")


def query(database_url: str, sql: str, *args: object) -> int:
    async def run() -> int:
        conn = await asyncpg.connect(database_url)
        try:
            return int(await conn.fetchval(sql, *args))
        finally:
            await conn.close()

    return asyncio.run(run())


def ticks_since(database_url: str, instance: str, since: float) -> int:
    return query(
        database_url,
        "SELECT count(*) FROM price_feeds WHERE worker_id = $1 AND ingested_at >= to_timestamp($2)",
        f"venue:sim@{instance}",
        since,
    )


def candles_from(database_url: str, symbol: str, open_from: float) -> int:
    """Closed (stored) 1m candles of ``symbol`` that opened at or after ``open_from`` (epoch seconds)."""
    return query(
        database_url,
        "SELECT count(*) FROM candles c JOIN exchanges e ON e.id = c.exchange_id"
        " WHERE e.name = 'sim' AND c.symbol = $1 AND c.timeframe = '1m' AND c.open_time >= to_timestamp($2)",
        symbol,
        open_from,
    )


def sim_online(addr: str) -> bool:
    with grpc.insecure_channel(addr) as channel:
        try:
            reply = md_grpc.MarketDataServiceStub(channel).ListExchanges(md_pb2.ListExchangesRequest(), timeout=2)
        except grpc.RpcError:
            return False
    return {e.name: e.status for e in reply.exchanges}.get("sim") == market_pb2.EXCHANGE_STATUS_ONLINE


def freeze(redis: EmbeddedRedis, seconds: float) -> None:
    """Redis stops answering (SIGSTOP), its connections stay open, then it goes on (SIGCONT)."""
    assert redis.pid is not None
    os.kill(redis.pid, signal.SIGSTOP)
    try:
        time.sleep(seconds)
    finally:
        os.kill(redis.pid, signal.SIGCONT)


def kill(redis: EmbeddedRedis, seconds: float) -> None:
    """Redis dies (SIGKILL: connections refused) and starts again on the same port after ``seconds``."""
    assert redis.pid is not None
    os.kill(redis.pid, signal.SIGKILL)
    time.sleep(seconds)
    redis.restart()


def assert_recovers(core: Process, database_url: str, instance: str, symbol: str, standby_before: int) -> None:
    back = time.time()
    eventually(lambda: ticks_since(database_url, instance, back) > 0, 30, "new ticks stored", core)
    eventually(lambda: sim_online(core.addr), 30, "sim online in ListExchanges", core)
    minute = back - back % MINUTE_S  # the candle in progress when Redis came back closes at the next minute
    eventually(lambda: candles_from(database_url, symbol, minute) > 0, MINUTE_S + 20, "a candle closed", core)
    assert core.output().count(STANDBY_LINE) > standby_before, "the core did not log that it stood by"
    assert core.proc.poll() is None


@pytest.mark.xdist_group("writer-recovery")
@pytest.mark.timeout(300)
def test_the_writer_leads_again_after_redis_outages_of_1_s_and_10_s(
    migrated_env: dict[str, str], database_url: str, embedded_redis: EmbeddedRedis
) -> None:
    instance, symbol = "recover-short", "RECOVA-USD"
    with running_core(core_env(migrated_env, embedded_redis, instance, symbol)) as core:
        eventually(lambda: ticks_since(database_url, instance, 0) > 0, 20, "the first ticks", core)
        for outage in (lambda: freeze(embedded_redis, 1.0), lambda: kill(embedded_redis, 10.0)):
            standby = core.output().count(STANDBY_LINE)
            outage()
            assert_recovers(core, database_url, instance, symbol, standby)


@pytest.mark.xdist_group("writer-recovery-long")
@pytest.mark.timeout(360)
def test_the_writer_leads_again_after_a_2_minute_redis_outage(
    migrated_env: dict[str, str], database_url: str, embedded_redis: EmbeddedRedis
) -> None:
    instance, symbol = "recover-long", "RECOVB-USD"
    with running_core(core_env(migrated_env, embedded_redis, instance, symbol)) as core:
        eventually(lambda: ticks_since(database_url, instance, 0) > 0, 20, "the first ticks", core)
        standby = core.output().count(STANDBY_LINE)
        kill(embedded_redis, 120.0)
        assert_recovers(core, database_url, instance, symbol, standby)
