"""Ingestion while PostgreSQL or Redis goes away and comes back (private embedded servers, stopped for real)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis

from core.adapters.redis_keys import RedisKeys
from perseus.marketdata.v1 import ingest_service_pb2 as pb, ingest_service_pb2_grpc as pb_grpc, prices_pb2
from perseus_cli.devstack.postgres import EmbeddedPostgres
from perseus_cli.devstack.valkey import EmbeddedRedis
from tests.support.processes import Process, run_cli, running_core

pytestmark = pytest.mark.integration

PREFIX = "faults:"


def feed(price: str, ts_ms: int) -> prices_pb2.PriceFeed:
    message = prices_pb2.PriceFeed(symbol="FLT-USD", price=price, volume="1", source="coinbase")
    message.timestamp.FromMilliseconds(ts_ms)
    return message


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[EmbeddedPostgres, EmbeddedRedis]]:
    data_dir = Path(tempfile.mkdtemp(prefix="perseus-faults-"))  # traversable by the PostgreSQL user when root
    postgres, valkey = EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir)  # postgres/ and redis/ inside
    try:
        postgres.start()
        valkey.start()
        yield postgres, valkey
    finally:
        valkey.stop()
        postgres.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def core(servers: tuple[EmbeddedPostgres, EmbeddedRedis]) -> Iterator[Process]:
    postgres, valkey = servers
    env = {
        "PERSEUS_DATABASE_URL": postgres.url,
        "PERSEUS_REDIS_URL": valkey.url,
        "PERSEUS_REDIS_PREFIX": PREFIX,
        "PERSEUS_CORE_METRICS_ADDR": "",
        "PERSEUS_LOG_FORMAT": "text",
        "PERSEUS_MODE": "exchange",
    }
    assert run_cli(["migrate"], env).returncode == 0
    with running_core(env) as process:
        yield process


def ingest(core: Process, request: pb.IngestPricesRequest) -> pb.IngestPricesResponse:
    with grpc.insecure_channel(core.addr) as channel:
        return pb_grpc.IngestServiceStub(channel).IngestPrices(request, timeout=8)


def count_rows(postgres: EmbeddedPostgres) -> int:
    import asyncio

    import asyncpg

    async def count() -> int:
        conn = await asyncpg.connect(postgres.url)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM price_feeds WHERE symbol = 'FLT-USD'"))
        finally:
            await conn.close()

    return asyncio.run(count())


def test_a_postgres_outage_fails_the_batch_retryably_and_the_retry_stores_it_once(
    core: Process, servers: tuple[EmbeddedPostgres, EmbeddedRedis]
) -> None:
    postgres, _ = servers
    ts = int(time.time() * 1000) - 10_000
    request = pb.IngestPricesRequest(feeds=[feed("10.5", ts), feed("10.6", ts + 1)], batch_id="outage-1")
    postgres.stop()
    with pytest.raises(grpc.RpcError) as caught:
        ingest(core, request)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert "retry" in caught.value.details()
    assert core.proc.poll() is None  # the core keeps running

    postgres.start()
    for attempt in range(20):  # the pool replaces its broken connections
        try:
            reply = ingest(core, request)
            break
        except grpc.RpcError:
            time.sleep(0.25 * (attempt + 1))
    assert reply.ingested == 2
    assert ingest(core, request).ingested == 2  # a second retry changes nothing
    assert count_rows(postgres) == 2


def test_redis_going_away_does_not_fail_ingest_and_publishing_resumes(
    core: Process, servers: tuple[EmbeddedPostgres, EmbeddedRedis]
) -> None:
    postgres, valkey = servers
    keys = RedisKeys(PREFIX)
    before = count_rows(postgres)
    ts = int(time.time() * 1000) - 5_000
    valkey.stop()
    reply = ingest(core, pb.IngestPricesRequest(feeds=[feed("11.0", ts)]))
    assert reply.ingested == 1  # committed in PostgreSQL: acknowledged
    assert count_rows(postgres) == before + 1
    assert core.proc.poll() is None

    valkey.start()
    client = redis.Redis.from_url(valkey.url)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            ingest(core, pb.IngestPricesRequest(feeds=[feed("12.0", ts + 1_000)]))
            latest = client.hget(keys.latest_price("coinbase", "FLT-USD"), "price")
            if latest == b"12.0":
                break
            time.sleep(0.3)
        assert client.hget(keys.latest_price("coinbase", "FLT-USD"), "price") == b"12.0"
    finally:
        client.close()
