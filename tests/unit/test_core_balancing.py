"""A gateway given several cores spreads its calls over the SERVING ones, on real in-process grpc.aio servers.

Each server answers ``GetStatus`` with its own name and serves ``grpc.health.v1`` as the core does
(``core.rpc.server.CoreServer.set_serving``), so the test sees where every call went: to both cores while both
serve, to one only when the other turns NOT_SERVING (a core that begins to stop) or is gone, and, with no core
left, a 503 at once rather than a wait.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateways.common.core_client import HEALTH_SERVICE, CoreClient
from gateways.common.errors import ServiceUnavailable
from perseus.marketdata.v1 import market_data_service_pb2 as md_pb2

DEADLINE_S = 5.0
CALLS = 20
SETTLE_S = 5.0  # the longest the channel may take to see a health change


@dataclass
class Core:
    name: str
    server: aio.Server
    health: health.aio.HealthServicer
    addr: str = ""
    calls: Counter[str] = field(default_factory=Counter)

    async def serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", HEALTH_SERVICE):
            await self.health.set(name, status)


async def start_core(name: str, calls: Counter[str]) -> Core:
    async def get_status(request: md_pb2.GetStatusRequest, context: Any) -> md_pb2.GetStatusResponse:
        calls[name] += 1
        return md_pb2.GetStatusResponse(version=name)

    handler = grpc.unary_unary_rpc_method_handler(
        get_status,
        request_deserializer=md_pb2.GetStatusRequest.FromString,
        response_serializer=md_pb2.GetStatusResponse.SerializeToString,
    )
    server = aio.server()
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(HEALTH_SERVICE, {"GetStatus": handler}),))
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    core = Core(name, server, servicer, f"127.0.0.1:{port}")
    await core.serving(True)
    return core


@pytest.fixture
async def cores() -> AsyncIterator[tuple[Core, Core, Counter[str]]]:
    calls: Counter[str] = Counter()
    a, b = await start_core("a", calls), await start_core("b", calls)
    yield a, b, calls
    for core in (a, b):
        await core.server.stop(None)


async def answers(client: CoreClient, count: int = CALLS) -> Counter[str]:
    return Counter([(await client.get_status()).version for _ in range(count)])


async def settle(client: CoreClient, only: str) -> Counter[str]:
    """Calls until every one goes to ``only`` (the channel has seen the change), then ``CALLS`` more."""
    deadline = time.monotonic() + SETTLE_S
    while set(await answers(client, 4)) != {only}:
        assert time.monotonic() < deadline, f"calls still go elsewhere than {only} after {SETTLE_S} s"
        await asyncio.sleep(0.05)
    return await answers(client)


async def test_calls_are_spread_over_every_serving_core(cores: tuple[Core, Core, Counter[str]]) -> None:
    a, b, _ = cores
    client = CoreClient.connect(f"{a.addr},{b.addr}", deadline_s=DEADLINE_S)
    try:
        await client.get_status()  # connects
        await asyncio.sleep(0.2)  # both subchannels ready
        spread = await answers(client)
    finally:
        await client.close()
    assert spread == Counter({"a": CALLS // 2, "b": CALLS // 2})


async def test_a_core_not_serving_gets_no_call_until_it_serves_again(cores: tuple[Core, Core, Counter[str]]) -> None:
    a, b, _ = cores
    client = CoreClient.connect(f"{a.addr},{b.addr}", deadline_s=DEADLINE_S)
    try:
        await client.get_status()
        await a.serving(False)  # a core that begins to stop
        assert await settle(client, "b") == Counter({"b": CALLS})
        await a.serving(True)
        deadline = time.monotonic() + SETTLE_S
        while "a" not in await answers(client, 4):
            assert time.monotonic() < deadline, "a core serving again gets no call"
    finally:
        await client.close()


async def test_a_stopped_core_gets_no_call_and_every_call_is_answered(cores: tuple[Core, Core, Counter[str]]) -> None:
    a, b, _ = cores
    client = CoreClient.connect(f"{a.addr},{b.addr}", deadline_s=DEADLINE_S)
    try:
        await client.get_status()
        await asyncio.sleep(0.2)
        await b.server.stop(None)
        assert await answers(client) == Counter({"a": CALLS})  # none failed: no 503 while a core is left
    finally:
        await client.close()


async def test_with_every_core_gone_a_call_fails_with_503_at_once(cores: tuple[Core, Core, Counter[str]]) -> None:
    a, b, _ = cores
    client = CoreClient.connect(f"{a.addr},{b.addr}", deadline_s=DEADLINE_S)
    try:
        await client.get_status()
        for core in (a, b):
            await core.server.stop(None)
        await asyncio.sleep(0.2)
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable):
            await client.get_status()
        assert time.monotonic() - started < DEADLINE_S  # failed, not waited out (the deadline is the bound)
    finally:
        await client.close()
