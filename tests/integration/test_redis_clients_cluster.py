"""redis-py's cluster clients of :mod:`common.redis_clients` on a real local Redis Cluster, from cold.

The WS gateway's connection counter is a ``WaitingRedisCluster`` (``redis_py(..., blocking=True)``) whose first
commands may be a burst of thousands of connects: none of them may fail because the client had not yet read the
slot table.
"""

from __future__ import annotations

import asyncio
import secrets

import pytest

from common import redis_clients
from perseus_cli.devstack.redis_cluster import LocalRedisCluster

pytestmark = pytest.mark.integration

INCR = "return redis.call('INCR', KEYS[1])"


async def test_a_cold_waiting_cluster_client_answers_every_call_of_a_first_burst(
    redis_cluster: LocalRedisCluster,
) -> None:
    """200 script calls at once on a client that has sent nothing yet, keys on every master, 32 places: all
    answered (before the fix a tenth to a quarter failed with ``AttributeError`` on a half-built connection)."""
    url = redis_cluster.masters()[0].url
    client = redis_clients.redis_py(
        url, "cluster", socket_timeout=5, socket_connect_timeout=5, max_connections=32, blocking=True
    )
    assert isinstance(client, redis_clients.WaitingRedisCluster)
    script = client.register_script(INCR)
    prefix = f"perseus-test-cold-burst:{secrets.token_hex(4)}:"
    keys = [f"{prefix}{{k{i}}}" for i in range(200)]
    try:
        results = await asyncio.gather(*(script(keys=[key]) for key in keys), return_exceptions=True)
        failures = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
        assert failures == [], f"{len(failures)} of 200 failed, e.g. {failures[:3]}"
        assert results == [1] * 200
    finally:
        for key in keys:
            await client.delete(key)
        await client.aclose()
