"""A gateway call lost to a GOAWAY is sent once more, within its deadline, on a real in-process grpc.aio server.

The GOAWAY is a real one: the server keeps gRPC's default ping policy and the
client pings every second, so during a call that the server holds open the
third ping within 5 minutes earns GOAWAY ``too_many_pings``, which fails every
call on that connection. The server answers a call at once on any attempt but
the first.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from gateways.common.core_client import CoreClient, channel_options, connection_went_away
from gateways.common.errors import ServiceUnavailable
from perseus.marketdata.v1 import market_data_service_pb2 as md_pb2

SERVICE = "perseus.marketdata.v1.MarketDataService"
KEEPALIVE_S = 1.0  # with the default server policy: GOAWAY at the third ping of a call held open, about 3 s
DEADLINE_S = 10.0


class FirstCallHangs:
    """GetStatus that holds its first call open (until the connection goes) and answers every later one."""

    def __init__(self) -> None:
        self.calls = 0

    async def get_status(self, request: md_pb2.GetStatusRequest, context: Any) -> md_pb2.GetStatusResponse:
        self.calls += 1
        if self.calls == 1:
            await asyncio.sleep(3600)
        return md_pb2.GetStatusResponse(version=f"answer to call {self.calls}")


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, FirstCallHangs]]:
    servicer = FirstCallHangs()
    handler = grpc.unary_unary_rpc_method_handler(
        servicer.get_status,
        request_deserializer=md_pb2.GetStatusRequest.FromString,
        response_serializer=md_pb2.GetStatusResponse.SerializeToString,
    )
    grpc_server = aio.server()  # gRPC's default ping policy, as the core had
    grpc_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"GetStatus": handler}),))
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    yield f"127.0.0.1:{port}", servicer
    await grpc_server.stop(None)


async def test_a_call_lost_to_a_goaway_is_retried_once_and_answered(server: tuple[str, FirstCallHangs]) -> None:
    addr, servicer = server
    client = CoreClient.connect(addr, deadline_s=DEADLINE_S, keepalive_s=KEEPALIVE_S)
    try:
        reply = await client.get_status()
    finally:
        await client.close()
    assert reply.version == "answer to call 2"  # the caller sees the answer, not the lost connection
    assert servicer.calls == 2


async def test_without_the_retry_the_same_call_fails_on_the_goaway(server: tuple[str, FirstCallHangs]) -> None:
    addr, servicer = server
    async with aio.insecure_channel(addr, options=channel_options(KEEPALIVE_S)) as channel:
        call = channel.unary_unary(
            f"/{SERVICE}/GetStatus",
            request_serializer=md_pb2.GetStatusRequest.SerializeToString,
            response_deserializer=md_pb2.GetStatusResponse.FromString,
        )
        with pytest.raises(aio.AioRpcError) as caught:
            await call(md_pb2.GetStatusRequest(), timeout=DEADLINE_S)
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    assert connection_went_away(caught.value)
    assert servicer.calls == 1


async def test_a_core_that_is_not_there_fails_fast_without_a_retry() -> None:
    client = CoreClient.connect("127.0.0.1:1", deadline_s=DEADLINE_S)
    try:
        with pytest.raises(ServiceUnavailable) as caught:
            await client.get_status()
    finally:
        await client.close()
    cause = caught.value.__cause__
    assert isinstance(cause, grpc.RpcError)
    assert not connection_went_away(cause)  # "failed to connect": no connection went away
