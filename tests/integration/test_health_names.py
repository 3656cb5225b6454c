"""``/health`` names the dependency that actually failed: a frozen PostgreSQL, a frozen or dead Redis.

Real processes: a PostgreSQL cluster and a Redis of the module's own (stopped with SIGSTOP, or killed),
a core on them and a REST gateway in front. While a store does not answer, the core still answers
``GetStatus`` within the gateway's deadline, so ``/health`` says that store is down and the core up
(it used to blame the core when PostgreSQL stalled: the core's probe waited on the stalled server).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import grpc
import httpx
import pytest

from gateways.common.health import HEALTH_CACHE_TTL_S
from perseus.marketdata.v1 import market_data_service_pb2 as md_pb2, market_data_service_pb2_grpc as md_grpc
from perseus_cli.devstack.postgres import EmbeddedPostgres
from perseus_cli.devstack.valkey import EmbeddedRedis
from tests.support.processes import Process, free_port, frozen, run_cli, running_core, running_gateway

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("health-names")]

ALL_UP = {"core": "up", "redis": "up", "postgres": "up"}
CORE_TASKS = {"core:stream-hub", "core:hot-candles", "core:price-updates", "core:writer:sim"}


@pytest.fixture(scope="module")
def metrics() -> str:
    return f"127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def stack(
    private_postgres: EmbeddedPostgres, embedded_redis: EmbeddedRedis, redis_prefix: str, metrics: str
) -> Iterator[tuple[Process, Process]]:
    env = {
        "PERSEUS_DATABASE_URL": private_postgres.url,
        "PERSEUS_REDIS_URL": embedded_redis.url,
        "PERSEUS_REDIS_PREFIX": f"{redis_prefix}health:",
        "PERSEUS_CORE_METRICS_ADDR": "",
        "PERSEUS_LOG_FORMAT": "text",
    }
    assert run_cli(["migrate"], env).returncode == 0
    core_env = {**env, "PERSEUS_EXCHANGES": "sim", "PERSEUS_SIM_TRADES_PER_S": "0"}
    core_env["PERSEUS_CORE_METRICS_ADDR"] = metrics
    with running_core(core_env) as core, running_gateway("rest", env, core.addr) as rest:
        yield core, rest


def health(rest: Process) -> tuple[int, dict[str, object]]:
    response = httpx.get(f"http://{rest.addr}/health", timeout=5.0)
    return response.status_code, response.json()


def eventually_healthy(rest: Process, timeout: float = 20.0) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while True:
        code, body = health(rest)
        if code == 200 or time.monotonic() > deadline:
            assert (code, body["services"]) == (200, ALL_UP), body
            return body
        time.sleep(0.2)


def test_health_names_every_core_task_up(stack: tuple[Process, Process], metrics: str) -> None:
    core, rest = stack
    body = eventually_healthy(rest)
    components = body["components"]
    assert isinstance(components, dict)
    assert CORE_TASKS <= set(components) and set(components.values()) == {"up"}
    with grpc.insecure_channel(core.addr) as channel:
        reply = md_grpc.MarketDataServiceStub(channel).GetStatus(md_pb2.GetStatusRequest(), timeout=2)
    assert {(c.name, c.state, c.restarts) for c in reply.components} >= {
        ("writer:sim", md_pb2.COMPONENT_STATE_UP, 0),
        ("stream-hub", md_pb2.COMPONENT_STATE_UP, 0),
    }
    metrics = httpx.get(f"http://{metrics}/metrics", timeout=2).text.splitlines()
    assert 'perseus_task_restarts_total{task="writer:sim"} 0.0' in metrics
    assert "perseus_degraded_tasks 0.0" in metrics


def test_a_frozen_postgres_is_named_and_the_core_stays_up(
    stack: tuple[Process, Process], private_postgres: EmbeddedPostgres
) -> None:
    _, rest = stack
    eventually_healthy(rest)
    with frozen(private_postgres.pid):
        time.sleep(HEALTH_CACHE_TTL_S)  # past the healthy answer still cached
        answers = [health(rest) for _ in range(3)]  # the later ones while the first probe still hangs
    for code, body in answers:
        assert (code, body["status"]) == (503, "degraded")
        assert body["services"] == {"core": "up", "redis": "up", "postgres": "down"}
    eventually_healthy(rest)


def test_a_frozen_redis_is_named_and_the_core_stays_up(
    stack: tuple[Process, Process], embedded_redis: EmbeddedRedis
) -> None:
    _, rest = stack
    eventually_healthy(rest)
    with frozen(embedded_redis.pid):
        time.sleep(HEALTH_CACHE_TTL_S)  # past the healthy answer still cached
        answers = [health(rest) for _ in range(2)]
    for code, body in answers:
        assert (code, body["services"]) == (503, {"core": "up", "redis": "down", "postgres": "up"})
    eventually_healthy(rest)


def test_a_dead_redis_is_named_and_the_core_stays_up(
    stack: tuple[Process, Process], embedded_redis: EmbeddedRedis
) -> None:
    _, rest = stack
    eventually_healthy(rest)
    assert embedded_redis.pid is not None
    os.kill(embedded_redis.pid, signal.SIGKILL)
    try:
        time.sleep(HEALTH_CACHE_TTL_S + 0.5)  # past the healthy answer still cached
        code, body = health(rest)
        assert (code, body["services"]) == (503, {"core": "up", "redis": "down", "postgres": "up"})
    finally:
        embedded_redis.restart()
    eventually_healthy(rest, timeout=30.0)
