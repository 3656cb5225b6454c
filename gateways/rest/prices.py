"""``GET /public/v1/prices/latest``, ``/prices/range`` and ``/aggregates/consensus``.

These read by symbol across sources, not by exchange: a symbol nobody
quotes has no latest price (absent from ``data``) and no buckets (an empty
list), which is an answer, not a 404.
"""

from __future__ import annotations

import time
from contextlib import nullcontext

from sanic import Blueprint, HTTPResponse

from common.projection import descriptor_of
from gateways.common.errors import ValidationFailed
from gateways.common.settings import DEFAULT_RANGE_MAX_BUCKETS
from gateways.rest import ratelimit
from gateways.rest.candle_cache import TIMEFRAME_MS
from gateways.rest.context import RestRequest
from gateways.rest.guard import admit, authenticate, parameters, spend
from gateways.rest.operations import Operation
from gateways.rest.params import TIMEFRAME_NAMES, Param
from gateways.rest.reads import LATENCY_MS_SCHEMA, body_of, call, latency_ms, raw_json, set_time
from perseus.marketdata.v1 import key_service_pb2, market_data_service_pb2 as md, prices_pb2

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
    meta=(
        (
            "cached",
            {"type": "boolean", "description": "Every price came from the latest-price cache, none from PostgreSQL"},
        ),
        ("latency_ms", LATENCY_MS_SCHEMA),
    ),
)
RANGE = Operation(
    name="price_range",
    path="/public/v1/prices/range",
    summary="Price range",
    description=(
        "OHLCV buckets of ticks in `from <= ts < to` (at most 2 years), oldest first, with the number of feeds"
        " in each; the first `limit` non-empty buckets. The range may span at most"
        f" {DEFAULT_RANGE_MAX_BUCKETS} `interval`s by default (`PERSEUS_RANGE_MAX_BUCKETS`; 400 naming `from`"
        " beyond it: narrow the range or widen the interval), and one key may have a few range reads in flight"
        " at once on a gateway (`PERSEUS_HEAVY_READS_PER_KEY`, 429 beyond). `buckets` is the number of"
        " intervals the range spans (at most `limit`), `days` its length."
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
    meta=(
        ("interval", {"type": "string", "enum": list(TIMEFRAME_NAMES.values()), "description": "The buckets' width"}),
        ("count", {"type": "integer", "minimum": 0, "description": "How many buckets `data` holds"}),
        ("latency_ms", LATENCY_MS_SCHEMA),
    ),
    cost="1 + ceil(buckets / 1000) + ceil(days)",
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
    meta=(("latency_ms", LATENCY_MS_SCHEMA),),
    cost="2 * ceil(symbols / 10)",
)


@LATEST.register(blueprint)
async def latest_prices(request: RestRequest) -> HTTPResponse:
    values = await admit(request, LATEST, lambda v: ratelimit.symbols_cost(len(v["symbols"])))
    reply = await call(request, "GetLatestPrices", md.GetLatestPricesRequest(symbols=values["symbols"]))
    meta = {"cached": reply.cached, "latency_ms": latency_ms(request)}
    return raw_json(body_of(reply.prices, LATEST, meta))


@RANGE.register(blueprint)
async def price_range(request: RestRequest) -> HTTPResponse:
    """401, 400 (a range longer than the cap in intervals), 429 (its cost, then the key's reads in flight)."""
    api_key = await authenticate(request)
    values = parameters(request, RANGE)
    start, end = values["from"], values["to"] if values["to"] is not None else int(time.time() * 1000)
    interval = TIMEFRAME_NAMES[values["interval"]]
    interval_ms, max_buckets = TIMEFRAME_MS[interval], request.app.ctx.settings.range_max_buckets
    if end - start > interval_ms * max_buckets:
        raise ValidationFailed(
            f"`from`: the range spans more than {max_buckets} intervals of {interval}; narrow it or widen `interval`",
            details={"field": "from"},
        )
    await spend(request, api_key, ratelimit.range_cost(end - start, interval_ms, values["limit"]))
    message = md.GetPriceRangeRequest(
        symbol=values["symbol"], interval=values["interval"], source=values["source"] or "", limit=values["limit"]
    )
    set_time(message, "start_time", start)
    set_time(message, "end_time", end)
    services = request.app.ctx.services
    with nullcontext() if api_key.tier == key_service_pb2.KEY_TIER_ADMIN else services.heavy.hold(api_key.id):
        reply = await call(request, "GetPriceRange", message)
    meta = {"interval": interval, "count": len(reply.buckets), "latency_ms": latency_ms(request)}
    return raw_json(body_of(reply.buckets, RANGE, meta))


@CONSENSUS.register(blueprint)
async def consensus(request: RestRequest) -> HTTPResponse:
    values = await admit(request, CONSENSUS, lambda v: ratelimit.consensus_cost(len(v["symbols"])))
    message = md.GetConsensusRequest(symbols=values["symbols"])
    set_time(message, "time", values["timestamp"])
    reply = await call(request, "GetConsensus", message)
    return raw_json(body_of(reply.prices, CONSENSUS, {"latency_ms": latency_ms(request)}))
