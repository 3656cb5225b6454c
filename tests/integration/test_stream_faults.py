"""Streams and reads across faults, with real processes: a core restart (resume gives exactly what was
missed), a private Redis restarted under open streams, with its data and without it, and a read on a
stalled Redis, which ends with DEADLINE_EXCEEDED instead of hanging."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc import aio

from core.adapters.events import Event, EventPublisher
from core.adapters.redis_keys import RedisKeys
from perseus.marketdata.v1 import (
    common_pb2,
    ingest_service_pb2 as ingest_pb,
    ingest_service_pb2_grpc as ingest_grpc,
    market_data_service_pb2 as md_pb2,
    market_data_service_pb2_grpc as md_grpc,
    prices_pb2,
    stream_service_pb2 as pb,
    stream_service_pb2_grpc as stream_grpc,
)
from perseus_cli.devstack.valkey import EmbeddedRedis
from tests.integration.test_streams import fresh_channel, name_of, payload, unbatched
from tests.support.processes import running_core
from tests.support.redis_target import pipeline

pytestmark = pytest.mark.integration

READ_TIMEOUT_S = 15.0


async def subscribed(call: aio.UnaryStreamCall) -> None:
    async with asyncio.timeout(READ_TIMEOUT_S):
        response = await call.read()
    assert response.WhichOneof("kind") == "subscribed", response


async def read_events(call: aio.UnaryStreamCall, count: int) -> list[pb.StreamEvent]:
    """The next ``count`` events, skipping the acknowledgement."""
    out: list[pb.StreamEvent] = []
    async with asyncio.timeout(READ_TIMEOUT_S):
        while len(out) < count:
            response = await call.read()
            assert response is not aio.EOF, f"stream ended after {out}"
            for single in unbatched(response):
                assert single.WhichOneof("kind") in ("event", "subscribed"), single
                if single.WhichOneof("kind") == "event":
                    out.append(single.event)
    return out


async def ingest(addr: str, symbol: str, prices: range) -> None:
    """Prices through the real ingestion path: each new feed becomes a price_update event."""
    now_ms = int(time.time() * 1000) - 10_000
    feeds = []
    for i, price in enumerate(prices):
        feed = prices_pb2.PriceFeed(symbol=symbol, price=str(price), volume="1", source="coinbase")
        feed.timestamp.FromMilliseconds(now_ms + i)
        feeds.append(feed)
    async with aio.insecure_channel(addr) as channel:
        reply = await ingest_grpc.IngestServiceStub(channel).IngestPrices(
            ingest_pb.IngestPricesRequest(feeds=feeds), timeout=5
        )
    assert reply.ingested == len(feeds)


async def test_resume_across_a_core_restart_gives_exactly_the_missed_events(
    migrated_env: dict[str, str], redis_url: str, redis_prefix: str
) -> None:
    channel = fresh_channel()
    name = name_of(channel)
    bus = pipeline(redis_url)
    publisher = EventPublisher(bus, RedisKeys(redis_prefix))
    try:
        with running_core(migrated_env) as first:
            async with aio.insecure_channel(first.addr) as grpc_channel:
                call = stream_grpc.StreamServiceStub(grpc_channel).Subscribe(pb.SubscribeRequest(channels=[name]))
                await subscribed(call)
                await ingest(first.addr, channel.symbol, range(100, 103))
                seen = await read_events(call, 3)
                assert [e.price_update.price for e in seen] == ["100", "101", "102"]
                assert first.stop() == 0
                with pytest.raises(aio.AioRpcError) as ended:
                    async with asyncio.timeout(READ_TIMEOUT_S):
                        await call.read()
                assert ended.value.code() is grpc.StatusCode.UNAVAILABLE
        # while no core runs, other instances keep publishing (here: the publisher itself)
        await publisher.publish([Event(channel, payload(channel, p)) for p in range(103, 106)])
        with running_core(migrated_env) as second:
            async with aio.insecure_channel(second.addr) as grpc_channel:
                request = pb.SubscribeRequest(channels=[name], resume_from={name: seen[-1].seq})
                call = stream_grpc.StreamServiceStub(grpc_channel).Subscribe(request)
                missed = await read_events(call, 3)
                await ingest(second.addr, channel.symbol, range(106, 108))
                live = await read_events(call, 2)
        received = [*seen, *missed, *live]
        assert [e.price_update.price for e in received] == [str(p) for p in range(100, 108)]
        assert [e.seq for e in received] == list(range(seen[0].seq, seen[0].seq + 8))
    finally:
        await bus.aclose()


@pytest.fixture
async def private_core(migrated_env: dict[str, str], embedded_redis: EmbeddedRedis) -> AsyncIterator[str]:
    with running_core({**migrated_env, "PERSEUS_REDIS_URL": embedded_redis.url}) as process:
        yield process.addr


@pytest.mark.standalone_redis("restarts a private Redis server, with and without its data")
@pytest.mark.parametrize("keeps_data", [True, False], ids=["redis-keeps-its-data", "redis-loses-its-data"])
async def test_streams_survive_a_redis_restart(
    private_core: str, embedded_redis: EmbeddedRedis, redis_prefix: str, keeps_data: bool
) -> None:
    channel = fresh_channel()
    name = name_of(channel)
    async with aio.insecure_channel(private_core) as grpc_channel:
        call = stream_grpc.StreamServiceStub(grpc_channel).Subscribe(pb.SubscribeRequest(channels=[name]))
        await subscribed(call)
        await ingest(private_core, channel.symbol, range(1, 4))
        before = await read_events(call, 3)

        embedded_redis.stop()
        if not keeps_data:  # its append-only files go; the port file stays, so the URL does too
            for data in embedded_redis.dir.glob("appendonly*"):
                shutil.rmtree(data) if data.is_dir() else data.unlink()
        embedded_redis.start()
        await ingest(private_core, channel.symbol, range(4, 7))  # published once the core's Redis is back

        responses: list[pb.SubscribeResponse] = []
        async with asyncio.timeout(READ_TIMEOUT_S):
            while sum(r.WhichOneof("kind") == "event" for r in responses) < 3:
                responses += unbatched(await call.read())
        after = [r.event for r in responses if r.WhichOneof("kind") == "event"]
        gaps = [r.resume_gap for r in responses if r.WhichOneof("kind") == "resume_gap"]
        call.cancel()
    assert [e.price_update.price for e in after] == ["4", "5", "6"]  # the stream continued: nothing missing
    if keeps_data:
        assert [e.seq for e in after] == [before[-1].seq + i for i in (1, 2, 3)] and not gaps
    else:  # the counters were lost: seqs start a new, higher run, and the stream says so
        assert after[0].seq > before[-1].seq + 1
        assert [e.seq for e in after] == [after[0].seq + i for i in (0, 1, 2)]
        assert [(g.requested_seq, g.first_available_seq) for g in gaps] == [(before[-1].seq, after[0].seq)]


@pytest.mark.standalone_redis("freezes a private Redis server with SIGSTOP")
async def test_a_read_on_a_stalled_redis_is_answered_from_postgres_within_the_core_deadline(
    migrated_env: dict[str, str], embedded_redis: EmbeddedRedis
) -> None:
    env = {**migrated_env, "PERSEUS_REDIS_URL": embedded_redis.url, "PERSEUS_CORE_MAX_CALL_S": "2"}
    with running_core(env) as core:
        async with aio.insecure_channel(core.addr) as grpc_channel:
            market = md_grpc.MarketDataServiceStub(grpc_channel)
            request = md_pb2.GetCandlesRequest(exchange="sim", symbol="STALL-USD", timeframe=common_pb2.TIMEFRAME_1M)
            await market.GetCandles(request, timeout=5)  # answers while Redis does
            assert embedded_redis.pid is not None
            os.kill(embedded_redis.pid, signal.SIGSTOP)
            try:
                started = time.monotonic()
                request.symbol = "STALL2-USD"  # another series: not an answer the core keeps
                answered = await market.GetCandles(request)  # the caller sets no deadline: the core's applies
                elapsed = time.monotonic() - started
                with pytest.raises(aio.AioRpcError) as own_deadline:  # a caller's shorter deadline ends it sooner
                    request.symbol = "STALL3-USD"
                    await market.GetCandles(request, timeout=0.2)
                assert own_deadline.value.code() is grpc.StatusCode.DEADLINE_EXCEEDED
            finally:
                os.kill(embedded_redis.pid, signal.SIGCONT)
            assert (await market.GetCandles(request, timeout=5)).candles == []  # and it answers again
    assert answered.candles == [] and elapsed < 2  # the window given up on, PostgreSQL read, within the deadline
