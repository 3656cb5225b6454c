"""``GET /public/v1/exchanges`` and ``GET /public/v1/symbols``."""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse

from common.projection import descriptor_of
from gateways.rest.context import RestRequest
from gateways.rest.guard import admit
from gateways.rest.operations import Operation
from gateways.rest.params import Param
from gateways.rest.reads import body_of, call, raw_json
from perseus.marketdata.v1 import market_data_service_pb2 as md, market_pb2

blueprint = Blueprint("market", url_prefix="/public/v1")

EXCHANGES = Operation(
    name="list_exchanges",
    path="/public/v1/exchanges",
    summary="Exchanges",
    description="Every exchange Perseus knows, with its online/offline status (from the writer's heartbeat).",
    tag="market",
    params=(),
    data=descriptor_of(market_pb2.Exchange),
)
SYMBOLS = Operation(
    name="list_symbols",
    path="/public/v1/symbols",
    summary="Symbols",
    description="Trading pairs, of one exchange or of all. An unknown exchange is 404.",
    tag="market",
    params=(Param("exchange", "exchange", "Only this exchange's symbols", example="sim"),),
    data=descriptor_of(market_pb2.Symbol),
)


@EXCHANGES.register(blueprint)
async def list_exchanges(request: RestRequest) -> HTTPResponse:
    await admit(request, EXCHANGES)
    reply = await call(request, "ListExchanges", md.ListExchangesRequest())
    return raw_json(body_of(reply.exchanges, EXCHANGES))


@SYMBOLS.register(blueprint)
async def list_symbols(request: RestRequest) -> HTTPResponse:
    values = await admit(request, SYMBOLS)
    reply = await call(request, "ListSymbols", md.ListSymbolsRequest(exchange=values["exchange"] or ""))
    return raw_json(body_of(reply.symbols, SYMBOLS))
