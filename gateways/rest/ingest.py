"""``POST /internal/v1/ingest``: a batch of price feeds, forwarded to the core's IngestService.

Body (the seed's shape)::

    {"worker_id": "binance-worker-001", "batch_id": "optional idempotency key",
     "feeds": [{"symbol": "BTC/USD", "price": "67234.56", "volume": "1234.5", "source": "binance",
                "timestamp": "2025-10-09T12:34:56.123Z",
                "metadata": {"bid": "67230.00", "ask": "67235.00", "exchange_timestamp": 1728480896123}}]}

A feed may carry the venue's ``trade_id`` (a string, or an integer as Binance
and Kraken number trades), beside its fields or in ``metadata``: it is part of
the tick's identity, so two trades alike in everything else are both stored.

The batch's own ``timestamp`` (the seed's: when the worker sent it) is
accepted: it is checked like a feed's time (a bad one is a 400 naming
``timestamp``) and stands for the time of every feed that has none. The
answer adds to ``status``, ``ingested``, ``failed`` and ``errors`` the seed's
``message`` (one sentence saying the same) and ``latency_ms`` (the gateway's
time from the request's arrival to the answer).

Numbers may be JSON strings (recommended) or JSON numbers: the body is parsed
with every number kept as its exact decimal literal, never a binary float.
Per-feed problems (a bad price, an unknown source) come back in ``errors``
by index from the core; only a body that is not a batch at all is a 400, and
so is a number too big to handle (more than :data:`MAX_SIGNIFICANT_DIGITS`
digits, or a magnitude at or above ``10**MAX_EXPONENT`` or below
``10**-MAX_EXPONENT``): it is refused here, before it is formatted, because
``1e100000000`` written out in full is 100 MB and seconds of CPU.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp
from sanic import Blueprint, HTTPResponse

from gateways.common.auth import require_privileged
from gateways.common.errors import ValidationFailed
from gateways.common.http import json_response, request_id_of
from gateways.rest.context import RestRequest
from gateways.rest.guard import authenticate, spend
from gateways.rest.ratelimit import BASE_COST
from gateways.rest.reads import latency_ms
from perseus.marketdata.v1 import ingest_service_pb2, prices_pb2

MAX_FEEDS = 100
MAX_TEXT = 256
# The core's bounds (core.domain.prices), checked here too so a huge number never gets formatted.
MAX_SIGNIFICANT_DIGITS = 40
MAX_EXPONENT = 30
MAX_EPOCH_MS_DIGITS = 15  # epoch milliseconds stay below 10**16 until the year 318857
STATUS_NAMES = {
    ingest_service_pb2.INGEST_STATUS_SUCCESS: "success",
    ingest_service_pb2.INGEST_STATUS_PARTIAL: "partial",
    ingest_service_pb2.INGEST_STATUS_FAILED: "failed",
}

blueprint = Blueprint("ingest", url_prefix="/internal/v1")


@blueprint.post("/ingest")
async def ingest(request: RestRequest) -> HTTPResponse:
    services = request.app.ctx.services
    api_key = await authenticate(request)
    require_privileged(api_key)
    await spend(request, api_key, BASE_COST)  # internal keys are limited, ingest included (seed 004)
    batch = _parse_batch(request.body)
    reply: ingest_service_pb2.IngestPricesResponse = await services.core.unary(
        services.core.ingest.IngestPrices, batch, request_id=request_id_of(request)
    )
    return json_response(
        {
            "data": {
                "status": STATUS_NAMES.get(reply.status, "failed"),
                "ingested": reply.ingested,
                "failed": reply.failed,
                "errors": [{"index": e.index, "field": e.field, "reason": e.reason} for e in reply.errors],
                "message": ingest_message(reply.ingested, reply.failed),
                "latency_ms": latency_ms(request),
            }
        }
    )


def ingest_message(ingested: int, failed: int) -> str:
    """The seed's sentence: "2 price feeds ingested successfully", or how many of how many and how many failed."""
    total = ingested + failed
    noun = "price feed" if total == 1 else "price feeds"
    if not failed:
        return f"{ingested} {noun} ingested successfully"
    if not ingested:
        return f"no price feed ingested: {failed} of {total} failed (see errors)"
    return f"{ingested} of {total} {noun} ingested; {failed} failed (see errors)"


def _parse_batch(body: bytes) -> ingest_service_pb2.IngestPricesRequest:
    try:
        document = json.loads(body, parse_float=Decimal, parse_int=Decimal)
    except (ValueError, RecursionError):
        raise ValidationFailed("the body is not valid JSON") from None
    if not isinstance(document, dict) or not isinstance(document.get("feeds"), list):
        raise ValidationFailed("the body must be an object with a `feeds` array", details={"field": "feeds"})
    feeds = document["feeds"]
    if not feeds:
        raise ValidationFailed("`feeds` is empty", details={"field": "feeds"})
    if len(feeds) > MAX_FEEDS:
        raise ValidationFailed(f"at most {MAX_FEEDS} feeds per batch (got {len(feeds)})", details={"field": "feeds"})
    sent = Timestamp()
    _set_time(sent, document.get("timestamp"), "timestamp", required=False)
    request = ingest_service_pb2.IngestPricesRequest(
        worker_id=_text(document.get("worker_id"), "worker_id"),
        batch_id=_text(document.get("batch_id"), "batch_id"),
        feeds=[_feed(item, index) for index, item in enumerate(feeds)],
    )
    if sent.seconds or sent.nanos:  # the batch's time stands for the feeds that carry none
        for feed in request.feeds:
            if not feed.HasField("timestamp"):
                feed.timestamp.CopyFrom(sent)
    return request


def _feed(item: Any, index: int) -> prices_pb2.PriceFeed:
    """Shape only; the values themselves are validated by the core, feed by feed."""
    if not isinstance(item, dict):
        raise ValidationFailed(f"feeds[{index}] must be an object", details={"index": index})
    given = item.get("metadata")
    metadata: dict[str, Any] = given if isinstance(given, dict) else {}
    feed = prices_pb2.PriceFeed(
        symbol=_text(item.get("symbol"), f"feeds[{index}].symbol"),
        price=_number(item.get("price"), f"feeds[{index}].price"),
        volume=_number(item.get("volume"), f"feeds[{index}].volume"),
        source=_text(item.get("source"), f"feeds[{index}].source"),
    )
    for name in ("bid", "ask"):
        value = item.get(name, metadata.get(name))
        if value is not None:
            setattr(feed, name, _number(value, f"feeds[{index}].{name}"))
    trade_id = item.get("trade_id", metadata.get("trade_id"))
    if trade_id is not None:  # the venue's trade id: part of the tick's identity (a string or an integer)
        if isinstance(trade_id, Decimal) and trade_id == trade_id.to_integral_value() and abs(trade_id) < 10**30:
            trade_id = str(int(trade_id))
        feed.trade_id = _text(trade_id, f"feeds[{index}].trade_id")
    _set_time(feed.timestamp, item.get("timestamp"), f"feeds[{index}].timestamp", required=False)
    exchange_ts = item.get("exchange_timestamp", metadata.get("exchange_timestamp"))
    _set_time(feed.exchange_timestamp, exchange_ts, f"feeds[{index}].exchange_timestamp", required=False)
    if not feed.exchange_timestamp.seconds and not feed.exchange_timestamp.nanos:
        feed.ClearField("exchange_timestamp")
    if not feed.timestamp.seconds and not feed.timestamp.nanos:
        feed.ClearField("timestamp")  # the core reports it as required, by index
    return feed


def _text(value: Any, field: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value) > MAX_TEXT:
        raise ValidationFailed(f"`{field}` must be a string of at most {MAX_TEXT} characters", details={"field": field})
    return value


def _number(value: Any, field: str) -> str:
    """A decimal string from a JSON string or an exact JSON number; anything else goes to the core as-is.

    A number out of bounds (JSON number or numeric string) is a 400 before anything formats it; a string
    that is no number at all (``"bad"``) is the core's to report, by index."""
    if isinstance(value, Decimal):
        _check_bounds(value, field)
        return format(value, "f")
    if isinstance(value, str):
        if len(value) > MAX_TEXT:
            raise ValidationFailed(f"`{field}` is too long to be a number", details={"field": field})
        try:
            parsed = Decimal(value.strip())
        except InvalidOperation:
            return value
        _check_bounds(parsed, field)
        return value
    return "" if value is None else json.dumps(value)[:MAX_TEXT]


def _check_bounds(value: Decimal, field: str) -> None:
    """Digits and exponent from the tuple (cheap whatever the exponent), never the formatted value."""
    if not value.is_finite():
        return  # NaN and Infinity are the core's to refuse, per feed
    digits = value.as_tuple()
    exponent = digits.exponent if isinstance(digits.exponent, int) else 0
    if (
        len(digits.digits) > MAX_SIGNIFICANT_DIGITS
        or (value != 0 and not -MAX_EXPONENT <= value.adjusted() < MAX_EXPONENT)
        or exponent < -2 * MAX_EXPONENT  # 0E-100000000 is zero, but 100 MB once formatted
    ):
        raise ValidationFailed(
            f"`{field}` is out of range: at most {MAX_SIGNIFICANT_DIGITS} significant digits, "
            f"magnitude between 1e-{MAX_EXPONENT} and 1e{MAX_EXPONENT}",
            details={"field": field},
        )


def _set_time(target: Timestamp, value: Any, field: str, *, required: bool) -> None:
    """ISO-8601 (``Z`` or an offset) or epoch milliseconds."""
    if value is None:
        if required:
            raise ValidationFailed(f"`{field}` is required", details={"field": field})
        return
    try:
        if isinstance(value, Decimal):
            if not value.is_finite() or value.adjusted() > MAX_EPOCH_MS_DIGITS:
                raise ValueError("out of range")  # checked before int(): int(Decimal("1e100000000")) burns minutes
            target.FromMilliseconds(int(value))
        elif isinstance(value, str):
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
            if moment.tzinfo is None:
                raise ValueError("no time zone")
            target.FromDatetime(moment)
        else:
            raise ValueError(type(value).__name__)
    except (ValueError, OverflowError) as exc:
        raise ValidationFailed(
            f"`{field}` must be an ISO-8601 time with a zone or epoch milliseconds ({exc})", details={"field": field}
        ) from None
