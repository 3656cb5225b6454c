"""``GET /public/v1/prices/latest``, ``/prices/range`` and ``/aggregates/consensus``.

These read by symbol across sources, not by exchange: a symbol nobody
quotes has no latest price (absent from ``data``) and no buckets (an empty
list), which is an answer, not a 404.
"""

from __future__ import annotations

import time

from sanic import Blueprint, HTTPResponse

from gateways.common.projection import descriptor_of
from gateways.rest import ratelimit
from gateways.rest.context import RestRequest
from gateways.rest.guard import admit
from gateways.rest.operations import Operation
from gateways.rest.params import Param
from gateways.rest.reads import body_of, call, raw_json, set_time
from perseus.marketdata.v1 import market_data_service_pb2 as md, prices_pb2

MAX_BUCKETS = 10_000
DEFAULT_BUCKETS = 1_000
SYMBOLS = Param("symbols", "symbols", "Comma-separated pairs (at most 100)", required=True, example="BTC-USD,ETH-USD")

blueprint = Blueprint("prices", url_prefix="/public/v1")

LATEST = Operation(
    name="latest_prices",
    path="/public/v1/prices/latest",
    summary="Latest prices",
    description=(
        "The latest price of each symbol (the freshest source's latest tick) with its age in `staleness_ms`."
        " Symbols with no price are absent."
    ),
    tag="prices",
    params=(SYMBOLS,),
    data=descriptor_of(prices_pb2.LatestPrice),
    cost="ceil(symbols / 10)",
)
RANGE = Operation(
    name="price_range",
    path="/public/v1/prices/range",
    summary="Price range",
    description=(
        "OHLCV buckets of ticks in `from <= ts < to` (at most 90 days), oldest first, with the number of feeds"
        " in each; the first `limit` non-empty buckets."
    ),
    tag="prices",
    params=(
        Param("symbol", "symbol", "Pair", required=True, example="BTC-USD"),
        Param("from", "time", "Start, inclusive", required=True, example="2026-12-01T00:00:00Z"),
        Param("to", "time", "End, exclusive (default: now)"),
        Param("interval", "timeframe", "Bucket width", default="1h"),
        Param("source", "source", "Only ticks of this source"),
        Param("limit", "integer", "How many buckets", default=DEFAULT_BUCKETS, maximum=MAX_BUCKETS),
    ),
    data=descriptor_of(prices_pb2.PriceBucket),
    cost="ceil(limit / 1000) + 1",
)
CONSENSUS = Operation(
    name="consensus",
    path="/public/v1/aggregates/consensus",
    summary="Cross-source consensus",
    description=(
        "Per symbol, each source's latest price in the 5 minutes up to `timestamp` (default: now):"
        " median, mean, population std_dev, num_sources and sources."
    ),
    tag="prices",
    params=(SYMBOLS, Param("timestamp", "time", "End of the window (default: now)")),
    data=descriptor_of(prices_pb2.ConsensusPrice),
    cost="2 * ceil(symbols / 10)",
)


@LATEST.register(blueprint)
async def latest_prices(request: RestRequest) -> HTTPResponse:
    values = await admit(request, LATEST, lambda v: ratelimit.symbols_cost(len(v["symbols"])))
    reply = await call(request, "GetLatestPrices", md.GetLatestPricesRequest(symbols=values["symbols"]))
    return raw_json(body_of(reply.prices, LATEST))


@RANGE.register(blueprint)
async def price_range(request: RestRequest) -> HTTPResponse:
    values = await admit(request, RANGE, lambda v: ratelimit.range_cost(v["limit"]))
    message = md.GetPriceRangeRequest(
        symbol=values["symbol"], interval=values["interval"], source=values["source"] or "", limit=values["limit"]
    )
    set_time(message, "start_time", values["from"])
    set_time(message, "end_time", values["to"] if values["to"] is not None else int(time.time() * 1000))
    reply = await call(request, "GetPriceRange", message)
    return raw_json(body_of(reply.buckets, RANGE))


@CONSENSUS.register(blueprint)
async def consensus(request: RestRequest) -> HTTPResponse:
    values = await admit(request, CONSENSUS, lambda v: ratelimit.consensus_cost(len(v["symbols"])))
    message = md.GetConsensusRequest(symbols=values["symbols"])
    set_time(message, "time", values["timestamp"])
    reply = await call(request, "GetConsensus", message)
    return raw_json(body_of(reply.prices, CONSENSUS))
