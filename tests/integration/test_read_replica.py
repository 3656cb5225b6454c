"""Reads from a real streaming replica (``pg_basebackup``), bounded by staleness, falling back to the primary.

The primary is the module's own embedded PostgreSQL (the machine's test server takes no replication
connection); the replica is a hot standby made from it with ``pg_basebackup -R``. The read pool's clock
is a list the test moves, so "10 s stale" needs no 10 s wait.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import asyncpg
import grpc
import pytest

from core.adapters.migrations import migrate
from core.adapters.price_queries_pg import PgPriceHistory
from core.adapters.read_replica import ReadPool, open_replica
from core.adapters.tick_store import TickStore
from core.domain.prices import Tick
from perseus.marketdata.v1 import market_data_service_pb2 as md_pb2, market_data_service_pb2_grpc as md_grpc
from perseus_cli.devstack.postgres import EmbeddedPostgres
from tests.support.pg_replica import Replica, streaming_replica
from tests.support.processes import free_port, running_core

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("read-replica")]

SYMBOL = "REPL-USD"


@pytest.fixture(scope="module")
def primary(private_postgres: EmbeddedPostgres) -> EmbeddedPostgres:
    return private_postgres


@pytest.fixture
async def pools(primary: EmbeddedPostgres) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool, Replica]]:
    await migrate(primary.url)
    async with streaming_replica(primary) as standby:
        main = await asyncpg.create_pool(primary.url, min_size=1, max_size=3)
        replica = await open_replica(standby.url, max_size=3)
        try:
            yield main, replica, standby
        finally:
            await replica.close()
            await main.close()


async def store(pool: asyncpg.Pool, price: str, ts_ms: int) -> None:
    tick = Tick(SYMBOL, Decimal(price), Decimal(0), "sim", ts_ms)
    assert await TickStore(pool).insert([(0, tick)], worker_id="w", batch_id=price) == {0}


async def caught_up(reads: ReadPool, now: list[float]) -> None:
    """Checks until the replica has replayed what the primary flushed (it streams: well within 10 s)."""
    for _ in range(200):
        now[0] += 0.01
        if await reads.check() <= 0.5:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"the replica did not catch up (staleness {reads.staleness_s} s)")


async def test_fresh_replica_serves_reads_a_stale_one_hands_them_to_the_primary(
    pools: tuple[asyncpg.Pool, asyncpg.Pool, Replica],
) -> None:
    main, replica, standby_server = pools
    replica_url = standby_server.url
    now = [1000.0]
    reads = ReadPool(main, replica, max_lag_s=5.0, clock=lambda: now[0])
    lenient = ReadPool(main, replica, max_lag_s=3600.0, clock=lambda: now[0])
    history, lenient_history = PgPriceHistory(reads, sources=["sim"]), PgPriceHistory(lenient, sources=["sim"])
    ts_ms = time.time_ns() // 1_000_000 - 60_000
    await store(main, "1.5", ts_ms)
    await caught_up(reads, now)
    await caught_up(lenient, now)
    assert reads.on_replica and await reads.fetchval("SELECT pg_is_in_recovery()")
    before = reads.replica_reads
    assert [p.price for p in await history.latest([SYMBOL])] == [Decimal("1.5")]
    assert reads.replica_reads == before + 1

    standby = await asyncpg.connect(replica_url)
    try:
        await standby.execute("SELECT pg_wal_replay_pause()")
        await store(main, "2.5", ts_ms + 1000)
        now[0] += 10.0  # ten seconds without replaying what the primary flushed
        assert await reads.check() >= 10.0 and not reads.on_replica
        assert await lenient.check() >= 10.0 and lenient.on_replica
        # past the bound: the primary answers, with the new tick; within a lenient bound the replica answers, stale
        assert [p.price for p in await history.latest([SYMBOL])] == [Decimal("2.5")]
        assert [p.price for p in await lenient_history.latest([SYMBOL])] == [Decimal("1.5")]
        assert reads.primary_reads >= 1

        await standby.execute("SELECT pg_wal_replay_resume()")
        await caught_up(reads, now)
        assert reads.on_replica
        assert [p.price for p in await history.latest([SYMBOL])] == [Decimal("2.5")]
    finally:
        await standby.close()


async def test_an_idle_primary_does_not_make_the_replica_look_stale(
    pools: tuple[asyncpg.Pool, asyncpg.Pool, Replica],
) -> None:
    main, replica, _ = pools
    now = [0.0]
    reads = ReadPool(main, replica, max_lag_s=5.0, clock=lambda: now[0])
    await caught_up(reads, now)
    for _ in range(3):  # nothing is written: a minute later it is still as fresh as the primary
        now[0] += 20.0
        assert await reads.check() < 1.0 and reads.on_replica


async def test_an_unreachable_or_missing_replica_leaves_every_read_on_the_primary(
    primary: EmbeddedPostgres,
) -> None:
    await migrate(primary.url)
    main = await asyncpg.create_pool(primary.url, min_size=1, max_size=2)
    down = await open_replica(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres", max_size=1)
    try:
        for n, reads in enumerate((ReadPool(main, down, max_lag_s=5.0), ReadPool(main, None, max_lag_s=5.0))):
            assert math.isinf(await reads.check()) and not reads.on_replica
            price = f"3.{n + 5}"
            await store(main, price, time.time_ns() // 1_000_000)
            assert [p.price for p in await PgPriceHistory(reads, sources=["sim"]).latest([SYMBOL])] == [Decimal(price)]
            assert reads.replica_reads == 0
    finally:
        await down.close()
        await main.close()


async def test_a_core_with_a_read_url_checks_its_replica_as_a_supervised_task(
    pools: tuple[asyncpg.Pool, asyncpg.Pool, Replica], primary: EmbeddedPostgres, redis_url: str, redis_prefix: str
) -> None:
    replica_url = pools[2].url
    env = {
        "PERSEUS_DATABASE_URL": primary.url,
        "PERSEUS_DATABASE_READ_URL": replica_url,
        "PERSEUS_REDIS_URL": redis_url,
        "PERSEUS_REDIS_PREFIX": f"{redis_prefix}replica:",
        "PERSEUS_CORE_METRICS_ADDR": "",
        "PERSEUS_EXCHANGES": "sim",
        "PERSEUS_SIM_TRADES_PER_S": "0",
        "PERSEUS_LOG_FORMAT": "text",
    }
    with running_core(env) as core, grpc.insecure_channel(core.addr) as channel:
        stub = md_grpc.MarketDataServiceStub(channel)
        for _ in range(100):
            reply = stub.GetStatus(md_pb2.GetStatusRequest(), timeout=2)
            states = {c.name: c.state for c in reply.components}
            if states.get("read-replica") == md_pb2.COMPONENT_STATE_UP and "replica reads resume" in core.output():
                break
            await asyncio.sleep(0.1)
        assert states.get("read-replica") == md_pb2.COMPONENT_STATE_UP, states
        assert "replica reads resume" in core.output()  # fresh: reads went to the replica


async def test_a_stalled_replica_loses_its_reads_within_the_check_bound(
    pools: tuple[asyncpg.Pool, asyncpg.Pool, Replica],
) -> None:
    main, replica, standby = pools
    reads = ReadPool(main, replica, max_lag_s=5.0)
    for _ in range(100):
        if await reads.check() <= 0.5:
            break
        await asyncio.sleep(0.05)
    assert reads.on_replica
    frozen = standby.processes()
    for pid in frozen:  # the standby freezes: connections stay open, nothing answers
        os.kill(pid, signal.SIGSTOP)
    try:
        assert math.isinf(await reads.check()) and not reads.on_replica  # bounded, not a hang
        await store(main, "4.5", time.time_ns() // 1_000_000)
        assert [p.price for p in await PgPriceHistory(reads, sources=["sim"]).latest([SYMBOL])] == [Decimal("4.5")]
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
