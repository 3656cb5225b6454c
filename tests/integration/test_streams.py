"""StreamService through the real core: live events with consecutive seqs, exact resume, gaps, bad
input, multiplexed streams that add and remove channels, and nothing left behind by a client that
cancels; plus the hub's slow-consumer rule and its recovery from a dropped Redis connection."""

from __future__ import annotations

import asyncio
import inspect
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import grpc
import httpx
import pytest
import redis.asyncio as aioredis
from grpc import aio

from common import resp
from core.adapters.events import Event, EventPublisher
from core.adapters.redis_keys import RedisKeys
from core.adapters.stream_history import StreamHistory
from core.adapters.stream_hub import StreamHub
from core.domain.channels import Channel, ChannelFamily
from core.domain.errors import StreamFellBehind
from core.rpc.stream_servicer import stream_status
from core.services.streams import Delivery, Item, Streams, Subscribed
from perseus.marketdata.v1 import prices_pb2, stream_service_pb2 as pb, stream_service_pb2_grpc as stream_grpc
from tests.support.processes import Process, free_port, running_core
from tests.support.redis_target import kill_connections_named, on_owner, pipeline

pytestmark = pytest.mark.integration

READ_TIMEOUT_S = 10.0


@pytest.fixture(scope="module")
def metrics_addr() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def core(migrated_env: dict[str, str], metrics_addr: str) -> Iterator[Process]:
    """A core with its Prometheus endpoint on, to count its streams and tasks."""
    with running_core(migrated_env, PERSEUS_CORE_METRICS_ADDR=metrics_addr) as process:
        yield process


@pytest.fixture
def publisher(bus: resp.Pipeline, redis_prefix: str) -> EventPublisher:
    return EventPublisher(bus, RedisKeys(redis_prefix))


@pytest.fixture
async def stub(core: Process) -> AsyncIterator[stream_grpc.StreamServiceStub]:
    async with aio.insecure_channel(core.addr) as channel:
        yield stream_grpc.StreamServiceStub(channel)


def fresh_channel() -> Channel:
    return Channel(ChannelFamily.PRICES, "coinbase", f"S{secrets.token_hex(3).upper()}-USD", None)


def name_of(channel: Channel) -> str:
    return f"prices:{channel.exchange}:{channel.symbol}"


def payload(channel: Channel, price: int) -> bytes:
    feed = prices_pb2.PriceFeed(symbol=channel.symbol, price=str(price), source=channel.exchange)
    return pb.StreamEvent(channel=name_of(channel), price_update=feed).SerializeToString()


async def publish(publisher: EventPublisher, channel: Channel, prices: range) -> int:
    """Publish one event per price; returns the seq of the last one."""
    last = await publisher.publish([Event(channel, payload(channel, p)) for p in prices])
    return last[channel]


async def publish_one_by_one(publisher: EventPublisher, channel: Channel, prices: range) -> int:
    for price in prices:
        last = await publish(publisher, channel, range(price, price + 1))
    return last


def unbatched(response):  # type: ignore[no-untyped-def]
    """A response carrying an EventBatch as one response per event (the same type and ref)."""
    if response.WhichOneof("kind") != "events":
        return [response]
    ref = {"ref": response.ref} if "ref" in response.DESCRIPTOR.fields_by_name else {}
    return [type(response)(event=event, **ref) for event in response.events.events]


async def read(call: aio.Call, count: int) -> list:  # type: ignore[type-arg]
    """The next ``count`` responses, batches of events counted per event."""
    out: list = []  # type: ignore[type-arg]
    async with asyncio.timeout(READ_TIMEOUT_S):
        while len(out) < count:
            out += unbatched(await call.read())  # type: ignore[attr-defined]
    assert len(out) == count, f"more than {count} responses: {out}"
    return out


def events(responses: list) -> list[tuple[int, str]]:  # type: ignore[type-arg]
    assert all(r.WhichOneof("kind") == "event" for r in responses), responses
    return [(r.event.seq, r.event.price_update.price) for r in responses]


async def status_of(call: aio.UnaryStreamCall) -> tuple[grpc.StatusCode, str]:
    async with asyncio.timeout(READ_TIMEOUT_S):
        with pytest.raises(aio.AioRpcError) as caught:
            while True:
                await call.read()
    return caught.value.code(), caught.value.details()


async def shard_subscribers(redis: aioredis.Redis, channel: str) -> int:
    reply = await on_owner(redis, channel, "PUBSUB", "SHARDNUMSUB", channel)
    return int(reply[1])


async def settled(gauge: Callable[[], float]) -> float:
    """The gauge once two readings 0.3 s apart agree (tasks of what just ended are still finishing)."""
    last = gauge()
    for _ in range(20):
        await asyncio.sleep(0.3)
        now, last = last, gauge()
        if now == last:
            break
    return last


async def eventually(check: Callable[[], bool | Awaitable[bool]]) -> None:
    deadline = asyncio.get_running_loop().time() + 5.0
    while True:
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def core_gauge(metrics_addr: str, name: str) -> float:
    for line in httpx.get(f"http://{metrics_addr}/metrics", timeout=2).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in the core's metrics")


# Subscribe


async def test_live_events_arrive_with_consecutive_seqs(
    stub: stream_grpc.StreamServiceStub, publisher: EventPublisher
) -> None:
    channel = fresh_channel()
    base = await publish(publisher, channel, range(100, 103))  # before the subscription: not delivered
    call = stub.Subscribe(pb.SubscribeRequest(channels=[f"prices:coinbase:{channel.symbol.lower()}"]))
    [first] = await read(call, 1)
    assert list(first.subscribed.channels) == [name_of(channel)]
    await publish(publisher, channel, range(200, 205))
    received = await read(call, 5)
    assert events(received) == [(base + i, str(200 + i - 1)) for i in range(1, 6)]
    assert received[0].event.channel == name_of(channel)
    call.cancel()


async def test_resume_replays_exactly_the_missed_events_then_live_ones(
    stub: stream_grpc.StreamServiceStub, publisher: EventPublisher
) -> None:
    channel = fresh_channel()
    last = await publish(publisher, channel, range(10))
    first_seq = last - 9
    name = name_of(channel)
    call = stub.Subscribe(pb.SubscribeRequest(channels=[name], resume_from={name: first_seq + 3}))
    [first, *replayed] = await read(call, 7)
    assert first.WhichOneof("kind") == "subscribed"
    assert events(replayed) == [(first_seq + i, str(i)) for i in range(4, 10)]
    await publish(publisher, channel, range(10, 13))
    assert events(await read(call, 3)) == [(first_seq + i, str(i)) for i in range(10, 13)]
    call.cancel()


async def test_resume_while_events_keep_coming_has_no_duplicate_and_no_gap(
    stub: stream_grpc.StreamServiceStub, publisher: EventPublisher
) -> None:
    channel = fresh_channel()
    start = await publish(publisher, channel, range(1))
    producer = asyncio.create_task(publish_one_by_one(publisher, channel, range(1, 200)))
    call = stub.Subscribe(pb.SubscribeRequest(channels=[name_of(channel)], resume_from={name_of(channel): start - 1}))
    [first, *rest] = await read(call, 201)
    await producer
    assert first.WhichOneof("kind") == "subscribed"
    assert [seq for seq, _ in events(rest)] == list(range(start, start + 200))
    call.cancel()


async def test_resume_from_the_future_is_invalid(
    stub: stream_grpc.StreamServiceStub, publisher: EventPublisher
) -> None:
    channel = fresh_channel()
    last = await publish(publisher, channel, range(3))
    request = pb.SubscribeRequest(channels=[name_of(channel)], resume_from={name_of(channel): last + 1})
    code, details = await status_of(stub.Subscribe(request))
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert "from the future" in details and name_of(channel) in details


async def test_a_trimmed_history_is_reported_as_a_resume_gap(
    stub: stream_grpc.StreamServiceStub, redis: aioredis.Redis, bus: resp.Pipeline, redis_prefix: str
) -> None:
    channel = fresh_channel()
    keys = RedisKeys(redis_prefix)
    publisher = EventPublisher(bus, keys, history_maxlen=5)
    last = await publish_one_by_one(publisher, channel, range(300))  # one XADD each: "MAXLEN ~" trims
    first_seq = last - 299
    oldest = int((await redis.xrange(keys.stream_history(channel), count=1))[0][0].split(b"-")[0])
    assert oldest > first_seq + 3
    name = name_of(channel)
    call = stub.Subscribe(pb.SubscribeRequest(channels=[name], resume_from={name: first_seq + 1}))
    [subscribed, gap, *replayed] = await read(call, 2 + last + 1 - oldest)
    assert subscribed.WhichOneof("kind") == "subscribed"
    assert gap.resume_gap == pb.ResumeGap(
        channel=name_of(channel), requested_seq=first_seq + 1, first_available_seq=oldest
    )
    assert [seq for seq, _ in events(replayed)] == list(range(oldest, last + 1))
    await publish(publisher, channel, range(1))
    assert [seq for seq, _ in events(await read(call, 1))] == [last + 1]
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


async def test_a_cancelled_stream_leaves_no_subscription_and_no_task(
    metrics_addr: str, stub: stream_grpc.StreamServiceStub, redis: aioredis.Redis, redis_prefix: str
) -> None:
    # A first stream of this core opens connections that stay (on a cluster, to the masters it touched):
    # counted before the baseline, so what is counted after is only what the streams below left behind.
    sessions_before = core_gauge(metrics_addr, "perseus_stream_sessions")
    warm_up = stub.Subscribe(pb.SubscribeRequest(channels=[name_of(fresh_channel())]))
    await read(warm_up, 1)
    warm_up.cancel()
    await eventually(lambda: core_gauge(metrics_addr, "perseus_stream_sessions") == sessions_before)
    tasks_before = await settled(lambda: core_gauge(metrics_addr, "perseus_core_tasks"))
    channel = fresh_channel()
    internal = RedisKeys(redis_prefix).stream_channel(channel)
    calls = [stub.Subscribe(pb.SubscribeRequest(channels=[name_of(channel)])) for _ in range(3)]
    multiplex = stub.Multiplex()
    await multiplex.write(pb.MultiplexRequest(ref=1, subscribe=[name_of(channel)]))
    for call in [*calls, multiplex]:
        await read(call, 1)
    assert await shard_subscribers(redis, internal) == 1  # one Redis subscription for the four streams
    assert core_gauge(metrics_addr, "perseus_stream_sessions") == sessions_before + 4
    calls[0].cancel()
    await asyncio.sleep(0.2)
    assert await shard_subscribers(redis, internal) == 1
    for call in [*calls[1:], multiplex]:
        call.cancel()

    await eventually(lambda: _gone(redis, internal))
    await eventually(lambda: core_gauge(metrics_addr, "perseus_stream_sessions") == sessions_before)
    await eventually(lambda: core_gauge(metrics_addr, "perseus_core_tasks") <= tasks_before)


# Multiplex


async def test_multiplex_adds_and_removes_channels_on_one_open_stream(
    stub: stream_grpc.StreamServiceStub, publisher: EventPublisher, redis: aioredis.Redis, redis_prefix: str
) -> None:
    a, b = fresh_channel(), fresh_channel()
    call = stub.Multiplex()
    await call.write(pb.MultiplexRequest(ref=7, subscribe=[f"prices:coinbase:{a.symbol.lower()}"]))
    [ack] = await read(call, 1)
    assert (ack.ref, list(ack.subscribed.channels)) == (7, [name_of(a)])
    seq_a = await publish(publisher, a, range(1))
    [event] = await read(call, 1)
    assert (event.ref, event.event.channel, event.event.seq) == (0, name_of(a), seq_a)

    await call.write(pb.MultiplexRequest(ref=8, subscribe=[name_of(b)], unsubscribe=[name_of(a)]))
    [first, second] = await read(call, 2)
    assert {first.WhichOneof("kind"), second.WhichOneof("kind")} == {"subscribed", "unsubscribed"}
    assert first.ref == second.ref == 8
    await eventually(lambda: _gone(redis, RedisKeys(redis_prefix).stream_channel(a)))
    await publish(publisher, a, range(1))  # no longer carried
    seq_b = await publish(publisher, b, range(5, 6))
    [event] = await read(call, 1)
    assert (event.event.channel, event.event.seq, event.event.price_update.price) == (name_of(b), seq_b, "5")
    call.cancel()


async def _gone(redis: aioredis.Redis, internal: str) -> bool:
    return await shard_subscribers(redis, internal) == 0


async def test_multiplex_rejects_a_bad_request_whole_and_stays_open(
    stub: stream_grpc.StreamServiceStub, publisher: EventPublisher
) -> None:
    good = fresh_channel()
    last = await publish(publisher, good, range(1))
    call = stub.Multiplex()
    await call.write(pb.MultiplexRequest(ref=1, subscribe=[name_of(good), "prices:nowhere:BTC-USD"]))
    await call.write(pb.MultiplexRequest(ref=2))
    await call.write(pb.MultiplexRequest(ref=3, subscribe=[name_of(good)], resume_from={name_of(good): last + 1}))
    [bad_channel, empty, future] = await read(call, 3)
    assert (bad_channel.ref, bad_channel.rejected.reason) == (1, pb.REJECT_REASON_INVALID_CHANNEL)
    assert "prices:nowhere:BTC-USD" in bad_channel.rejected.message
    assert (empty.ref, empty.rejected.reason) == (2, pb.REJECT_REASON_EMPTY)
    assert (future.ref, future.rejected.reason) == (3, pb.REJECT_REASON_INVALID_RESUME)
    await call.write(pb.MultiplexRequest(ref=4, subscribe=[name_of(good)]))
    [ack] = await read(call, 1)
    assert ack.ref == 4 and list(ack.subscribed.channels) == [name_of(good)]
    seq = await publish(publisher, good, range(1))
    assert [r.event.seq for r in await read(call, 1)] == [seq]
    call.cancel()


async def test_multiplex_resume_on_a_live_channel_replays_for_that_ref_only(
    stub: stream_grpc.StreamServiceStub, publisher: EventPublisher
) -> None:
    channel = fresh_channel()
    name = name_of(channel)
    call = stub.Multiplex()
    await call.write(pb.MultiplexRequest(ref=1, subscribe=[name]))
    await read(call, 1)
    last = await publish(publisher, channel, range(5))
    live = await read(call, 5)
    assert [(r.ref, r.event.seq) for r in live] == [(0, seq) for seq in range(last - 4, last + 1)]
    await call.write(pb.MultiplexRequest(ref=2, subscribe=[name], resume_from={name: last - 2}))
    replay = await read(call, 3)
    assert [(r.ref, r.WhichOneof("kind"), r.event.seq) for r in replay[:2]] == [
        (2, "event", last - 1),
        (2, "event", last),
    ]
    assert replay[2].ref == 2 and list(replay[2].subscribed.channels) == [name]
    seq = await publish(publisher, channel, range(1))
    [after] = await read(call, 1)
    assert (after.ref, after.event.seq) == (0, seq)  # live once, not a second copy for ref 2
    call.cancel()


# The hub itself


async def test_the_hub_ends_a_slow_consumer_with_resource_exhausted(
    redis_url: str, redis_prefix: str, publisher: EventPublisher
) -> None:
    keys = RedisKeys(redis_prefix)
    channel = fresh_channel()
    hub = StreamHub(redis_url, queue_size=5)
    await hub.start()
    try:
        slow, fast = hub.subscriber(), hub.subscriber()
        await hub.acquire(slow, [keys.stream_channel(channel)])
        await hub.acquire(fast, [keys.stream_channel(channel)])
        assert hub.channel_count == 1
        await publish(publisher, channel, range(3))
        got = [(await fast.get())[1] for _ in range(3)]
        await publish(publisher, channel, range(3, 6))  # the slow one now holds 6 > 5
        got += [(await fast.get())[1] for _ in range(3)]
        assert got == list(range(got[0], got[0] + 6))
        with pytest.raises(StreamFellBehind) as caught:
            async with asyncio.timeout(5):
                while True:
                    await slow.get()
        assert stream_status(caught.value) is grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "resume from your last seq" in str(caught.value)
        hub.release_all(slow)
        hub.release_all(fast)
        assert hub.channel_count == 0
    finally:
        await hub.aclose()


async def flattened(batches: AsyncIterator[list[Item]]) -> AsyncIterator[Item]:
    async for batch in batches:
        for item in batch:
            yield item


async def test_after_a_redis_disconnect_the_stream_catches_up_from_history(
    redis_url: str, redis: aioredis.Redis, redis_prefix: str, publisher: EventPublisher
) -> None:
    client_name = f"hub-test-{secrets.token_hex(4)}"
    history_redis = pipeline(redis_url, client_name=f"history-test-{secrets.token_hex(4)}")
    hub = StreamHub(redis_url, client_name=client_name)
    await hub.start()
    history = StreamHistory(history_redis, RedisKeys(redis_prefix))
    streams = Streams(hub, history, default_exchange="sim", exchanges=["coinbase"])
    session = streams.open()
    channel = fresh_channel()
    try:
        async with asyncio.timeout(READ_TIMEOUT_S):
            answers = [item async for item in session.subscribe(0, [name_of(channel)], {})]
            assert isinstance(answers[-1], Subscribed)
            items = flattened(session.batches())
            last = await publish(publisher, channel, range(2))
            assert [(await anext(items)).seq for _ in range(2)] == [last - 1, last]  # type: ignore[union-attr]
            assert await kill_connections_named(redis, client_name) >= 1
            last = await publish(publisher, channel, range(2, 6))  # possibly while the hub is reconnecting
            delivered = [await anext(items) for _ in range(4)]
            assert all(isinstance(d, Delivery) for d in delivered)
            assert [d.seq for d in delivered] == list(range(last - 3, last + 1))  # type: ignore[union-attr]
            last = await publish(publisher, channel, range(6, 7))
            assert (await anext(items)).seq == last  # type: ignore[union-attr]
    finally:
        session.close()
        await hub.aclose()
        await history_redis.aclose()
