"""``GET /public/v1/signals/{exchange}/{symbol}`` (the current signal) and ``GET /public/v1/alerts``.

The current signal is derived from the series' current MACD-V state by the
core (``CurrentSignal``), so it exists as soon as the indicator is warm,
whether or not an alert was ever raised; the alerts are the history.

The alert history is cursor-paginated: ``meta.next_cursor`` is the core's
page token, null on the last page, and goes back as ``cursor``.
"""

from __future__ import annotations

from sanic import Blueprint, HTTPResponse

from common.projection import descriptor_of
from gateways.rest import ratelimit
from gateways.rest.context import RestRequest
from gateways.rest.guard import admit
from gateways.rest.operations import Operation
from gateways.rest.params import PAIR_IN_PATH, Param
from gateways.rest.reads import body_of, call, raw_json, set_time
from perseus.marketdata.v1 import market_data_service_pb2 as md, signals_pb2

MAX_ALERTS = 1000
DEFAULT_ALERTS = 100

blueprint = Blueprint("signals", url_prefix="/public/v1")

SIGNAL = Operation(
    name="get_signal",
    path="/public/v1/signals/{exchange}/{symbol}",
    summary="Current signal",
    description=(
        "The signal of the current MACD-V state of a pair and timeframe: `direction` (bullish while MACD-V is at"
        " or above its signal line), `strength` (from |MACD-V|), momentum `stage`, and the `price` and"
        " `timestamp` of the last closed candle. Served as soon as the indicator is warm; past signals are in"
        " /alerts. Unknown exchange or symbol: 404; before the indicator is warm: 404 with `details.reason` ="
        ' `"warming_up"`.'
    ),
    tag="signals",
    params=(
        *PAIR_IN_PATH,
        Param("timeframe", "timeframe", "Timeframe of the indicator", default="1h"),
    ),
    data=descriptor_of(signals_pb2.CurrentSignal),
    many=False,
)
ALERTS = Operation(
    name="list_alerts",
    path="/public/v1/alerts",
    summary="Signal history",
    description=(
        "Trade signals, newest first, filtered by any of exchange, symbol, timeframe and `since`."
        " Pass `meta.next_cursor` back as `cursor` for the next page; it is null on the last page."
    ),
    tag="signals",
    params=(
        Param("exchange", "exchange", "Only this exchange", example="sim"),
        Param("symbol", "symbol", "Only this pair", example="BTC-USD"),
        Param("timeframe", "timeframe", "Only this timeframe"),
        Param("since", "time", "Only signals at or after this time"),
        Param("limit", "integer", "Page size", default=DEFAULT_ALERTS, maximum=MAX_ALERTS),
        Param("cursor", "cursor", "`meta.next_cursor` of the previous page"),
    ),
    data=descriptor_of(signals_pb2.TradeSignal),
    paged=True,
    cost="ceil(limit / 100)",
)


@SIGNAL.register(blueprint)
async def get_signal(request: RestRequest, **_: str) -> HTTPResponse:
    values = await admit(request, SIGNAL)
    await request.app.ctx.services.directory.require(values["exchange"], values["symbol"])
    message = md.GetSignalRequest(exchange=values["exchange"], symbol=values["symbol"], timeframe=values["timeframe"])
    reply = await call(request, "GetSignal", message)
    return raw_json(body_of(reply.current, SIGNAL))


@ALERTS.register(blueprint)
async def list_alerts(request: RestRequest) -> HTTPResponse:
    values = await admit(request, ALERTS, lambda v: ratelimit.alerts_cost(v["limit"]))
    message = md.ListAlertsRequest(
        exchange=values["exchange"] or "",
        symbol=values["symbol"] or "",
        timeframe=values["timeframe"] or None,  # None: unset, every timeframe
        page_size=values["limit"],
        page_token=values["cursor"] or "",
    )
    set_time(message, "since_time", values["since"])
    reply = await call(request, "ListAlerts", message)
    meta = {"next_cursor": reply.next_page_token or None, "limit": values["limit"]}
    return raw_json(body_of(reply.signals, ALERTS, meta))
