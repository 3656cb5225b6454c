"""WS connection slots after a Redis outage: every open connection holds exactly one, none leaks.

A real ``perseus ws`` gateway counts its connections in a Redis of the module's own (the core keeps the
session's Redis: its streams are not what is tested here). Clients close while Redis is gone; Redis comes
back with its data, or restarted without it. Afterwards the sorted sets hold exactly the open
connections, and a free key's limit (5) is enforced: the sixth connection closes with 4008.
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from perseus_cli.devstack.valkey import EmbeddedRedis
from tests.integration.test_ws_stream import close_code
from tests.support.processes import Process, running_core, running_gateway
from tests.support.ws import make_key, open_stream, recv, send, subscribe

pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("embedded-redis-ws-slots")]

RECONCILED_WITHIN_S = 5.0


@pytest.fixture(scope="module")
def gateway(migrated_env: dict[str, str], embedded_redis: EmbeddedRedis) -> Iterator[Process]:
    with running_core(migrated_env) as core:
        env = {**migrated_env, "PERSEUS_REDIS_URL": embedded_redis.url, "PERSEUS_WS_LEASE_S": "30"}
        with running_gateway("ws", env, core.addr) as process:
            yield process


async def slots(url: str) -> dict[str, int]:
    """Members of every connection set, by key."""
    client = aioredis.Redis.from_url(url)
    try:
        return {key.decode(): await client.zcard(key) async for key in client.scan_iter(match="*ws:connections:*")}
    finally:
        await client.aclose()


async def until_slots(url: str, expected: list[int]) -> None:
    deadline = time.monotonic() + RECONCILED_WITHIN_S
    while sorted((await slots(url)).values()) != sorted(expected):
        assert time.monotonic() < deadline, f"slots {await slots(url)} never became {expected}"
        await asyncio.sleep(0.2)


async def connect(addr: str, key: str, count: int) -> list[Any]:
    opened = [await open_stream(addr, key).__aenter__() for _ in range(count)]
    for ws in opened:
        assert (await subscribe(ws, ["prices:BTC-USD"]))["type"] == "subscribed"
    return opened


async def close(clients: list[Any]) -> None:
    for ws in clients:
        await ws.close()


async def test_slots_are_reconciled_after_redis_outages(
    gateway: Process, embedded_redis: EmbeddedRedis, migrated_env: dict[str, str]
) -> None:
    internal, free = make_key(migrated_env, "internal"), make_key(migrated_env, "free")
    many = await connect(gateway.addr, internal, 20)
    few = await connect(gateway.addr, free, 4)
    try:
        await until_slots(embedded_redis.url, [20, 4])

        embedded_redis.stop()  # a short outage; Redis comes back with its data
        await close(many[:3])
        await asyncio.sleep(0.5)
        embedded_redis.start()
        await until_slots(embedded_redis.url, [17, 4])  # the releases that failed were retried

        embedded_redis.stop()  # a restart that loses everything
        await close(many[3:5] + few[:1])
        for data in embedded_redis.dir.glob("appendonly*"):
            shutil.rmtree(data) if data.is_dir() else data.unlink()
        (embedded_redis.dir / "dump.rdb").unlink(missing_ok=True)
        embedded_redis.start()
        assert await slots(embedded_redis.url) == {}
        # The free key holds 3 open connections: 2 more are admitted, the sixth is refused.
        few = few[1:] + await connect(gateway.addr, free, 2)
        async with open_stream(gateway.addr, free) as sixth:
            assert await close_code(sixth) == 4008
        await until_slots(embedded_redis.url, [15, 5])
        for ws in many[5:] + few:  # and every connection stayed open through both outages
            await send(ws, {"action": "subscribe", "channels": ["prices:ETH-USD"]})
            while (answer := await recv(ws))["type"] != "subscribed":  # events of prices:BTC-USD come first
                assert answer["type"] == "price_update", answer
    finally:
        await close(many + few)
    await until_slots(embedded_redis.url, [])  # every set is gone once the last connection closed
