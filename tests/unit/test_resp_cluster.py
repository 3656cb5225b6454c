"""Routing keys of raw RESP commands, reading cluster redirects, and the client factories' choices (no server)."""

from __future__ import annotations

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection
from redis.crc import key_slot

from common import redis_clients, resp
from common.resp_cluster import ClusterPipeline, Node, _key_slot, _Lost, _ranges, _unsettled, slot_of
from core.adapters.redis_client import HiredisPackingConnection


@pytest.mark.parametrize(
    ("command", "key"),
    [
        (("EVALSHA", "abc", 2, "k1", "k2", "arg"), "k1"),
        ((b"evalsha", b"abc", b"1", b"k1", b"arg"), b"k1"),
        (("EVALSHA", "abc", 0, "arg"), None),
        (("EVAL", "return 1", "1", "{t}a"), "{t}a"),
        (("FCALL", "fn", 1, "k"), "k"),
        (("GET", "k"), "k"),
        ((b"get", b"k"), b"k"),
        (("MGET", "{p}a", "{p}b"), "{p}a"),
        (("MSET", "{p}a", "1", "{p}b", "2"), "{p}a"),
        (("ZRANGE", "z", 0, -1), "z"),
        (("PING",), None),
        ((b"ping",), None),
        (("SCRIPT", "LOAD", "return 1"), None),
        (("CLUSTER", "SLOTS"), None),
        (("ASKING",), None),
    ],
)
def test_key_of_names_the_key_a_command_is_routed_by(command: resp.Command, key: object) -> None:
    assert resp.key_of(command) == key


@pytest.mark.parametrize("key", ["plain", b"plain", "{tag}a", "price:{sim:BTC-USD}:x", bytearray(b"k"), 42])
def test_key_slots_match_redis_for_every_key_type(key: object) -> None:
    as_bytes = str(key).encode() if isinstance(key, int) else key.encode() if isinstance(key, str) else bytes(key)  # type: ignore[arg-type]
    assert _key_slot(key) == key_slot(as_bytes)
    if isinstance(key, str | bytes):
        assert slot_of(key) == key_slot(as_bytes)
    assert _key_slot("{tag}a") == _key_slot("{tag}b") == _key_slot(b"tag")


def test_cluster_errors_are_told_from_command_errors() -> None:
    for text in ("MOVED 3999 127.0.0.1:6381", "ASK 3999 127.0.0.1:6381", "TRYAGAIN Multiple keys", "CLUSTERDOWN x"):
        assert _unsettled(resp.ReplyError(text))
    for text in ("WRONGTYPE Operation", "NOSCRIPT No matching script", "ERR unknown", "ASKING is bad"):
        assert not _unsettled(resp.ReplyError(text))
    assert _unsettled(_Lost(ConnectionError("gone")))
    assert not _unsettled(b"MOVED 1 x:1") and not _unsettled(None) and not _unsettled([b"OK"])


def test_redirects_name_slot_and_node() -> None:
    pipeline = ClusterPipeline({"host": "10.0.0.1", "port": 7000}, tls=False, client_name="t")
    assert pipeline._redirect("MOVED 3999 127.0.0.1:6381") == (3999, Node("127.0.0.1", 6381))
    assert pipeline._redirect("ASK 12 [::1]:7001".replace("[::1]", "::1")) == (12, Node("::1", 7001))
    assert pipeline._redirect("MOVED 5 redis-2.example:6379") == (5, Node("redis-2.example", 6379))


def test_uncovered_ranges_read_well() -> None:
    assert _ranges([0, 1, 2, 5, 9, 10]) == "0-2, 5, 9-10"
    assert _ranges(list(range(0, 20, 2))) == "0, 2, 4, 6, 8 and 5 more ranges"


def test_a_cluster_is_not_reached_over_a_unix_socket() -> None:
    with pytest.raises(ValueError, match="unix socket"):
        redis_clients.pipeline("unix:///tmp/redis.sock", "cluster", client_name="t")


def test_pipeline_picks_the_class_and_tls_by_mode_and_scheme() -> None:
    standalone = redis_clients.pipeline("redis://:pw@h:6380/2", "standalone", client_name="t", stall_s=1.0)
    assert type(standalone) is resp.AutoPipeline
    assert (standalone._params["host"], standalone._params["port"], standalone._params["db"]) == ("h", 6380, 2)
    assert standalone._tls is False and standalone._stall_s == 1.0
    cluster = redis_clients.pipeline("rediss://:pw@h:6380/0", "cluster", client_name="t")
    assert isinstance(cluster, ClusterPipeline)
    assert cluster.slots.tls is True
    assert cluster.slots.params(Node("n2", 7000)) == {"host": "n2", "port": 7000, "password": "pw"}


def test_redis_py_builds_the_client_of_the_mode_with_the_callers_settings() -> None:
    cluster = redis_clients.redis_py(
        "redis://h:7000",
        "cluster",
        socket_timeout=1.0,
        socket_connect_timeout=2.0,
        max_connections=7,
        connection_class=HiredisPackingConnection,
    )
    assert isinstance(cluster, aioredis.RedisCluster)
    assert cluster.connection_kwargs["socket_timeout"] == 1.0
    assert cluster.connection_kwargs["socket_connect_timeout"] == 2.0
    assert cluster.connection_kwargs["health_check_interval"] == 30
    assert [node.connection_class for node in cluster.startup_nodes] == [HiredisPackingConnection]
    assert [node.max_connections for node in cluster.startup_nodes] == [7]
    assert type(cluster) is aioredis.RedisCluster
    waiting_cluster = redis_clients.redis_py(
        "redis://h:7000", "cluster", socket_timeout=1.0, socket_connect_timeout=1.0, max_connections=3, blocking=True
    )
    assert isinstance(waiting_cluster, redis_clients.WaitingRedisCluster)
    assert waiting_cluster._gate._value == 3 and waiting_cluster._wait_s == 1.0
    tls = redis_clients.redis_py(
        "rediss://h:7000", "cluster", socket_timeout=1.0, socket_connect_timeout=1.0, connection_class=object
    )
    assert isinstance(tls, aioredis.RedisCluster)
    assert tls.connection_kwargs["connection_class"] is SSLConnection  # TLS keeps redis-py's class

    plain = redis_clients.redis_py("redis://h:6379/3", "standalone", socket_timeout=1.0, socket_connect_timeout=1.0)
    assert isinstance(plain, aioredis.Redis)
    assert type(plain.connection_pool) is aioredis.ConnectionPool
    assert plain.connection_pool.connection_kwargs["db"] == 3
    assert plain.connection_pool.connection_class is aioredis.Connection
    waiting = redis_clients.redis_py(
        "redis://h:6379", "standalone", socket_timeout=1.0, socket_connect_timeout=1.0, max_connections=4, blocking=True
    )
    assert isinstance(waiting, aioredis.Redis)
    assert isinstance(waiting.connection_pool, aioredis.BlockingConnectionPool)
    assert waiting.connection_pool.max_connections == 4


async def test_an_empty_call_asks_no_node() -> None:
    pipeline = ClusterPipeline({"host": "127.0.0.1", "port": 1}, tls=False, client_name="t")  # nothing listens
    assert await pipeline.call() == []
    await pipeline.aclose()
