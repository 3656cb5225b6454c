"""The Redis clients every process builds from ``PERSEUS_REDIS_URL``, one kind per mode.

The mode is asked of the server (:func:`open_mode`, see :mod:`common.redis_mode`), never configured; then

- :func:`redis_py` gives redis-py's asyncio client for single commands and single ``Script`` calls:
  ``redis.asyncio.Redis`` on one server, ``redis.asyncio.RedisCluster`` on a cluster (which routes each
  command by its key's slot and follows ``MOVED``/``ASK`` itself);
- :func:`pipeline` gives the raw RESP :class:`~common.resp.Pipeline` for the hot paths that send many small
  calls or pipelines of script calls (redis-py's cluster pipeline refuses ``EVALSHA``):
  :class:`~common.resp.AutoPipeline` on one server, unchanged, and
  :class:`~common.resp_cluster.ClusterPipeline` on a cluster.

Callers keep their own timeouts and pool sizes: this module only picks the class and applies them the same
way in both modes.
"""

from __future__ import annotations

import asyncio
from typing import Any, TypeAlias
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection, parse_url
from redis.exceptions import ConnectionError as RedisConnectionError, TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from common import resp
from common.redis_mode import DETECT_TIMEOUT_S, RedisMode, detect
from common.resp_cluster import ClusterPipeline

__all__ = ["RedisClient", "WaitingRedisCluster", "open_mode", "pipeline", "redis_py", "url_params"]

RedisClient: TypeAlias = aioredis.Redis | aioredis.RedisCluster


async def open_mode(url: str, *, timeout_s: float = DETECT_TIMEOUT_S) -> RedisMode:
    """:func:`~common.redis_mode.detect`, answered within ``timeout_s`` or ``ConnectionError``.

    redis-py's own connection errors are not ``ConnectionError`` (they derive from ``RedisError``); they are
    turned into one here, naming the address (never the password), so callers retry on one kind of error.
    """
    where = _where(url)
    try:
        async with asyncio.timeout(timeout_s):
            return await detect(url, timeout_s=timeout_s)
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise ConnectionError(f"Redis at {where} did not answer INFO cluster: {exc}") from exc
    except TimeoutError as exc:
        raise ConnectionError(f"Redis at {where} did not answer INFO cluster within {timeout_s:g} s") from exc


def redis_py(
    url: str,
    mode: RedisMode,
    *,
    socket_timeout: float,
    socket_connect_timeout: float,
    health_check_interval: int = 30,
    max_connections: int | None = None,
    blocking: bool = False,
    connection_class: type | None = None,
) -> RedisClient:
    """redis-py's asyncio client for ``url`` in ``mode``.

    ``max_connections`` bounds the pool (per node on a cluster). With ``blocking`` a caller past it waits (up
    to ``socket_timeout``) for a free connection instead of failing: a ``BlockingConnectionPool`` on one
    server, a :class:`WaitingRedisCluster` on a cluster (redis-py's cluster pool has no waiting mode).
    ``connection_class`` replaces redis-py's plain TCP ``Connection`` (the core's hiredis-packing one); TLS and
    unix-socket connections keep redis-py's own class.
    """
    if mode == "cluster":
        kwargs: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": socket_connect_timeout,
            "health_check_interval": health_check_interval,
        }
        if max_connections is not None:
            kwargs["max_connections"] = max_connections
        cluster_class = WaitingRedisCluster if blocking and max_connections is not None else aioredis.RedisCluster
        cluster = cluster_class.from_url(url, **kwargs)
        if isinstance(cluster, WaitingRedisCluster):
            cluster.wait_for_connections(max_connections or 1, socket_timeout)
        if connection_class is not None and cluster.connection_kwargs.get("connection_class") is aioredis.Connection:
            # RedisCluster takes no connection_class argument: its nodes are built from these kwargs (the
            # startup nodes already were, so they are told too).
            cluster.connection_kwargs["connection_class"] = connection_class
            for node in cluster.startup_nodes:
                node.connection_class = connection_class
        return cluster
    common = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "health_check_interval": health_check_interval,
    }
    pool: aioredis.ConnectionPool
    if blocking and max_connections is not None:
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=max_connections, timeout=socket_timeout, **common
        )
    else:
        pool = aioredis.ConnectionPool.from_url(url, max_connections=max_connections, **common)
    if connection_class is not None and pool.connection_class is aioredis.Connection:
        pool.connection_class = connection_class
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections


class WaitingRedisCluster(aioredis.RedisCluster):
    """``RedisCluster`` whose commands wait for one of ``max_connections`` places instead of failing.

    redis-py's cluster client raises ``MaxConnectionsError`` at once when a node's pool is exhausted; the WS
    gateway's connection counter runs a script per WebSocket connect, and a burst of thousands must queue,
    as it does on one server's ``BlockingConnectionPool``. Commands in flight are bounded client-wide, so no
    node ever needs more than ``max_connections``; a caller that waits longer than ``wait_s`` gets redis-py's
    ``ConnectionError("No connection available.")``, as from the blocking pool.
    """

    _gate: asyncio.Semaphore
    _wait_s: float

    def wait_for_connections(self, max_connections: int, wait_s: float) -> None:
        self._gate = asyncio.Semaphore(max_connections)
        self._wait_s = wait_s

    async def execute_command(self, *args: EncodableT, **kwargs: Any) -> Any:
        if self._initialize:
            # redis-py decides a command's route before it reads the slot table on a cold client: the commands of
            # a first burst that got past the gate went to one node, were answered MOVED by the others, and each
            # MOVED re-read the table and closed node connections other commands were still setting up
            # (``AttributeError: 'NoneType' object has no attribute 'writelines'``). Read it once, before any
            # command is routed (``initialize`` holds redis-py's own lock, so concurrent callers share one read).
            await self.initialize()
        try:
            async with asyncio.timeout(self._wait_s):
                await self._gate.acquire()
        except TimeoutError:
            raise RedisConnectionError("No connection available.") from None
        try:
            return await super().execute_command(*args, **kwargs)
        finally:
            self._gate.release()


def url_params(url: str) -> tuple[dict[str, Any], bool]:
    """redis-py's connection parameters for ``url`` and whether it asks for TLS (``rediss://``)."""
    params = dict(parse_url(url))
    tls = params.pop("connection_class", None) is SSLConnection
    return params, tls


def pipeline(url: str, mode: RedisMode, *, client_name: str, stall_s: float = resp.STALL_S) -> resp.Pipeline:
    """The raw RESP pipeline for ``url``: one :class:`~common.resp.AutoPipeline`, or a
    :class:`~common.resp_cluster.ClusterPipeline` (an ``AutoPipeline`` per master) on a cluster."""
    params, tls = url_params(url)
    if mode == "cluster":
        return ClusterPipeline(params, tls=tls, client_name=client_name, stall_s=stall_s)
    return resp.AutoPipeline(params, tls=tls, client_name=client_name, stall_s=stall_s)


def _where(url: str) -> str:
    parts = urlsplit(url)
    return parts.path if parts.scheme == "unix" else f"{parts.hostname}:{parts.port or 6379}"
