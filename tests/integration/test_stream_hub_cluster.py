"""The core's stream hub on a real Redis Cluster: one connection per master that owns a held channel,
``SSUBSCRIBE`` per slot, and subscriptions that follow their slot through a failover and a migration.

Messages are ``SPUBLISH``\\ ed straight to the node that owns the channel (asked of the cluster, as any
publisher would), so a channel the hub subscribed on the wrong node, or not at all, never delivers. The
session's cluster (``redis_cluster``) serves the tests that change nothing; the failover and the slot
migration run on a cluster of this module's own.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis.asyncio as aioredis
from grpc import aio
from redis.asyncio.connection import parse_url

from common import redis_clients
from common.resp_cluster import Node, SlotMap, slot_of
from core.adapters.events import Event, EventPublisher
from core.adapters.redis_keys import RedisKeys
from core.adapters.stream_hub import StreamHub, Subscriber
from core.domain.channels import Channel, ChannelFamily
from core.services.ports import RESYNC
from perseus.marketdata.v1 import prices_pb2, stream_service_pb2 as pb, stream_service_pb2_grpc as stream_grpc
from perseus_cli.devstack.redis_cluster import ClusterNode, LocalRedisCluster
from tests.support.processes import running_core

pytestmark = pytest.mark.integration

WAIT_S = 30.0  # a failover on the local cluster (2 s node timeout) takes a few seconds


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[LocalRedisCluster]:
    """A cluster for tests that kill a master or move a slot."""
    with LocalRedisCluster() as cluster:
        yield cluster


async def owners(url: str) -> SlotMap:
    slots = SlotMap(parse_url(url), tls=False, client_name="hub-test-slots")
    await slots.refresh()
    return slots


def spread(slots: SlotMap, per_master: int) -> list[str]:
    """Channel names (each of its own hash tag, hence slot) with ``per_master`` on every master."""
    names: list[str] = []
    wanted = dict.fromkeys(slots.masters(), per_master)
    while any(wanted.values()):
        name = f"hub-test:ch:{{{secrets.token_hex(6)}}}"
        owner = slots.owner_of(name)
        if wanted[owner]:
            wanted[owner] -= 1
            names.append(name)
    return names


async def spublish(url: str, name: str, seq: int, payload: bytes = b"x") -> int:
    """``SPUBLISH`` on the master that owns ``name`` now; the number of subscribers that got it there."""
    owner = (await owners(url)).owner_of(name)
    client = aioredis.Redis(host=owner.host, port=owner.port)
    try:
        return int(await client.execute_command("SPUBLISH", name, f"{seq}:".encode() + payload))
    finally:
        await client.aclose()


def payload(channel: Channel, name: str, price: int) -> bytes:
    feed = prices_pb2.PriceFeed(symbol=channel.symbol, price=str(price), source=channel.exchange)
    return pb.StreamEvent(channel=name, price_update=feed).SerializeToString()


async def until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while True:
            if check():
                return
            await asyncio.sleep(0.05)


async def next_item(subscriber: Subscriber) -> tuple[str, int, bytes]:
    async with asyncio.timeout(WAIT_S):
        item: tuple[str, int, bytes] = await subscriber.get()
        return item


async def until_delivered(url: str, subscriber: Subscriber, name: str, seq: int) -> list[tuple[str, int, bytes]]:
    """Publish ``seq`` on ``name`` until it arrives (the hub may still be subscribing after a move); the
    items seen on the way."""
    seen: list[tuple[str, int, bytes]] = []
    async with asyncio.timeout(WAIT_S):
        while True:
            await spublish(url, name, seq)
            try:
                async with asyncio.timeout(0.5):
                    while True:
                        item = await subscriber.get()
                        seen.append(item)
                        if item[:2] == (name, seq):
                            return seen
            except TimeoutError:
                continue


@pytest.fixture
async def hub(redis_cluster: LocalRedisCluster) -> AsyncIterator[StreamHub]:
    hub = StreamHub(redis_cluster.url, mode="cluster", client_name=f"hub-test-{secrets.token_hex(4)}")
    await hub.start()
    yield hub
    await hub.aclose()


async def test_channels_of_every_master_arrive_on_one_connection_per_master(
    redis_cluster: LocalRedisCluster, hub: StreamHub
) -> None:
    slots = await owners(redis_cluster.url)
    names = spread(slots, per_master=10)  # 30 slots in one acquire: one SSUBSCRIBE naming them all is CROSSSLOT
    subscriber = hub.subscriber()
    await hub.acquire(subscriber, names)
    assert hub.connection_count == 3
    assert {hub.node_of(name) for name in names} == {str(node) for node in slots.masters()}
    for seq, name in enumerate(names, start=1):
        assert await spublish(redis_cluster.url, name, seq, name.encode()) == 1  # subscribed on the owner
    got = [await next_item(subscriber) for _ in names]
    assert got == [(name, seq, name.encode()) for seq, name in enumerate(names, start=1)]
    hub.release_all(subscriber)
    assert hub.channel_count == 0


async def test_releasing_every_channel_of_a_master_closes_its_connection(
    redis_cluster: LocalRedisCluster, hub: StreamHub
) -> None:
    slots = await owners(redis_cluster.url)
    names = spread(slots, per_master=2)
    subscriber = hub.subscriber()
    await hub.acquire(subscriber, names)
    assert hub.connection_count == 3
    first = slots.masters()[0]
    theirs = [name for name in names if slots.owner_of(name) == first]
    hub.release(subscriber, theirs)
    assert hub.connection_count == 2
    for name in theirs:
        assert await spublish(redis_cluster.url, name, 1) == 0  # nobody subscribed there any more
    rest = [name for name in names if name not in theirs]
    assert await spublish(redis_cluster.url, rest[0], 7) == 1
    assert await next_item(subscriber) == (rest[0], 7, b"x")
    hub.release_all(subscriber)


async def test_a_hub_closed_while_it_asks_the_mode_stops_at_once(
    redis_url: str, redis_cluster: LocalRedisCluster
) -> None:
    """Built without a mode, the hub asks ``INFO cluster`` first (through redis-py, which can swallow a
    cancellation): closing it meanwhile must still end it."""
    for url in (redis_url, redis_cluster.url):
        for delay in (0, 0.0005, 0.001, 0.002, 0.005, 0.01):
            hub = StreamHub(url)
            await hub.start()
            await asyncio.sleep(delay)
            async with asyncio.timeout(2):
                await hub.aclose()


# A cluster of the module's own: a slot migration, then a master killed


def node_of(cluster: LocalRedisCluster, node: Node) -> ClusterNode:
    [found] = [n for n in cluster.nodes if n.port == node.port]
    return found


def setslot(cluster_node: ClusterNode, *args: object) -> None:
    client = cluster_node.client()
    try:
        client.execute_command("CLUSTER", "SETSLOT", *args)
    finally:
        client.close()


def migrate_slot(cluster: LocalRedisCluster, slot: int, source_node: Node, target_node: Node) -> None:
    """Move an empty ``slot`` from ``source`` to ``target`` as ``valkey-cli --cluster reshard`` would."""
    source, target = node_of(cluster, source_node), node_of(cluster, target_node)
    setslot(target, slot, "IMPORTING", source.node_id)
    setslot(source, slot, "MIGRATING", target.node_id)
    setslot(target, slot, "NODE", target.node_id)
    setslot(source, slot, "NODE", target.node_id)
    for node in cluster.masters():
        if node not in (source, target):
            setslot(node, slot, "NODE", target.node_id)


async def test_a_migrated_slot_is_subscribed_again_at_its_new_master(private_cluster: LocalRedisCluster) -> None:
    url = private_cluster.url
    hub = StreamHub(url, mode="cluster", client_name="hub-test-migration")
    await hub.start()
    stale = StreamHub(url, mode="cluster", client_name="hub-test-stale")  # its table predates the migration
    await stale.start()
    try:
        slots = await owners(url)
        source, target = slots.masters()[:2]
        # three channels of three slots of one master: one to move now, one later, one that stays
        moving, late, staying = [name for name in spread(slots, per_master=3) if slots.owner_of(name) == source]
        subscriber = hub.subscriber()
        await hub.acquire(subscriber, [moving, staying])
        warm = stale.subscriber()
        await stale.acquire(warm, [staying])

        migrate_slot(private_cluster, slot_of(moving), source, target)
        # Redis drops the subscription with the slot and says so; the hub subscribes at the new owner
        assert await next_item(subscriber) == (moving, RESYNC, b"")
        assert hub.node_of(moving) == str(target)
        seen = await until_delivered(url, subscriber, moving, 5)
        assert [item for item in seen if item[0] == moving and item[1] != 5] == []

        # a table that predates a migration: the old owner answers MOVED, the hub follows it (and keeps the
        # connection, so the channel that stays there gets no RESYNC)
        migrate_slot(private_cluster, slot_of(late), source, target)
        async with asyncio.timeout(WAIT_S):
            await stale.acquire(warm, [late])
        assert stale.node_of(late) == str(target)
        assert await spublish(url, late, 9) == 1
        assert await next_item(warm) == (late, 9, b"x")
        assert stale.node_of(staying) == str(source)
        assert await spublish(url, staying, 10) == 2  # both hubs
        assert await next_item(warm) == (staying, 10, b"x")
    finally:
        await hub.aclose()
        await stale.aclose()


async def test_after_a_master_dies_its_channels_are_subscribed_at_the_promoted_replica(
    private_cluster: LocalRedisCluster,
) -> None:
    slots = await owners(next(node.url for node in private_cluster.nodes if node.alive))
    names = spread(slots, per_master=2)
    victim = slots.owner_of(names[0])
    doomed = [name for name in names if slots.owner_of(name) == victim]
    url = next(node.url for node in private_cluster.nodes if node.alive and node.port != victim.port)
    # the hub is given the URL of the node about to die: it knows the others from the slot table
    hub = StreamHub(f"redis://{victim}", mode="cluster", client_name="hub-test-failover")
    await hub.start()
    try:
        subscriber = hub.subscriber()
        await hub.acquire(subscriber, names)
        assert await spublish(url, doomed[0], 1) == 1
        assert await next_item(subscriber) == (doomed[0], 1, b"x")

        private_cluster.kill(node_of(private_cluster, victim))
        resynced: set[str] = set()
        async with asyncio.timeout(WAIT_S):
            while resynced != set(doomed):
                name, seq, _ = await subscriber.get()
                assert name in doomed and seq == RESYNC  # channels on the other masters heard nothing
                resynced.add(name)
        promoted = {hub.node_of(name) for name in doomed}
        assert len(promoted) == 1 and str(victim) not in promoted
        for seq, name in enumerate(names, start=10):  # every channel, the moved ones included, delivers
            assert await spublish(url, name, seq) == 1
            assert await next_item(subscriber) == (name, seq, b"x")
        assert hub.connection_count == 3
    finally:
        await hub.aclose()


# End to end: a real core on a cluster, a Subscribe stream, a master killed under the publisher


async def test_a_core_stream_sees_every_event_or_a_gap_across_a_master_kill(migrated_env: dict[str, str]) -> None:
    prefix = migrated_env["PERSEUS_REDIS_PREFIX"]
    keys = RedisKeys(prefix)
    with LocalRedisCluster() as cluster:
        url = cluster.nodes[-1].url  # a replica's: the node named in the URL survives
        slots = await owners(url)
        victim = slots.masters()[0]
        channels: list[Channel] = []
        wanted = {node: 2 for node in slots.masters()}
        while any(wanted.values()):
            channel = Channel(ChannelFamily.PRICES, "coinbase", f"E{secrets.token_hex(3).upper()}-USD", None)
            owner = slots.owner_of(keys.stream_channel(channel))
            if wanted[owner]:
                wanted[owner] -= 1
                channels.append(channel)
        names = [f"prices:coinbase:{c.symbol}" for c in channels]
        doomed = {
            name for name, c in zip(names, channels, strict=True) if slots.owner_of(keys.stream_channel(c)) == victim
        }
        bus = redis_clients.pipeline(url, "cluster", client_name="hub-test-publisher")
        publisher = EventPublisher(bus, keys)
        published: dict[str, list[tuple[int, str]]] = {name: [] for name in names}  # acknowledged (seq, price)
        received: dict[str, list[tuple[int, str]]] = {name: [] for name in names}
        gaps: dict[str, list[tuple[int, int]]] = {name: [] for name in names}
        failed = 0

        async def publish_until(stop: asyncio.Event) -> None:
            nonlocal failed
            price = 0
            while not stop.is_set():
                price += 1
                for name, channel in zip(names, channels, strict=True):
                    event = Event(channel, payload(channel, name, price))
                    try:
                        [seq] = (await publisher.publish([event])).values()
                    except Exception:  # the master is gone: this event may or may not exist
                        failed += 1
                        continue
                    published[name].append((seq, str(price)))
                await asyncio.sleep(0.01)

        with running_core({**migrated_env, "PERSEUS_REDIS_URL": url}) as core:
            async with aio.insecure_channel(core.addr) as grpc_channel:
                call = stream_grpc.StreamServiceStub(grpc_channel).Subscribe(pb.SubscribeRequest(channels=names))
                async with asyncio.timeout(WAIT_S):
                    first = await call.read()
                assert first.WhichOneof("kind") == "subscribed"

                async def read_stream() -> None:
                    while True:
                        response = await call.read()
                        kind = response.WhichOneof("kind")
                        if kind == "resume_gap":
                            gap = response.resume_gap
                            gaps[gap.channel].append((gap.requested_seq, gap.first_available_seq))
                        for event in [response.event] if kind == "event" else response.events.events:
                            received[event.channel].append((event.seq, event.price_update.price))

                reader = asyncio.create_task(read_stream())
                stop = asyncio.Event()
                publishing = asyncio.create_task(publish_until(stop))
                try:
                    await asyncio.sleep(1.0)
                    before = {name: len(published[name]) for name in names}
                    cluster.kill(node_of(cluster, victim))
                    killed = time.monotonic()
                    # until the victim's channels publish again, then everything acknowledged has arrived
                    await until(lambda: all(len(published[name]) > before[name] + 20 for name in doomed))
                    recovered = time.monotonic() - killed
                    stop.set()
                    await publishing
                    await until(lambda: all(received[n] and received[n][-1][0] >= published[n][-1][0] for n in names))
                finally:
                    stop.set()
                    reader.cancel()
                    publishing.cancel()
                    await asyncio.gather(reader, publishing, return_exceptions=True)
                    call.cancel()
        await bus.aclose()

    print(f"publishing recovered {recovered:.1f} s after the kill; {failed} publishes failed; gaps {gaps}")
    assert failed > 0  # the kill happened under the publisher
    for name in names:
        seqs = [seq for seq, _ in received[name]]
        assert seqs == sorted(set(seqs)), f"{name}: out of order or repeated"
        explained = {seq for start, end in gaps[name] for seq in range(start + 1, end)}
        missing = [event for event in published[name] if event not in received[name] and event[0] not in explained]
        assert missing == [], f"{name} ({'on the killed master' if name in doomed else 'elsewhere'}): silently lost"
        assert received[name][-1] == published[name][-1]
