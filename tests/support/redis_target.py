"""Which Redis the test session runs against: the standalone server, or a local Redis Cluster.

``PERSEUS_TEST_REDIS=cluster`` makes every pytest process (each xdist worker) start one
:class:`~perseus_cli.devstack.redis_cluster.LocalRedisCluster` (3 masters, 3 replicas) and hands a node's URL
to everything that otherwise gets ``PERSEUS_TEST_REDIS_URL``: the ``redis_url`` fixture, hence ``base_env``'s
``PERSEUS_REDIS_URL`` for every core and gateway the tests start. The processes find out that it is a cluster
themselves (``common.redis_mode.detect``), as they would in production; only the clients the tests build
directly have to be told, which is what :func:`redis_client`, :func:`pipeline` and :func:`sync_redis_client`
are for. Unset (or
``standalone``), nothing changes.

Tests that cannot run on a cluster by nature carry ``@pytest.mark.standalone_redis("why")`` (the reason,
else :data:`STANDALONE_REASON`); they are skipped in cluster mode only.
"""

from __future__ import annotations

import os
from typing import Any, Literal, TypeAlias

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

from common import redis_clients, resp

MODE_ENV = "PERSEUS_TEST_REDIS"
Mode = Literal["standalone", "cluster"]

AsyncClient: TypeAlias = aioredis.Redis | AsyncRedisCluster
SyncClient: TypeAlias = redis.Redis | RedisCluster

STANDALONE_REASON = "needs one Redis server: it stops or freezes it, or SELECTs another database"


def session_mode() -> Mode:
    """``PERSEUS_TEST_REDIS``: ``standalone`` (the default) or ``cluster``; anything else is a usage error."""
    value = os.environ.get(MODE_ENV, "") or "standalone"
    if value not in ("standalone", "cluster"):
        raise pytest.UsageError(f"{MODE_ENV}={value!r}: expected 'standalone' or 'cluster'")
    return value  # type: ignore[return-value]


def cluster_mode() -> bool:
    return session_mode() == "cluster"


def redis_client(url: str, *, socket_timeout: float = 30.0, socket_connect_timeout: float = 5.0) -> AsyncClient:
    """An asyncio redis-py client for the session's Redis at ``url`` (the ``redis_url`` fixture), built the way
    the processes build theirs (:func:`common.redis_clients.redis_py`): a ``RedisCluster`` in cluster mode, so
    single-key commands and scripts are routed by slot.

    Only for the session's Redis: a test's private server (``embedded_redis``) is always standalone."""
    return redis_clients.redis_py(
        url, session_mode(), socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout
    )


def pipeline(url: str, *, client_name: str = "perseus-test") -> resp.Pipeline:
    """The raw RESP pipeline the core's adapters take (``EventPublisher``, ...) for the session's Redis at
    ``url``: an ``AutoPipeline``, or a ``ClusterPipeline`` in cluster mode."""
    return redis_clients.pipeline(url, session_mode(), client_name=client_name)


def sync_redis_client(url: str, **kwargs: Any) -> SyncClient:
    """:func:`redis_client`, blocking."""
    if cluster_mode():
        return RedisCluster.from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)


async def on_owner(client: AsyncClient, key: str, *command: Any) -> Any:
    """``command`` on the node that owns ``key``'s slot, which alone knows about it (``PUBSUB SHARDNUMSUB``
    counts a shard channel's subscribers on that node only)."""
    if isinstance(client, AsyncRedisCluster):
        await client.initialize()  # the slot table; a no-op once read
        return await client.execute_command(*command, target_nodes=client.get_node_from_key(key))
    return await client.execute_command(*command)


async def kill_connections_named(client: AsyncClient, name: str, *, kind: str = "pubsub") -> int:
    """``CLIENT KILL`` every ``kind`` connection called ``name``, on every node (a cluster client holds
    one per shard); the number killed."""
    nodes: list[Any] = [None]
    if isinstance(client, AsyncRedisCluster):
        await client.initialize()
        nodes = client.get_nodes()
    killed = 0
    for node in nodes:
        target = {} if node is None else {"target_nodes": node}
        for connection in await client.client_list(_type=kind, **target):
            if connection["name"] == name:
                killed += await client.client_kill_filter(_id=connection["id"], **target)
    return killed
