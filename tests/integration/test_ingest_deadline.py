"""Ingest stops at the caller's deadline: a batch whose deadline passed while PostgreSQL stalled is never
committed later.

Two real stalls: another connection holds the table's lock, and the whole PostgreSQL server is frozen
(SIGSTOP on a private embedded cluster, as the fault drills do). Each is held past the caller's deadline
and then released, when a statement still queued or waiting would commit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import asyncpg
import grpc
import pytest
from grpc import aio

from perseus.marketdata.v1 import ingest_service_pb2 as pb, ingest_service_pb2_grpc as pb_grpc, prices_pb2
from perseus_cli.devstack.postgres import EmbeddedPostgres
from tests.support.processes import Process, frozen, run_cli, running_core

pytestmark = pytest.mark.integration

SYMBOL = "DLN-USD"
CALLER_DEADLINE_S = 1.0
STALL_S = 3.0  # the stall outlasts the deadline; once it ends, a statement still pending would commit


def feed(price: str, ts_ms: int) -> prices_pb2.PriceFeed:
    message = prices_pb2.PriceFeed(symbol=SYMBOL, price=price, volume="1", source="coinbase")
    message.timestamp.FromMilliseconds(ts_ms)
    return message


def batch(batch_id: str) -> pb.IngestPricesRequest:
    """Two feeds of their own (a distinct time per batch: a feed's identity includes it)."""
    ts = int(time.time() * 1000) - 5_000 + sum(map(ord, batch_id))
    return pb.IngestPricesRequest(feeds=[feed("1.25", ts), feed("1.26", ts + 1)], batch_id=batch_id)


async def stored(url: str, batch_id: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        query = "SELECT count(*) FROM price_feeds WHERE symbol = $1 AND batch_id = $2"
        return int(await conn.fetchval(query, SYMBOL, batch_id))
    finally:
        await conn.close()


async def ingest_past_deadline(addr: str, request: pb.IngestPricesRequest) -> None:
    """Send ``request`` with a short deadline that the stall makes it miss."""
    async with aio.insecure_channel(addr) as channel:
        with pytest.raises(grpc.RpcError) as caught:
            await pb_grpc.IngestServiceStub(channel).IngestPrices(request, timeout=CALLER_DEADLINE_S)
    assert caught.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED


async def ingest(addr: str, request: pb.IngestPricesRequest) -> pb.IngestPricesResponse:
    async with aio.insecure_channel(addr) as channel:
        reply: pb.IngestPricesResponse = await pb_grpc.IngestServiceStub(channel).IngestPrices(request, timeout=10)
        return reply


async def test_a_batch_whose_deadline_passed_behind_a_table_lock_is_not_committed_after_it(
    core: Process, migrated_env: dict[str, str]
) -> None:
    url, request = migrated_env["PERSEUS_DATABASE_URL"], batch("locked-1")
    locker = await asyncpg.connect(url)
    try:
        async with locker.transaction():
            await locker.execute("LOCK TABLE price_feeds IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            await ingest_past_deadline(core.addr, request)
            await asyncio.sleep(STALL_S - (time.monotonic() - started))
    finally:
        await locker.close()
    await asyncio.sleep(1.0)  # the lock is gone: a statement still waiting on it commits now
    assert await stored(url, "locked-1") == 0, "the core committed a batch after its caller's deadline"

    assert (await ingest(core.addr, request)).ingested == 2  # the caller's retry stores it, once
    assert await stored(url, "locked-1") == 2


@pytest.fixture(scope="module")
def frozen_core(private_postgres: EmbeddedPostgres, redis_url: str, redis_prefix: str) -> Iterator[Process]:
    env = {
        "PERSEUS_DATABASE_URL": private_postgres.url,
        "PERSEUS_REDIS_URL": redis_url,
        "PERSEUS_REDIS_PREFIX": f"{redis_prefix}deadline:",
        "PERSEUS_CORE_METRICS_ADDR": "",
        "PERSEUS_LOG_FORMAT": "text",
        "PERSEUS_MODE": "pw-host",
    }
    assert run_cli(["migrate"], env).returncode == 0
    with running_core(env, PERSEUS_MODE="exchange", PERSEUS_EXCHANGES="sim", PERSEUS_SIM_TRADES_PER_S="0") as process:
        yield process


async def test_a_batch_whose_deadline_passed_while_postgres_was_frozen_is_not_committed_after_it(
    frozen_core: Process, private_postgres: EmbeddedPostgres
) -> None:
    request = batch("frozen-1")
    assert (await ingest(frozen_core.addr, batch("warm-up"))).ingested == 2  # the pool's connections are open
    with frozen(private_postgres.pid):
        started = time.monotonic()
        await ingest_past_deadline(frozen_core.addr, request)
        await asyncio.sleep(STALL_S - (time.monotonic() - started))
    await asyncio.sleep(1.0)  # the statement queued in the frozen server runs now, unless it stops itself
    assert await stored(private_postgres.url, "frozen-1") == 0, "the core committed a batch after its deadline"

    assert (await ingest(frozen_core.addr, request)).ingested == 2
    assert await stored(private_postgres.url, "frozen-1") == 2
