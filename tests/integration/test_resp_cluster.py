"""ClusterPipeline and the client factories on a real local Redis Cluster.

The shared ``redis_cluster`` fixture serves the tests that leave the topology alone. Slot migrations and the
failover kill run on a cluster of this module's own (``private``), the migrations first and the kill last, so
the session's cluster keeps its shape; the uncovered-slots test drops slots of a one-node cluster of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis

from common import redis_clients, resp
from common.resp_cluster import ClusterPipeline, ClusterUnavailable, Node, slot_of
from core.adapters.redis_client import HiredisPackingConnection
from perseus_cli.devstack.processes import free_port
from perseus_cli.devstack.redis_cluster import ClusterNode, LocalRedisCluster

pytestmark = pytest.mark.integration

STANDALONE_URL = "redis://127.0.0.1:6379/0"
PREFIX = "perseus-resp-cluster-test:"
SET_SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]); return redis.call('INCR', KEYS[2])"
ECHO_SCRIPT = "return {KEYS[1], ARGV[1]}"


@pytest.fixture(scope="module")
def private() -> Iterator[LocalRedisCluster]:
    """A 3-master / 3-replica cluster this module reshards and fails over."""
    with LocalRedisCluster() as cluster:
        yield cluster


def cluster_pipeline(url: str) -> ClusterPipeline:
    pipeline = redis_clients.pipeline(url, "cluster", client_name="perseus-test-resp-cluster")
    assert isinstance(pipeline, ClusterPipeline)
    return pipeline


def live_url(cluster: LocalRedisCluster) -> str:
    """A live master's URL: the session's cluster may have lost its first node to another module's failover test."""
    return cluster.masters()[0].url


def by_port(cluster: LocalRedisCluster, node: Node) -> ClusterNode:
    return next(n for n in cluster.nodes if n.port == node.port)


def direct(cluster: LocalRedisCluster, node: Node, *command: Any) -> Any:
    """``command`` on ``node`` alone, unrouted (a key it does not own is answered ``MOVED``)."""
    client = by_port(cluster, node).client()
    try:
        return client.execute_command(*command)
    finally:
        client.close()


def one_per_master(pipeline: ClusterPipeline, tag: str) -> list[str]:
    """A key on each master, in the order of :meth:`SlotMap.masters`."""
    found: dict[Node, str] = {}
    for key in keys_spread(1000, tag):
        found.setdefault(pipeline.slots.owner_of(key), key)
    return [found[node] for node in pipeline.slots.masters()]


def keys_spread(count: int, tag: str = "") -> list[str]:
    return [f"{PREFIX}{tag}k{i}" for i in range(count)]


async def test_commands_go_to_the_master_owning_their_slot_on_all_three(redis_cluster: LocalRedisCluster) -> None:
    pipeline = cluster_pipeline(live_url(redis_cluster))
    try:
        keys = keys_spread(90, "route:")
        assert await pipeline.call(*[("SET", key, key.upper()) for key in keys]) == [b"OK"] * len(keys)
        owners = {key: pipeline.slots.owner_of(key) for key in keys}
        assert len(set(owners.values())) == 3
        # Each key is on the node the slot table names: that node answers a plain GET, unrouted.
        for key, node in owners.items():
            assert direct(redis_cluster, node, "GET", key) == key.upper().encode()
        assert await pipeline.call(*[("GET", key) for key in keys]) == [key.upper().encode() for key in keys]
    finally:
        await pipeline.aclose()


async def test_a_mixed_call_answers_in_order_with_error_replies_as_values(redis_cluster: LocalRedisCluster) -> None:
    pipeline = cluster_pipeline(live_url(redis_cluster))
    try:
        sha = pipeline.register_script(SET_SCRIPT)
        await pipeline.call(("PING",))
        a, b, c = one_per_master(pipeline, "mixed:")
        tagged = [f"{PREFIX}{{pair}}:{i}" for i in range(3)]
        await pipeline.call(("DEL", a), ("DEL", b), ("DEL", c), ("DEL", *tagged), ("DEL", f"{PREFIX}{{s}}n"))
        replies = await pipeline.call(
            ("SET", a, "1"),
            ("PING",),
            ("INCR", b),
            ("EVALSHA", sha, 2, f"{PREFIX}{{s}}v", f"{PREFIX}{{s}}n", "x"),
            ("LPUSH", c, "l"),
            ("INCR", c),  # WRONGTYPE: an error reply, in its place
            ("MSET", tagged[0], "t0", tagged[1], "t1"),
            ("MGET", *tagged),
            ("GET", a),
            ("EVALSHA", sha, 2, f"{PREFIX}{{s}}v", f"{PREFIX}{{s}}n", "y"),
        )
        assert isinstance(replies[5], resp.ReplyError) and str(replies[5]).startswith("WRONGTYPE")
        replies[5] = "WRONGTYPE"
        assert replies == [b"OK", b"PONG", 1, 1, 1, "WRONGTYPE", b"OK", [b"t0", b"t1", None], b"1", 2]
        assert len(pipeline._pipes) == 3  # the call really spanned the three masters
    finally:
        await pipeline.aclose()


async def test_a_script_flushed_from_one_node_is_loaded_again_there(redis_cluster: LocalRedisCluster) -> None:
    pipeline = cluster_pipeline(live_url(redis_cluster))
    try:
        sha = pipeline.register_script(ECHO_SCRIPT)
        keys = keys_spread(30, "script:")
        calls = [("EVALSHA", sha, 1, key, i) for i, key in enumerate(keys)]
        expected = [[key.encode(), str(i).encode()] for i, key in enumerate(keys)]
        assert await pipeline.call(*calls) == expected
        victim = pipeline.slots.owner_of(keys[0])
        assert direct(redis_cluster, victim, "SCRIPT", "FLUSH") == b"OK"
        assert direct(redis_cluster, victim, "SCRIPT", "EXISTS", sha) == [0]
        assert await pipeline.call(*calls) == expected
        assert direct(redis_cluster, victim, "SCRIPT", "EXISTS", sha) == [1]
    finally:
        await pipeline.aclose()


async def test_callers_that_give_up_mid_call_never_get_or_shift_anothers_replies(
    redis_cluster: LocalRedisCluster,
) -> None:
    pipeline = cluster_pipeline(live_url(redis_cluster))
    try:
        sha = pipeline.register_script(ECHO_SCRIPT)
        await pipeline.call(("PING",))
        a, b, c = one_per_master(pipeline, "give-up:")
        given_up = answered = 0

        async def caller(n: int) -> None:
            nonlocal given_up, answered
            for j in range(40):
                tag = f"{n}:{j}"
                try:
                    # Some give up before sending, some while the nodes answer, some never.
                    async with asyncio.timeout((0, 0.0002, 0.001, 5)[(n + j) % 4]):
                        replies = await pipeline.call(
                            ("EVALSHA", sha, 1, a, tag), ("GET", c), ("EVALSHA", sha, 1, b, tag), ("ECHO", tag)
                        )
                except TimeoutError:
                    given_up += 1
                    continue
                answered += 1
                assert replies == [[a.encode(), tag.encode()], None, [b.encode(), tag.encode()], tag.encode()]

        await asyncio.gather(*[caller(n) for n in range(32)])
        assert given_up >= 32 * 10 and answered >= 32 * 10
    finally:
        await pipeline.aclose()


async def test_a_stale_slot_table_is_corrected_by_moved(redis_cluster: LocalRedisCluster) -> None:
    pipeline = cluster_pipeline(live_url(redis_cluster))
    try:
        key = f"{PREFIX}stale"
        await pipeline.call(("SET", key, "v"))
        slot, right = slot_of(key), pipeline.slots.owner_of(key)
        wrong = next(node for node in pipeline.slots.masters() if node != right)
        pipeline.slots.moved(slot, wrong)  # as if the slot had moved away and we had not heard yet
        assert await pipeline.call(("GET", key), ("PING",)) == [b"v", b"PONG"]
        assert pipeline.slots.owner(slot) == right
    finally:
        await pipeline.aclose()


def node_id(cluster: LocalRedisCluster, node: Node) -> str:
    return str(direct(cluster, node, "CLUSTER", "MYID").decode())


async def test_ask_during_a_slot_migration_and_moved_after_it(private: LocalRedisCluster) -> None:
    pipeline = cluster_pipeline(private.url)
    try:
        sha = pipeline.register_script(ECHO_SCRIPT)
        moved, stays, fresh = (f"{PREFIX}{{migrating}}{name}" for name in ("moved", "stays", "fresh"))
        assert await pipeline.call(("SET", moved, "m"), ("SET", stays, "s")) == [b"OK", b"OK"]
        slot, source = slot_of(moved), pipeline.slots.owner_of(moved)
        target = next(node for node in pipeline.slots.masters() if node != source)
        source_id, target_id = node_id(private, source), node_id(private, target)
        direct(private, target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        direct(private, source, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        direct(private, source, "MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", moved)
        assert isinstance(direct_error(private, source, "GET", moved), redis.exceptions.ResponseError)

        # Mid-migration: the moved key is read on the target (ASK), the other on the source, a new key is
        # written on the target; the slot table still names the source.
        replies = await pipeline.call(
            ("GET", moved), ("GET", stays), ("SET", fresh, "f"), ("EVALSHA", sha, 1, moved, "a")
        )
        assert replies == [b"m", b"s", b"OK", [moved.encode(), b"a"]]
        assert pipeline.slots.owner(slot) == source

        direct(private, source, "MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", stays)
        for node in pipeline.slots.masters():
            direct(private, node, "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        # The pipeline has not heard: the source answers MOVED, the call lands on the target.
        assert await pipeline.call(("GET", moved), ("GET", stays), ("GET", fresh)) == [b"m", b"s", b"f"]
        assert pipeline.slots.owner(slot) == target
        assert direct(private, target, "GET", fresh) == b"f"
    finally:
        await pipeline.aclose()


def direct_error(cluster: LocalRedisCluster, node: Node, *command: Any) -> Any:
    try:
        return direct(cluster, node, *command)
    except redis.exceptions.ResponseError as exc:
        return exc


async def test_redis_py_cluster_client_runs_scripts_and_plain_commands(redis_cluster: LocalRedisCluster) -> None:
    client = redis_clients.redis_py(
        live_url(redis_cluster),
        "cluster",
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        max_connections=8,
        connection_class=HiredisPackingConnection,
    )
    assert isinstance(client, aioredis.RedisCluster)
    try:
        keys = keys_spread(12, "redis-py:")
        for key in keys:
            assert await client.set(key, key) is True
        assert [await client.get(key) for key in keys] == [key.encode() for key in keys]
        script = client.register_script(ECHO_SCRIPT)
        assert [await script(keys=[key], args=[7]) for key in keys] == [[key.encode(), b"7"] for key in keys]
        connections = [c for node in client.get_nodes() for c in node._connections]
        assert len({node.name for node in client.get_nodes() if node._connections}) == 3
        assert connections and all(type(c) is HiredisPackingConnection for c in connections)
        assert all(node.max_connections == 8 for node in client.get_nodes())
    finally:
        await client.aclose()


async def test_redis_py_cluster_client_with_blocking_queues_a_burst_past_its_connections(
    redis_cluster: LocalRedisCluster,
) -> None:
    keys = keys_spread(3, "burst:")

    async def burst(client: redis_clients.RedisClient) -> list[Any]:
        script = client.register_script(ECHO_SCRIPT)
        return await asyncio.gather(*[script(keys=[keys[i % 3]], args=[i]) for i in range(300)], return_exceptions=True)

    failing = redis_clients.redis_py(
        live_url(redis_cluster), "cluster", socket_timeout=2.0, socket_connect_timeout=2.0, max_connections=2
    )
    try:
        results = await burst(failing)  # redis-py's own cluster pool: no waiting
        assert any(isinstance(r, redis.exceptions.MaxConnectionsError) for r in results)
    finally:
        await failing.aclose()
    waiting = redis_clients.redis_py(
        live_url(redis_cluster),
        "cluster",
        socket_timeout=2.0,
        socket_connect_timeout=2.0,
        max_connections=2,
        blocking=True,
    )
    assert isinstance(waiting, redis_clients.WaitingRedisCluster)
    try:
        assert await burst(waiting) == [[keys[i % 3].encode(), str(i).encode()] for i in range(300)]
        assert max(len(node._connections) for node in waiting.get_nodes()) <= 2
    finally:
        await waiting.aclose()


async def test_redis_py_standalone_client_with_a_waiting_pool() -> None:
    client = redis_clients.redis_py(
        STANDALONE_URL,
        "standalone",
        socket_timeout=1.5,
        socket_connect_timeout=2.0,
        max_connections=2,
        blocking=True,
        connection_class=HiredisPackingConnection,
    )
    assert isinstance(client, aioredis.Redis)
    try:
        pool = client.connection_pool
        assert isinstance(pool, aioredis.BlockingConnectionPool)
        assert pool.max_connections == 2 and pool.timeout == 1.5
        assert pool.connection_class is HiredisPackingConnection
        key = f"{PREFIX}standalone"
        await asyncio.gather(*[client.set(f"{key}:{i}", i) for i in range(10)])  # 10 callers, 2 connections
        assert await client.mget([f"{key}:{i}" for i in range(10)]) == [str(i).encode() for i in range(10)]
    finally:
        await client.aclose()


async def test_pipeline_is_a_plain_auto_pipeline_on_one_server() -> None:
    pipeline = redis_clients.pipeline(STANDALONE_URL, "standalone", client_name="perseus-test-resp-cluster")
    assert type(pipeline) is resp.AutoPipeline
    try:
        sha = pipeline.register_script(ECHO_SCRIPT)
        assert await pipeline.call(("PING",), ("EVALSHA", sha, 1, f"{PREFIX}one", 1)) == [
            b"PONG",
            [f"{PREFIX}one".encode(), b"1"],
        ]
    finally:
        await pipeline.aclose()


async def test_open_mode_tells_cluster_from_standalone_and_bounds_a_dead_address(
    redis_cluster: LocalRedisCluster,
) -> None:
    assert await redis_clients.open_mode(STANDALONE_URL) == "standalone"
    assert await redis_clients.open_mode(live_url(redis_cluster)) == "cluster"
    dead = f"redis://:secret@127.0.0.1:{free_port()}/0"
    started = time.monotonic()
    with pytest.raises(ConnectionError) as caught:
        await redis_clients.open_mode(dead, timeout_s=1.0)
    assert time.monotonic() - started < 2.0
    assert "127.0.0.1" in str(caught.value) and "secret" not in str(caught.value)


async def test_uncovered_slots_are_an_error_naming_them() -> None:
    with LocalRedisCluster(masters=1, replicas_per_master=0) as small:
        pipeline = cluster_pipeline(small.url)
        try:
            key = f"{PREFIX}uncovered"
            assert await pipeline.call(("SET", key, "v")) == [b"OK"]
            slot = slot_of(key)
            node = small.nodes[0].client()
            try:
                node.execute_command("CLUSTER", "DELSLOTSRANGE", slot, slot + 9)
            finally:
                node.close()
            started = time.monotonic()
            with pytest.raises(ClusterUnavailable, match=rf"does not cover slots {slot}-{slot + 9}"):
                await pipeline.call(("GET", key))
            assert time.monotonic() - started < 3.0
        finally:
            await pipeline.aclose()
        fresh = cluster_pipeline(small.url)  # the first call of a new pipeline says so at once
        try:
            with pytest.raises(ClusterUnavailable, match=rf"does not cover slots {slot}-{slot + 9}"):
                await fresh.call(("PING",))
        finally:
            await fresh.aclose()


async def test_calls_succeed_again_after_a_master_dies_and_its_replica_takes_over(
    private: LocalRedisCluster,
) -> None:
    """Runs last in the module: it kills a master of the module's cluster."""
    pipeline = cluster_pipeline(private.url)
    try:
        sha = pipeline.register_script(ECHO_SCRIPT)
        keys = keys_spread(60, "failover:")
        calls = [("EVALSHA", sha, 1, key, i) for i, key in enumerate(keys)]
        expected = [[key.encode(), str(i).encode()] for i, key in enumerate(keys)]
        assert await pipeline.call(*calls) == expected
        victim = pipeline.slots.owner_of(keys[0])
        private.kill(by_port(private, victim))
        killed = time.monotonic()
        failures: list[BaseException] = []
        while True:
            try:
                replies = await pipeline.call(*calls)
                break
            except ConnectionError as exc:  # ClusterUnavailable after RETRY_S, while no replica has taken over
                failures.append(exc)
                assert time.monotonic() - killed < 30.0, failures[-1]
        recovered = time.monotonic() - killed
        assert replies == expected  # on the promoted replica too (its scripts loaded on NOSCRIPT)
        assert pipeline.slots.owner_of(keys[0]) != victim
        assert recovered < 15.0
        print(f"recovered {recovered:.1f} s after the kill, {len(failures)} calls failed meanwhile")
    finally:
        await pipeline.aclose()
