"""Whether ``PERSEUS_REDIS_URL`` points at a Redis Cluster or a standalone server: asked, never configured.

Any node of a cluster answers ``INFO cluster`` with ``cluster_enabled:1``; a standalone server (or one too
old to have the section) answers ``cluster_enabled:0`` or nothing, and is treated as standalone. The
question is asked on database 0 whatever the URL says, because a cluster node refuses ``SELECT`` of any
other database and the answer must not depend on it. TLS and ACL credentials come from the URL as for
every other connection.

Errors (refused connection, timeout, bad credentials) are the caller's: at startup a node that is down is
retried with a log line, which is a policy this function should not pick.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import redis.asyncio as aioredis

__all__ = ["RedisMode", "detect", "mode_of_info"]

RedisMode = Literal["cluster", "standalone"]
DETECT_TIMEOUT_S = 3.0


def mode_of_info(info: dict[str, Any]) -> RedisMode:
    """The mode an ``INFO cluster`` reply (as redis-py parses it) says."""
    return "cluster" if str(info.get("cluster_enabled", "0")) == "1" else "standalone"


async def detect(url: str, *, timeout_s: float = DETECT_TIMEOUT_S) -> RedisMode:
    """``"cluster"`` when the server at ``url`` is a cluster node, ``"standalone"`` otherwise."""
    pool = aioredis.ConnectionPool.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    pool.connection_kwargs["db"] = 0
    client = aioredis.Redis(connection_pool=pool)
    try:
        info = await client.info("cluster")
    finally:  # shielded: a caller cancelled meanwhile must not leave the connection open
        await asyncio.shield(client.aclose(close_connection_pool=True))
    return mode_of_info(info)
