"""Fixtures shared by the integration modules: a migrated database, and the real core (and gateway) on it.

All are module-scoped, so each test module gets its own processes. A module that
needs a differently configured core defines its own ``core`` fixture (or starts one
in the test), which takes precedence over these.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

import grpc
import pytest
import redis.asyncio as aioredis

from common import resp
from perseus_cli.devstack.postgres import EmbeddedPostgres
from perseus_cli.devstack.redis_cluster import LocalRedisCluster
from perseus_cli.devstack.valkey import EmbeddedRedis
from tests.support import ws as ws_support
from tests.support.processes import Process, run_cli, running_core, running_gateway
from tests.support.redis_target import pipeline, redis_client


@pytest.fixture(scope="module")
def migrated_env(base_env: dict[str, str]) -> dict[str, str]:
    """``base_env``, with the session database migrated by ``perseus migrate``."""
    result = run_cli(["migrate"], base_env)
    assert result.returncode == 0, result.stderr
    ws_support.SYMBOLS_DATABASE_URL = base_env["PERSEUS_DATABASE_URL"]  # fresh_symbol() registers its symbols
    return base_env


@pytest.fixture(scope="module")
def core(migrated_env: dict[str, str]) -> Iterator[Process]:
    """A ``perseus core`` process with the default settings."""
    with running_core(migrated_env) as process:
        yield process


@pytest.fixture(scope="module")
def channel(core: Process) -> Iterator[grpc.Channel]:
    """A grpcio channel to ``core``."""
    with grpc.insecure_channel(core.addr) as channel:
        yield channel


@pytest.fixture(scope="module")
def rest(migrated_env: dict[str, str], core: Process) -> Iterator[Process]:
    """A ``perseus rest`` gateway in front of ``core``."""
    with running_gateway("rest", migrated_env, core.addr) as process:
        yield process


@pytest.fixture(scope="module")
def embedded_redis() -> Iterator[EmbeddedRedis]:
    """A Redis server of the module's own (``perseus up``'s embedded one) for tests that stop,
    freeze or restart it."""
    with _embedded(EmbeddedRedis, "perseus-test-redis-") as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalRedisCluster]:
    """A local 3-master / 3-replica Redis Cluster (2 s node timeout), shared by the session: a test that kills
    a node must leave the cluster with every slot covered again (a replica promoted) before it returns."""
    with LocalRedisCluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[EmbeddedPostgres]:
    """A PostgreSQL cluster of the module's own (``perseus up``'s embedded one) for tests that stall it."""
    with _embedded(EmbeddedPostgres, "perseus-test-postgres-") as server:
        yield server


class _Server(Protocol):
    def start(self) -> object: ...
    def stop(self) -> object: ...


_S = TypeVar("_S", bound=_Server)


@contextmanager
def _embedded(server_of: Callable[[Path], _S], prefix: str) -> Iterator[_S]:
    """An embedded server in a data directory of its own, started, then stopped and its directory removed."""
    data_dir = Path(tempfile.mkdtemp(prefix=prefix))
    server = server_of(data_dir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A redis-py client on the test's Redis (a server or a cluster, ``PERSEUS_TEST_REDIS``)."""
    client = redis_client(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def bus(redis_url: str) -> AsyncIterator[resp.Pipeline]:
    """The raw pipeline the core's publisher and stream history take."""
    bus = pipeline(redis_url)
    yield bus
    await bus.aclose()
