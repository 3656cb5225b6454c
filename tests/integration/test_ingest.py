"""Ingestion through the real core over gRPC: per-feed validation, exact digits, idempotent retries,
the latest-price cache and price_update events in Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator

import asyncpg
import grpc
import pytest
import redis

from core.adapters.redis_keys import RedisKeys
from core.domain.channels import Channel, ChannelFamily
from perseus.marketdata.v1 import (
    ingest_service_pb2 as pb,
    ingest_service_pb2_grpc as pb_grpc,
    prices_pb2,
    stream_service_pb2,
)
from tests.support.redis_target import sync_redis_client

pytestmark = pytest.mark.integration


AFTER_COMMIT_S = 0.5  # the cache and events are written by a background task after the answer


def eventually(condition: Callable[[], object], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not within the timeout"
        time.sleep(0.02)


def feed(symbol: str = "BTC-USD", price: str = "67234.56", **fields: object) -> prices_pb2.PriceFeed:
    message = prices_pb2.PriceFeed(symbol=symbol, price=price, volume=str(fields.pop("volume", "1.5")))
    message.source = str(fields.pop("source", "coinbase"))
    message.timestamp.FromMilliseconds(int(fields.pop("ts_ms", time.time() * 1000)))  # type: ignore[call-overload]
    for name, value in fields.items():
        setattr(message, name, value)
    return message


@pytest.fixture(scope="module")
def ingest(channel: grpc.Channel) -> pb_grpc.IngestServiceStub:
    return pb_grpc.IngestServiceStub(channel)


@pytest.fixture
def keys(redis_prefix: str) -> RedisKeys:
    return RedisKeys(redis_prefix)


@pytest.fixture(scope="module")
def rds(redis_url: str) -> Iterator[redis.Redis]:
    client = sync_redis_client(redis_url)
    yield client
    client.close()


async def _rows(database_url: str, query: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch(query, *args)
    finally:
        await conn.close()


async def test_a_good_batch_is_stored_with_every_digit(ingest: pb_grpc.IngestServiceStub, database_url: str) -> None:
    ts = int(time.time() * 1000) - 5_000
    feeds = [
        feed("ETHX/USD", "2678.900000000000000001", volume="0.000000000000000001", ts_ms=ts),
        feed("ethx-usd", "2679.10", source="kraken", ts_ms=ts, bid="2679.00", ask="2679.20"),
    ]
    reply = ingest.IngestPrices(pb.IngestPricesRequest(feeds=feeds, worker_id="w1", batch_id="b1"), timeout=5)
    assert (reply.status, reply.ingested, reply.failed) == (pb.INGEST_STATUS_SUCCESS, 2, 0)
    rows = await _rows(
        database_url,
        "SELECT symbol, source, price::text, volume::text, bid::text FROM price_feeds"
        " WHERE symbol = 'ETHX-USD' ORDER BY source",
    )
    assert [tuple(r) for r in rows] == [
        ("ETHX-USD", "coinbase", "2678.900000000000000001", "0.000000000000000001", None),
        ("ETHX-USD", "kraken", "2679.10", "1.5", "2679.00"),
    ]


async def test_bad_feeds_are_reported_by_index_and_the_good_ones_stored(
    ingest: pb_grpc.IngestServiceStub, database_url: str
) -> None:
    now = int(time.time() * 1000)
    feeds = [
        feed("SOLX-USD", "abc"),
        feed("SOLX-USD", "-1"),
        feed("SOLX-USD", "NaN"),
        feed("SOLX-USD", "Infinity"),
        feed("SOLX-USD", "150.25", ts_ms=now - 1000),  # the good one, index 4
        feed("SOLX-USD", "150", ts_ms=now + 3_600_000),
        feed("SOLX-USD", "150", source="nyse"),
        feed("SOLX_USD!", "150"),
        feed("SOLX-USD", "150.25", ts_ms=now - 1000),  # duplicate of 4
        feed("SOLX-USD", "150", volume="-3"),
    ]
    reply = ingest.IngestPrices(pb.IngestPricesRequest(feeds=feeds), timeout=5)
    assert (reply.status, reply.ingested, reply.failed) == (pb.INGEST_STATUS_PARTIAL, 1, 9)
    assert [(e.index, e.field) for e in reply.errors] == [
        (0, "price"),
        (1, "price"),
        (2, "price"),
        (3, "price"),
        (5, "timestamp"),
        (6, "source"),
        (7, "symbol"),
        (8, "feed"),
        (9, "volume"),
    ]
    assert all(e.reason for e in reply.errors)
    rows = await _rows(database_url, "SELECT price::text FROM price_feeds WHERE symbol='SOLX-USD'")
    assert [r[0] for r in rows] == ["150.25"]


async def test_a_retried_batch_is_stored_once_and_published_once(
    ingest: pb_grpc.IngestServiceStub, database_url: str, rds: redis.Redis, keys: RedisKeys
) -> None:
    ts = int(time.time() * 1000) - 2_000
    request = pb.IngestPricesRequest(feeds=[feed("ADAX-USD", "0.35", ts_ms=ts), feed("ADAX-USD", "0.36", ts_ms=ts + 1)])
    first = ingest.IngestPrices(request, timeout=5)
    again = ingest.IngestPrices(request, timeout=5)
    assert first.ingested == again.ingested == 2
    rows = await _rows(database_url, "SELECT count(*) FROM price_feeds WHERE symbol='ADAX-USD'")
    assert rows[0][0] == 2
    channel = Channel(ChannelFamily.PRICES, "coinbase", "ADAX-USD", None)
    eventually(lambda: len(rds.xrange(keys.stream_history(channel))) >= 2)  # written after the answer
    await asyncio.sleep(AFTER_COMMIT_S)  # time for a wrong second publication to show
    history = rds.xrange(keys.stream_history(channel))
    seqs = [int(entry_id.split(b"-")[0]) for entry_id, _ in history]
    assert len(seqs) == 2 and seqs[1] == seqs[0] + 1  # two events, consecutive seqs: nothing published twice
    event = stream_service_pb2.StreamEvent.FromString(history[1][1][b"p"])
    assert event.channel == "prices:coinbase:ADAX-USD"
    assert event.price_update.price == "0.36"


def test_the_latest_price_is_cached_and_an_older_tick_does_not_replace_it(
    ingest: pb_grpc.IngestServiceStub, rds: redis.Redis, keys: RedisKeys
) -> None:
    ts = int(time.time() * 1000) - 1_000
    ingest.IngestPrices(pb.IngestPricesRequest(feeds=[feed("DOT-USD", "7.10", ts_ms=ts)]), timeout=5)
    ingest.IngestPrices(pb.IngestPricesRequest(feeds=[feed("DOT-USD", "6.90", ts_ms=ts - 500)]), timeout=5)
    eventually(lambda: rds.exists(keys.latest_price("coinbase", "DOT-USD")) == 1)
    time.sleep(AFTER_COMMIT_S)  # time for the older tick's write, which must not replace the newer one
    latest = rds.hgetall(keys.latest_price("coinbase", "DOT-USD"))
    assert latest[b"price"] == b"7.10" and int(latest[b"ts"]) == ts
    assert 0 < rds.pttl(keys.latest_price("coinbase", "DOT-USD")) <= 60_000
    assert rds.zscore(keys.price_sources("DOT-USD"), "coinbase") == ts


@pytest.mark.parametrize("count", [0, 101])
def test_empty_and_oversized_batches_are_refused(ingest: pb_grpc.IngestServiceStub, count: int) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        ingest.IngestPrices(pb.IngestPricesRequest(feeds=[feed()] * count), timeout=5)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "batch" in caught.value.details()
