"""Which Redis the test session runs against: the standalone server, or a local Redis Cluster.

``PERSEUS_TEST_REDIS=cluster`` makes every pytest process (each xdist worker) start one
:class:`~perseus_cli.devstack.redis_cluster.LocalRedisCluster` (3 masters, 3 replicas) and hands a node's URL
to everything that otherwise gets ``PERSEUS_TEST_REDIS_URL``: the ``redis_url`` fixture, hence ``base_env``'s
``PERSEUS_REDIS_URL`` for every core and gateway the tests start. The processes find out that it is a cluster
themselves (``common.redis_mode.detect``), as they would in production; only the clients the tests build
directly have to be told, which is what :func:`redis_client` and :func:`sync_redis_client` are for. Unset (or
``standalone``), nothing changes.

Tests that cannot run on a cluster by nature carry ``@pytest.mark.standalone_redis`` (see
:data:`STANDALONE_REASON`); they are skipped in cluster mode only.
"""

from __future__ import annotations

import os
from typing import Any, Literal, TypeAlias

import pytest
import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster

MODE_ENV = "PERSEUS_TEST_REDIS"
Mode = Literal["standalone", "cluster"]

AsyncClient: TypeAlias = aioredis.Redis | AsyncRedisCluster
SyncClient: TypeAlias = redis.Redis | RedisCluster

STANDALONE_REASON = (
    "needs one Redis server of its own or of the session's (stops or freezes it, SELECTs another database, "
    "or counts keys with one SCAN): a cluster has database 0 only and its keys spread over three masters"
)


def session_mode() -> Mode:
    """``PERSEUS_TEST_REDIS``: ``standalone`` (the default) or ``cluster``; anything else is a usage error."""
    value = os.environ.get(MODE_ENV, "") or "standalone"
    if value not in ("standalone", "cluster"):
        raise pytest.UsageError(f"{MODE_ENV}={value!r}: expected 'standalone' or 'cluster'")
    return value  # type: ignore[return-value]


def cluster_mode() -> bool:
    return session_mode() == "cluster"


def redis_client(url: str, **kwargs: Any) -> AsyncClient:
    """An asyncio redis-py client for the session's Redis at ``url`` (the ``redis_url`` fixture): a
    ``RedisCluster`` in cluster mode, so single-key commands and scripts are routed by slot.

    Only for the session's Redis: a test's private server (``embedded_redis``) is always standalone."""
    if cluster_mode():
        return AsyncRedisCluster.from_url(url, **kwargs)
    return aioredis.Redis.from_url(url, **kwargs)


def sync_redis_client(url: str, **kwargs: Any) -> SyncClient:
    """:func:`redis_client`, blocking."""
    if cluster_mode():
        return RedisCluster.from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)
