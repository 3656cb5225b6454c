"""``GET /public/v1/indicators/{exchange}/{symbol}``: the current MACD-V of a pair and timeframe.

The body is the projection of the core's ``MacdV`` message: its PUBLIC fields
(``macd_v``, ``signal``, ``histogram``, ``stage``, ``zone`` with the series'
names and time), never the EMAs, the ATR, the periods or the ids. An unknown
exchange or symbol is 404; a known pair whose indicator has no ready value
yet is 404 with ``details.reason = "warming_up"`` (the core's reason).
"""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse

from common.projection import descriptor_of
from gateways.rest.context import RestRequest
from gateways.rest.guard import admit
from gateways.rest.operations import Operation
from gateways.rest.params import PAIR_IN_PATH, Param
from gateways.rest.reads import body_of, call, raw_json
from perseus.marketdata.v1 import indicators_pb2, market_data_service_pb2 as md

blueprint = Blueprint("indicators", url_prefix="/public/v1")

INDICATOR = Operation(
    name="get_indicator",
    path="/public/v1/indicators/{exchange}/{symbol}",
    summary="Current MACD-V",
    description=(
        "The MACD-V of the last closed candle of a pair and timeframe: `macd_v`, its `signal` line, the"
        " `histogram`, the momentum `stage` and the value `zone`. Unknown exchange or symbol: 404. Before the"
        ' indicator is warm (too few closed candles): 404 with `details.reason` = `"warming_up"`.'
    ),
    tag="indicators",
    params=(
        *PAIR_IN_PATH,
        Param("timeframe", "timeframe", "Timeframe of the indicator", default="1h"),
    ),
    data=descriptor_of(indicators_pb2.MacdV),
    many=False,
)


@INDICATOR.register(blueprint)
async def get_indicator(request: RestRequest, **_: str) -> HTTPResponse:
    values = await admit(request, INDICATOR)
    await request.app.ctx.services.directory.require(values["exchange"], values["symbol"])
    message = md.GetIndicatorRequest(
        exchange=values["exchange"], symbol=values["symbol"], timeframe=values["timeframe"]
    )
    reply = await call(request, "GetIndicator", message)
    return raw_json(body_of(reply.indicator, INDICATOR))
