"""Shared fixtures: real PostgreSQL and Redis, isolated per test session.

Each pytest process (each xdist worker too) gets its own PostgreSQL database,
created here and dropped at the end, and its own Redis key prefix, whose keys
are deleted at the end. The servers come from ``PERSEUS_TEST_DATABASE_URL``
and ``PERSEUS_TEST_REDIS_URL`` (``.ci/run`` exports them when it has to start
servers itself); by default the machine's own servers on 127.0.0.1.

``PERSEUS_TEST_REDIS=cluster`` swaps the Redis server for a local Redis Cluster that each pytest
process starts for itself (``tests/support/redis_target.py``); tests marked ``standalone_redis``
are skipped then.
"""

from __future__ import annotations

import os

# The tests fork processes (perseus commands, embedded servers) from a process that holds gRPC
# channels; gRPC's fork handlers then break the parent's channels or abort the child before exec.
# Nothing here relies on gRPC surviving a fork, so turn them off before gRPC is imported.
os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"
import secrets
from collections.abc import AsyncIterator, Iterator

import pytest
import redis.asyncio as aioredis

from perseus_cli.devstack.redis_cluster import LocalRedisCluster
from tests.support.databases import scratch_database
from tests.support.redis_target import STANDALONE_REASON, cluster_mode, session_mode

DEFAULT_TEST_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_TEST_REDIS_URL = "redis://127.0.0.1:6379/0"


def pytest_report_header() -> str:
    return f"redis: {session_mode()} (PERSEUS_TEST_REDIS)"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if not cluster_mode():
        return
    for item in items:
        marker = item.get_closest_marker("standalone_redis")
        if marker is not None:
            why = marker.args[0] if marker.args else STANDALONE_REASON
            item.add_marker(pytest.mark.skip(reason=f"standalone Redis only: {why}"))


@pytest.fixture(scope="session")
def test_run_id() -> str:
    return secrets.token_hex(4)


@pytest.fixture(scope="session")
def admin_database_url() -> str:
    return os.environ.get("PERSEUS_TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)


@pytest.fixture(scope="session")
async def database_url(admin_database_url: str, test_run_id: str) -> AsyncIterator[str]:
    """URL of an empty database that belongs to this test process alone."""
    async with scratch_database(admin_database_url, f"perseus_test_{test_run_id}") as url:
        yield url


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    """The session's Redis: ``PERSEUS_TEST_REDIS_URL``, or in cluster mode a node of this process's cluster."""
    if cluster_mode():
        cluster: LocalRedisCluster = request.getfixturevalue("session_redis_cluster")
        return cluster.url
    return os.environ.get("PERSEUS_TEST_REDIS_URL", DEFAULT_TEST_REDIS_URL)


@pytest.fixture(scope="session")
def session_redis_cluster() -> Iterator[LocalRedisCluster]:
    """Cluster mode's Redis: 3 masters and 3 replicas of this pytest process alone, thrown away at the end.

    Distinct from the integration tests' ``redis_cluster`` fixture, whose failover test kills a node."""
    with LocalRedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
async def redis_prefix(redis_url: str, test_run_id: str) -> AsyncIterator[str]:
    """A key prefix that belongs to this test process alone; its keys go at the end (with the
    whole cluster, in cluster mode)."""
    prefix = f"perseus-test:{test_run_id}:"
    yield prefix
    if cluster_mode():
        return
    client = aioredis.Redis.from_url(redis_url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*", count=1000):
            await client.unlink(key)
    finally:
        await client.aclose()


@pytest.fixture(scope="session")
def base_env(database_url: str, redis_url: str, redis_prefix: str) -> Iterator[dict[str, str]]:
    """``PERSEUS_*`` variables pointing a process at this session's isolated stores."""
    yield {
        "PERSEUS_DATABASE_URL": database_url,
        "PERSEUS_REDIS_URL": redis_url,
        "PERSEUS_REDIS_PREFIX": redis_prefix,
        "PERSEUS_CORE_METRICS_ADDR": "",
        "PERSEUS_LOG_FORMAT": "text",
    }
