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
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url

from common.resp_cluster import Node, SlotMap, slot_of
from core.adapters.stream_hub import StreamHub, Subscriber
from core.services.ports import RESYNC
from perseus_cli.devstack.redis_cluster import ClusterNode, LocalRedisCluster

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
    url = next(node.url for node in private_cluster.nodes[1:] if node.alive)  # not the node about to die
    slots = await owners(url)
    names = spread(slots, per_master=2)
    victim = slots.owner_of(names[0])
    doomed = [name for name in names if slots.owner_of(name) == victim]
    hub = StreamHub(url, mode="cluster", client_name="hub-test-failover")
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
