"""``GET /public/v1/candles/{exchange}/{symbol}``: OHLCV candles, oldest first, the hot read.

A body is served from :class:`~gateways.rest.candle_cache.CandleCache` while
the candle window it came from is unchanged; otherwise the core is asked and
the new body is kept. A limited key's probe travels with the limiter's call;
when that call fails (Redis down, or past its deadline because this gateway's
loop is saturated) the read bypasses the cache at once rather than waiting for
a second probe's deadline (issue 18.4: at c=256 those two deadlines in a row
were the tail).
"""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse

from common.projection import descriptor_of
from gateways.common.http import request_id_of
from gateways.rest import ratelimit
from gateways.rest.candle_cache import TIMEFRAME_MS, CandleCache, align_up, probe_of
from gateways.rest.context import RestRequest
from gateways.rest.guard import authenticate, limit_of, parameters, spend
from gateways.rest.limiter import NOT_READ
from gateways.rest.operations import Operation
from gateways.rest.params import MAX_TIME_MS, PAIR_IN_PATH, TIMEFRAME_NAMES, Param
from gateways.rest.ratelimit import UNLIMITED
from gateways.rest.reads import ProjectedItems, raw_json, repeated_slices, set_time
from perseus.marketdata.v1 import candles_pb2, market_data_service_pb2 as md

MAX_CANDLES = 1000
DEFAULT_CANDLES = 100
CANDLES_FIELD = md.GetCandlesResponse.DESCRIPTOR.fields_by_name["candles"].number
PROJECTED_CANDLES = 20_000  # the public JSON of this many recent candles, by their bytes: about 9 MB

blueprint = Blueprint("candles", url_prefix="/public/v1")

CANDLES = Operation(
    name="get_candles",
    path="/public/v1/candles/{exchange}/{symbol}",
    summary="Candles",
    description=(
        "Closed OHLCV candles, oldest first: the newest `limit` ones (before `end` if given), or with `start`"
        " the first `limit` from it. Ranges are half-open: `start <= timestamp < end`."
        " `start` and `end` are rounded up to the timeframe's candle boundary (the same candles: open times are"
        " boundaries). Unknown exchange or symbol: 404."
    ),
    tag="candles",
    params=(
        *PAIR_IN_PATH,
        Param("timeframe", "timeframe", "Candle timeframe", default="1h"),
        Param("limit", "integer", "How many candles", default=DEFAULT_CANDLES, maximum=MAX_CANDLES),
        Param("start", "time", "First open time, inclusive"),
        Param("end", "time", "Last open time, exclusive"),
    ),
    data=descriptor_of(candles_pb2.Candle),
    cost="ceil(limit / 100)",
)
_bodies = ProjectedItems(CANDLES, PROJECTED_CANDLES)


@CANDLES.register(blueprint)
async def get_candles(request: RestRequest, **_: str) -> HTTPResponse:
    api_key = await authenticate(request)
    values = parameters(request, CANDLES)
    services = request.app.ctx.services
    exchange, symbol = values["exchange"], values["symbol"]
    timeframe = TIMEFRAME_NAMES[values["timeframe"]]
    # on candle boundaries: the same candles, and one cache entry for every start/end within a candle
    step = TIMEFRAME_MS[timeframe]
    start, end = align_up(values["start"], step, cap=MAX_TIME_MS), align_up(values["end"], step, cap=MAX_TIME_MS)
    key = (exchange, symbol, values["timeframe"], values["limit"], start, end)
    # The limiter's round trip carries the probe; a key that is not limited probes on its own.
    newest = await spend(
        request,
        api_key,
        ratelimit.candles_cost(values["limit"]),
        also=services.candles.probe_command(exchange, symbol, timeframe),
    )
    await services.directory.require(exchange, symbol)
    if newest is not NOT_READ:
        probe = probe_of(newest)
    elif limit_of(request, api_key) == UNLIMITED:
        probe = await services.candles.probe(exchange, symbol, timeframe)
    else:  # the probe went with the limiter's call, which Redis did not answer in time: no second deadline
        probe = None
    message = md.GetCandlesRequest(
        exchange=exchange, symbol=symbol, timeframe=values["timeframe"], limit=values["limit"]
    )
    set_time(message, "start_time", start)
    set_time(message, "end_time", end)
    unbounded = start is None and end is None

    async def fetch() -> tuple[bytes, bool]:
        core = services.core
        reply: bytes = await core.unary(core.candles_wire, message, request_id=request_id_of(request))
        candles = repeated_slices(reply, CANDLES_FIELD)  # each candle's wire bytes, not parsed
        body = _bodies.wire_body(candles, candles_pb2.Candle)
        return body, probe is not None and _agrees(candles, probe, unbounded=unbounded)

    return raw_json(await services.candles.answer(key, probe, fetch))


def _agrees(candles: list[bytes], probe: bytes, *, unbounded: bool) -> bool:
    """Whether the answer (its candles' wire bytes) saw the window the probe saw: for "the newest", its newest
    candle is the probe's. The core answers with the window's members as they are, so the bytes are usually
    the member's; only when they differ are the two parsed and compared as candles."""
    if not unbounded:
        return True  # a bounded read is not answered from the core's close-invalidated cache
    member = CandleCache.newest_member(probe)
    if not member or not candles:
        return not member and not candles
    newest = candles[-1]
    return newest == member or candles_pb2.Candle.FromString(newest) == candles_pb2.Candle.FromString(member)
