"""The gateways' key cache: brief answers, one lookup for concurrent misses, revocation honoured."""

from __future__ import annotations

import asyncio

import pytest

from gateways.common.auth import CACHE_TTL_S, KeyCache
from gateways.common.errors import Unauthorized
from perseus.marketdata.v1 import key_service_pb2

PRO = key_service_pb2.ApiKey(id=1, tier=key_service_pb2.KEY_TIER_PRO)


class Core:
    """Stands in for the core's KeyService: counts lookups, answers when released."""

    def __init__(self) -> None:
        self.calls = 0
        self.known: dict[str, key_service_pb2.ApiKey] = {"pk_good": PRO}
        self.release = asyncio.Event()
        self.failure: Exception | None = None

    async def lookup(self, key: str) -> key_service_pb2.ApiKey | None:
        self.calls += 1
        await self.release.wait()
        if self.failure is not None:
            raise self.failure
        return self.known.get(key)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_concurrent_misses_share_one_lookup() -> None:
    core = Core()
    cache = KeyCache(core.lookup)
    waiting = [asyncio.create_task(cache.authenticate("pk_good")) for _ in range(500)]
    await asyncio.sleep(0)
    core.release.set()
    assert [k.id for k in await asyncio.gather(*waiting)] == [1] * 500
    assert core.calls == 1
    assert (await cache.authenticate("pk_good")).id == 1 and core.calls == 1  # and it is remembered


async def test_a_waiter_that_gives_up_does_not_cancel_the_others() -> None:
    core = Core()
    cache = KeyCache(core.lookup)
    first, second = (asyncio.create_task(cache.authenticate("pk_good")) for _ in range(2))
    await asyncio.sleep(0)
    first.cancel()
    core.release.set()
    assert (await second).id == 1
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_failed_lookup_reaches_every_waiter_and_is_not_remembered() -> None:
    core = Core()
    core.failure = ConnectionError("core down")
    cache = KeyCache(core.lookup)
    waiting = [asyncio.create_task(cache.authenticate("pk_good")) for _ in range(3)]
    await asyncio.sleep(0)
    core.release.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, ConnectionError) for r in results) and core.calls == 1
    core.failure = None
    assert (await cache.authenticate("pk_good")).id == 1 and core.calls == 2


async def test_a_revoked_key_stops_working_once_its_answer_expires() -> None:
    core, clock = Core(), Clock()
    core.release.set()
    cache = KeyCache(core.lookup, clock=clock)
    assert (await cache.authenticate("pk_good")).id == 1
    del core.known["pk_good"]  # revoked in the core
    clock.now += CACHE_TTL_S - 0.1
    assert (await cache.authenticate("pk_good")).id == 1  # still within the cache's few seconds
    clock.now += 0.2
    with pytest.raises(Unauthorized):
        await cache.authenticate("pk_good")
    assert core.calls == 2
