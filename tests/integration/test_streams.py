"""StreamService.Subscribe through the real core: live events with consecutive seqs, exact resume, gaps,
bad input, and no subscription left behind by a client that cancels; plus the hub's slow-consumer rule."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import grpc
import pytest
import redis.asyncio as aioredis
from grpc import aio

from core.adapters.events import Event, EventPublisher
from core.adapters.redis_keys import RedisKeys
from core.adapters.stream_history import StreamHistory
from core.adapters.stream_hub import StreamFellBehind, StreamHub
from core.domain.channels import Channel, ChannelFamily
from core.rpc.servicers import stream_status
from core.services.streams import Streams, Subscribed
from perseus.marketdata.v1 import prices_pb2, stream_service_pb2 as pb, stream_service_pb2_grpc as stream_grpc
from tests.support.processes import Process

pytestmark = pytest.mark.integration

READ_TIMEOUT_S = 10.0


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def stub(core: Process) -> AsyncIterator[stream_grpc.StreamServiceStub]:
    async with aio.insecure_channel(core.addr) as channel:
        yield stream_grpc.StreamServiceStub(channel)


def fresh_channel() -> Channel:
    return Channel(ChannelFamily.PRICES, "coinbase", f"S{secrets.token_hex(3).upper()}-USD", None)


def payload(channel: Channel, price: int) -> bytes:
    name = f"prices:{channel.exchange}:{channel.symbol}"
    feed = prices_pb2.PriceFeed(symbol=channel.symbol, price=str(price), source=channel.exchange)
    return pb.StreamEvent(channel=name, price_update=feed).SerializeToString()


async def publish(publisher: EventPublisher, channel: Channel, prices: range) -> None:
    await publisher.publish([Event(channel, payload(channel, p)) for p in prices])


async def read(call: aio.UnaryStreamCall, count: int) -> list[pb.SubscribeResponse]:
    async with asyncio.timeout(READ_TIMEOUT_S):
        return [await call.read() for _ in range(count)]


def events(responses: list[pb.SubscribeResponse]) -> list[tuple[int, str]]:
    assert all(r.WhichOneof("kind") == "event" for r in responses), responses
    return [(r.event.seq, r.event.price_update.price) for r in responses]


async def status_of(call: aio.UnaryStreamCall) -> tuple[grpc.StatusCode, str]:
    async with asyncio.timeout(READ_TIMEOUT_S):
        with pytest.raises(aio.AioRpcError) as caught:
            while True:
                await call.read()
    return caught.value.code(), caught.value.details()


async def test_live_events_arrive_with_consecutive_seqs(
    stub: stream_grpc.StreamServiceStub, redis: aioredis.Redis, redis_prefix: str
) -> None:
    channel = fresh_channel()
    publisher = EventPublisher(redis, RedisKeys(redis_prefix))
    await publish(publisher, channel, range(100, 103))  # before the subscription: not delivered
    call = stub.Subscribe(pb.SubscribeRequest(channels=[f"prices:coinbase:{channel.symbol.lower()}"]))
    [first] = await read(call, 1)
    assert list(first.subscribed.channels) == [f"prices:coinbase:{channel.symbol}"]
    await publish(publisher, channel, range(200, 205))
    received = await read(call, 5)
    assert events(received) == [(seq, str(200 + seq - 4)) for seq in range(4, 9)]
    assert received[0].event.channel == f"prices:coinbase:{channel.symbol}"
    call.cancel()


async def test_resume_replays_exactly_the_missed_events_then_live_ones(
    stub: stream_grpc.StreamServiceStub, redis: aioredis.Redis, redis_prefix: str
) -> None:
    channel = fresh_channel()
    name = f"prices:coinbase:{channel.symbol}"
    publisher = EventPublisher(redis, RedisKeys(redis_prefix))
    await publish(publisher, channel, range(10))
    call = stub.Subscribe(pb.SubscribeRequest(channels=[name], resume_from={name: 4}))
    [first, *replayed] = await read(call, 7)
    assert first.WhichOneof("kind") == "subscribed"
    assert events(replayed) == [(seq, str(seq - 1)) for seq in range(5, 11)]
    await publish(publisher, channel, range(10, 13))
    assert events(await read(call, 3)) == [(seq, str(seq - 1)) for seq in range(11, 14)]
    call.cancel()


async def test_resume_while_events_keep_coming_has_no_duplicate_and_no_gap(
    stub: stream_grpc.StreamServiceStub, redis: aioredis.Redis, redis_prefix: str
) -> None:
    channel = fresh_channel()
    name = f"prices:coinbase:{channel.symbol}"
    publisher = EventPublisher(redis, RedisKeys(redis_prefix))
    await publish(publisher, channel, range(1))

    async def keep_publishing() -> None:
        for price in range(1, 200):
            await publish(publisher, channel, range(price, price + 1))

    producer = asyncio.create_task(keep_publishing())
    call = stub.Subscribe(pb.SubscribeRequest(channels=[name], resume_from={name: 0}))
    [first, *rest] = await read(call, 201)
    await producer
    assert first.WhichOneof("kind") == "subscribed"
    assert [seq for seq, _ in events(rest)] == list(range(1, 201))
    call.cancel()


async def test_resume_from_the_future_is_invalid(
    stub: stream_grpc.StreamServiceStub, redis: aioredis.Redis, redis_prefix: str
) -> None:
    channel = fresh_channel()
    name = f"prices:coinbase:{channel.symbol}"
    await publish(EventPublisher(redis, RedisKeys(redis_prefix)), channel, range(3))
    code, details = await status_of(stub.Subscribe(pb.SubscribeRequest(channels=[name], resume_from={name: 4})))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "from the future" in details and name in details


async def test_a_trimmed_history_is_reported_as_a_resume_gap(
    stub: stream_grpc.StreamServiceStub, redis: aioredis.Redis, redis_prefix: str
) -> None:
    channel = fresh_channel()
    name = f"prices:coinbase:{channel.symbol}"
    keys = RedisKeys(redis_prefix)
    publisher = EventPublisher(redis, keys, history_maxlen=5)
    for price in range(300):  # one XADD per call, so "MAXLEN ~" gets its chances to trim
        await publish(publisher, channel, range(price, price + 1))
    first_seq = int((await redis.xrange(keys.stream_history(channel), count=1))[0][0].split(b"-")[0])
    assert first_seq > 3
    call = stub.Subscribe(pb.SubscribeRequest(channels=[name], resume_from={name: 2}))
    [subscribed, gap, *replayed] = await read(call, 2 + 301 - first_seq)
    assert subscribed.WhichOneof("kind") == "subscribed"
    assert gap.resume_gap == pb.ResumeGap(channel=name, requested_seq=2, first_available_seq=first_seq)
    assert [seq for seq, _ in events(replayed)] == list(range(first_seq, 301))
    await publish(publisher, channel, range(1))
    assert [seq for seq, _ in events(await read(call, 1))] == [301]
    call.cancel()


@pytest.mark.parametrize(
    ("channels", "fragment"),
    [
        (["nonsense:BTC-USD"], "nonsense:BTC-USD"),
        (["candles:BTC-USD:7m"], "candles:BTC-USD:7m"),
        (["prices:nowhere:BTC-USD"], "prices:nowhere:BTC-USD"),
        (["prices:BTC-USD:extra:1h:x"], "prices:BTC-USD:extra:1h:x"),
        ([f"prices:S{i}-USD" for i in range(51)], "at most 50"),
        ([], "at least one"),
    ],
)
async def test_bad_channels_are_invalid(
    stub: stream_grpc.StreamServiceStub, channels: list[str], fragment: str
) -> None:
    code, details = await status_of(stub.Subscribe(pb.SubscribeRequest(channels=channels)))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert fragment in details


async def test_a_cancelled_stream_leaves_no_subscription(
    stub: stream_grpc.StreamServiceStub, redis: aioredis.Redis, redis_prefix: str
) -> None:
    channel = fresh_channel()
    internal = RedisKeys(redis_prefix).stream_channel(channel)
    calls = [stub.Subscribe(pb.SubscribeRequest(channels=[f"prices:coinbase:{channel.symbol}"])) for _ in range(3)]
    for call in calls:
        await read(call, 1)
    assert await shard_subscribers(redis, internal) == 1  # one Redis subscription for the three streams
    calls[0].cancel()
    await asyncio.sleep(0.2)
    assert await shard_subscribers(redis, internal) == 1
    for call in calls[1:]:
        call.cancel()
    for _ in range(100):
        if await shard_subscribers(redis, internal) == 0:
            break
        await asyncio.sleep(0.05)
    assert await shard_subscribers(redis, internal) == 0


async def shard_subscribers(redis: aioredis.Redis, channel: str) -> int:
    reply = await redis.execute_command("PUBSUB", "SHARDNUMSUB", channel)
    return int(reply[1])


async def test_the_hub_ends_a_slow_consumer_with_resource_exhausted(redis: aioredis.Redis, redis_prefix: str) -> None:
    keys = RedisKeys(redis_prefix)
    channel = fresh_channel()
    hub = StreamHub(redis, queue_size=5)
    await hub.start()
    try:
        async with hub.subscription([keys.stream_channel(channel)]) as slow:
            async with hub.subscription([keys.stream_channel(channel)]) as fast:
                await publish(EventPublisher(redis, keys), channel, range(3))
                assert [(await fast.get())[1] for _ in range(3)] == [1, 2, 3]
                await publish(EventPublisher(redis, keys), channel, range(3, 6))  # the slow one now holds 6 > 5
                assert [(await fast.get())[1] for _ in range(3)] == [4, 5, 6]
                with pytest.raises(StreamFellBehind) as caught:
                    async with asyncio.timeout(5):
                        while True:
                            await slow.get()
                assert stream_status(caught.value) is grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "resume from your last seq" in str(caught.value)
        assert hub.channel_count == 0
    finally:
        await hub.aclose()


async def test_after_a_redis_disconnect_the_stream_catches_up_from_history(
    redis_url: str, redis: aioredis.Redis, redis_prefix: str
) -> None:
    name = f"hub-test-{secrets.token_hex(4)}"
    hub_redis = aioredis.Redis.from_url(redis_url, client_name=name)
    keys = RedisKeys(redis_prefix)
    hub = StreamHub(hub_redis)
    await hub.start()
    streams = Streams(hub, StreamHistory(hub_redis, keys), default_exchange="sim", exchanges=["coinbase"])
    channel = fresh_channel()
    publisher = EventPublisher(redis, keys)
    items = streams.subscribe([f"prices:coinbase:{channel.symbol}"], {})
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            assert isinstance(await anext(items), Subscribed)
            await publish(publisher, channel, range(2))
            assert [(await anext(items)).seq for _ in range(2)] == [1, 2]  # type: ignore[union-attr]
            [hub_connection] = [c for c in await redis.client_list(_type="pubsub") if c["name"] == name]
            assert await redis.client_kill_filter(_id=hub_connection["id"]) == 1
            await publish(publisher, channel, range(2, 6))  # possibly while the hub is reconnecting
            delivered = [await anext(items) for _ in range(4)]
            assert [d.seq for d in delivered] == [3, 4, 5, 6]  # type: ignore[union-attr]
            await publish(publisher, channel, range(6, 7))
            assert (await anext(items)).seq == 7  # type: ignore[union-attr]
    finally:
        await items.aclose()
        await hub.aclose()
        await hub_redis.aclose()
