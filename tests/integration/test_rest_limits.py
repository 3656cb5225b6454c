"""Rate limits through real gateways and one real Redis: shared, atomic, tiered; and Redis down for the limiter."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest

from perseus_cli.devstack.valkey import EmbeddedRedis
from tests.support.market_seed import Seed
from tests.support.processes import free_port, running_gateway
from tests.support.rest_stack import RestStack, make_key, seeded_rest_stack

pytestmark = pytest.mark.integration

SEED = Seed(exchange="limitx", exchange_id=710_001, symbol_id=710_002, symbol="LIM-USD")
HEAVY = f"/public/v1/candles/{SEED.exchange}/{SEED.symbol}?limit=1000"  # costs 10 units
FREE_LIMIT = 1000


@pytest.fixture(scope="module")
def stack(base_env: dict[str, str], admin_database_url: str) -> Iterator[RestStack]:
    with seeded_rest_stack(base_env, admin_database_url, SEED) as stack:
        yield stack


async def burst(addrs: list[str], key: str, count: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=20, limits=httpx.Limits(max_connections=40)) as client:
        return await asyncio.gather(
            *(client.get(f"http://{addrs[i % len(addrs)]}{HEAVY}", headers={"X-API-Key": key}) for i in range(count))
        )


def wait_for_next_window() -> None:
    """Start a burst early in a minute, so it cannot straddle two windows."""
    if time.time() % 60 > 45:
        time.sleep(60 - time.time() % 60 + 0.5)


def test_two_gateways_share_one_limit_exactly(stack: RestStack) -> None:
    key = make_key(stack.env, "free")
    with running_gateway("rest", stack.env, stack.core.addr) as second:
        wait_for_next_window()
        responses = asyncio.run(burst([stack.rest.addr, second.addr], key, 130))
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == FREE_LIMIT // 10 and statuses.count(429) == 30, statuses
    by_gateway = {
        addr: [r.status_code for r in responses if r.url.netloc.decode() == addr]
        for addr in (stack.rest.addr, second.addr)
    }
    assert all(codes.count(200) < FREE_LIMIT // 10 for codes in by_gateway.values())  # each alone would allow 100
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining"] == "0" and refused.headers["x-ratelimit-limit"] == "1000"
    assert int(refused.headers["x-ratelimit-reset"]) % 60 == 0


def test_cost_grows_with_limit_and_tiers_differ(stack: RestStack) -> None:
    key = make_key(stack.env, "pro")
    path = f"/public/v1/candles/{SEED.exchange}/{SEED.symbol}"
    wait_for_next_window()
    small = stack.get(path, headers={"X-API-Key": key}, params={"limit": 100})
    big = stack.get(path, headers={"X-API-Key": key}, params={"limit": 1000})
    assert small.headers["x-ratelimit-limit"] == "10000"
    spent = int(small.headers["x-ratelimit-remaining"]) - int(big.headers["x-ratelimit-remaining"])
    assert spent == 10 and int(small.headers["x-ratelimit-remaining"]) == 9999
    for _ in range(3):
        unlimited = stack.get(HEAVY, tier="admin")
        assert unlimited.status_code == 200 and unlimited.headers["x-ratelimit-limit"] == "0"


@pytest.fixture
def private_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 5
        while subprocess.run(["redis-cli", "-p", str(port), "ping"], capture_output=True).stdout.strip() != b"PONG":
            assert time.monotonic() < deadline, "private redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        proc.terminate()
        proc.wait(5)


@pytest.mark.standalone_redis("stops a private Redis server under the gateway")
def test_with_redis_down_the_limit_is_kept_per_instance(stack: RestStack, private_redis) -> None:  # type: ignore[no-untyped-def]
    url, redis_proc = private_redis
    key = make_key(stack.env, "free")
    with running_gateway("rest", {**stack.env, "PERSEUS_REDIS_URL": url}, stack.core.addr) as gateway:
        redis_proc.terminate()
        redis_proc.wait(5)
        wait_for_next_window()
        responses = asyncio.run(burst([gateway.addr], key, 110))
        metrics = httpx.get(f"http://{gateway.addr}/metrics").text
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 100 and statuses.count(429) == 10, statuses
    assert "perseus_rest_ratelimit_local_fallbacks_total 110.0" in metrics


@pytest.mark.standalone_redis("stops and restarts a private Redis server under the gateway")
def test_once_redis_is_back_the_limit_is_shared_through_it_again(
    stack: RestStack, embedded_redis: EmbeddedRedis
) -> None:
    key = make_key(stack.env, "free")
    headers = {"X-API-Key": key}
    with running_gateway("rest", {**stack.env, "PERSEUS_REDIS_URL": embedded_redis.url}, stack.core.addr) as gateway:
        wait_for_next_window()
        shared = httpx.get(f"http://{gateway.addr}{HEAVY}", headers=headers, timeout=10)
        embedded_redis.stop()
        local = httpx.get(f"http://{gateway.addr}{HEAVY}", headers=headers, timeout=10)
        embedded_redis.start()  # with its data: the counter of this window is still there
        again = httpx.get(f"http://{gateway.addr}{HEAVY}", headers=headers, timeout=10)
        metrics = httpx.get(f"http://{gateway.addr}/metrics").text
    assert shared.status_code == local.status_code == again.status_code == 200
    remaining = [int(r.headers["x-ratelimit-remaining"]) for r in (shared, local, again)]
    assert remaining == [FREE_LIMIT - 10, FREE_LIMIT - 10, FREE_LIMIT - 20]  # local counts alone; Redis goes on
    assert "perseus_rest_ratelimit_local_fallbacks_total 1.0" in metrics


@pytest.mark.standalone_redis("SCRIPT FLUSH on a private Redis server through redis-cli")
def test_the_limit_survives_redis_forgetting_its_scripts(stack: RestStack, private_redis) -> None:  # type: ignore[no-untyped-def]
    url, _ = private_redis
    port = url.rsplit(":", 1)[1].split("/")[0]
    key = make_key(stack.env, "free")
    with running_gateway("rest", {**stack.env, "PERSEUS_REDIS_URL": url}, stack.core.addr) as gateway:
        wait_for_next_window()
        first = httpx.get(f"http://{gateway.addr}{HEAVY}", headers={"X-API-Key": key}, timeout=10)
        subprocess.run(["redis-cli", "-p", port, "script", "flush"], check=True, capture_output=True)
        second = httpx.get(f"http://{gateway.addr}{HEAVY}", headers={"X-API-Key": key}, timeout=10)
        metrics = httpx.get(f"http://{gateway.addr}/metrics").text
    assert first.status_code == second.status_code == 200
    assert int(first.headers["x-ratelimit-remaining"]) - int(second.headers["x-ratelimit-remaining"]) == 10
    assert "perseus_rest_ratelimit_local_fallbacks_total 0.0" in metrics
