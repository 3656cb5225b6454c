"""The REST gateway's GetCandles call answers the reply's wire bytes, through the same call path as every stub
method: the service credential and request id go along, and a failure is the same ApiError (a real in-process
grpc.aio server)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest
from grpc import aio

from core.rpc.wire import repeated_field_bytes, to_wire
from gateways.common.core_client import CoreClient
from gateways.common.errors import NotFound
from perseus.marketdata.v1 import candles_pb2, market_data_service_pb2 as md_pb2

SERVICE = "perseus.marketdata.v1.MarketDataService"
CANDLES = [candles_pb2.Candle(exchange="sim", symbol="BTC-USD", close=str(i)) for i in range(3)]


class Candles:
    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def get_candles(self, request: md_pb2.GetCandlesRequest, context: Any) -> bytes:
        self.metadata.append({k: v for k, v in context.invocation_metadata()})
        if request.symbol == "NOPE":
            await context.abort(grpc.StatusCode.NOT_FOUND, "unknown symbol NOPE")
        return repeated_field_bytes(1, [c.SerializeToString() for c in CANDLES[: request.limit]])


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, Candles]]:
    servicer = Candles()
    handler = grpc.unary_unary_rpc_method_handler(
        servicer.get_candles, request_deserializer=md_pb2.GetCandlesRequest.FromString, response_serializer=to_wire
    )
    grpc_server = aio.server()
    grpc_server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, {"GetCandles": handler}),))
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    yield f"127.0.0.1:{port}", servicer
    await grpc_server.stop(None)


async def test_the_reply_comes_as_its_wire_bytes_with_the_usual_metadata(server: tuple[str, Candles]) -> None:
    addr, servicer = server
    client = CoreClient.connect(addr, deadline_s=5.0, token="s3cret", connections=2)
    try:
        request = md_pb2.GetCandlesRequest(exchange="sim", symbol="BTC-USD", limit=2)
        for _ in range(2):  # both connections
            reply = await client.unary(client.candles_wire, request, request_id="req-1")
            assert isinstance(reply, bytes)
            assert list(md_pb2.GetCandlesResponse.FromString(reply).candles) == CANDLES[:2]
        assert all(m["authorization"] == "Bearer s3cret" and m["x-request-id"] == "req-1" for m in servicer.metadata)
        empty = await client.unary(client.candles_wire, md_pb2.GetCandlesRequest(limit=0), request_id=None)
        assert empty == b""
        with pytest.raises(NotFound):
            await client.unary(client.candles_wire, md_pb2.GetCandlesRequest(symbol="NOPE"), request_id=None)
    finally:
        await client.close()
