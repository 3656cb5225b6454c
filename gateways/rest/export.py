"""Bulk export (issue 21): ``GET /public/v1/export/candles/{exchange}/{symbol}`` and ``/export/ticks``.

The whole range comes back in one response, written as it is read: the core streams it from one
PostgreSQL cursor in chunks of :data:`CHUNK_ROWS` rows (``ExportService``), and each chunk is projected
(the public fields only, as on every route), written to the client and flushed before the next one is
asked for, so the gateway holds one chunk whatever the range, and a slow client slows the core's reads.
A client that goes away cancels the core call, which closes the cursor and returns its connection.

Bodies: ``format=ndjson`` (``application/x-ndjson``: one JSON object per line, decimals as strings,
then a last line ``{"type":"end","rows":N}``) or ``format=csv`` (``text/csv``: a header row, RFC 4180
quoting and CRLF, then a last line ``# end rows=N``). An error after the first byte (the core or
PostgreSQL lost) ends the body with ``{"type":"error","error":{…},"rows":N}`` or ``# error CODE: message``
instead, so a cut body is never mistaken for a whole one. Errors before the first byte are the
documented error answers (400, 401, 404, 429, 503).

Cost: rows, from a daily budget per key (free and pro budgets in settings; admin keys: none). A candle
export reserves its largest possible row count (one per timeframe in the range) up front and is refused
with 429 when that does not fit; a tick export reserves one row and may send as many as the budget has
left (it ends with an error line when it reaches that). Either is settled to the rows actually sent when
it ends. The export routes' ``X-RateLimit-*`` headers count this budget. See docs/design/export.md.
"""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import nullcontext
from typing import Any

import grpc
import orjson
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from sanic import Blueprint

from common.projection import descriptor_of, projector, public_fields
from gateways.common.core_client import api_error
from gateways.common.errors import ApiError, ErrorCode, RateLimitExceeded, ValidationFailed, error_body
from gateways.common.http import request_id_of
from gateways.rest import ratelimit
from gateways.rest.candle_cache import TIMEFRAME_MS, align_up
from gateways.rest.context import RestRequest
from gateways.rest.guard import authenticate, parameters
from gateways.rest.operations import Operation
from gateways.rest.params import MAX_TIME_MS, PAIR_IN_PATH, TIMEFRAME_NAMES, Param
from gateways.rest.ratelimit import UNLIMITED
from gateways.rest.reads import set_time
from perseus.marketdata.v1 import candles_pb2, export_service_pb2 as pb, key_service_pb2, prices_pb2

CHUNK_ROWS = 1000  # rows per message from the core, and per write to the client
EXPORT_DEADLINE_S = 3600.0  # the core call's deadline: an export that runs longer is cut (with an error line)
NDJSON = "application/x-ndjson"
CSV = "text/csv; charset=utf-8"
MEDIA = {"ndjson": NDJSON, "csv": CSV}
FORMAT = Param(
    "format", "choice", "Body format: NDJSON (one JSON object per line) or CSV", default="ndjson",
    extra={"enum": list(MEDIA)},
)  # fmt: skip
HOUR_MS = 3_600_000

blueprint = Blueprint("export", url_prefix="/public/v1")

_COMMON = (
    " The body is written as it is read (chunked), oldest first; its last line says it is whole:"
    ' `{"type":"end","rows":N}` (NDJSON) or `# end rows=N` (CSV). An error after the first byte ends it with'
    ' `{"type":"error","error":{…},"rows":N}` or `# error CODE: message` instead. Cost: rows, from the key\'s'
    " daily export budget (`PERSEUS_EXPORT_ROWS_PER_DAY_FREE` / `_PRO`), which this route's `X-RateLimit-*`"
    " headers count (reset: the next UTC midnight)."
)
EXPORT_CANDLES = Operation(
    name="export_candles",
    path="/public/v1/export/candles/{exchange}/{symbol}",
    summary="Export candles",
    description=(
        "Every closed candle of the series with `start <= timestamp < end` (both rounded up to the timeframe's"
        " boundary), from PostgreSQL, in one streamed response. The range may span at most"
        " `PERSEUS_EXPORT_MAX_CANDLES` timeframes (400 beyond). The whole range's possible candles"
        " (`(end - start) / timeframe`) are reserved from the budget up front (429 when they do not fit), and"
        " the reservation is settled to the rows sent." + _COMMON
    ),
    tag="export",
    params=(
        *PAIR_IN_PATH,
        Param("timeframe", "timeframe", "Candle timeframe", default="1m"),
        Param("start", "time", "First open time, inclusive", required=True, example="2026-11-01T00:00:00Z"),
        Param("end", "time", "Last open time, exclusive", required=True, example="2026-12-01T00:00:00Z"),
        FORMAT,
    ),
    data=descriptor_of(candles_pb2.Candle),
    cost="rows (daily budget)",
    streamed=(NDJSON, "text/csv"),
)
EXPORT_TICKS = Operation(
    name="export_ticks",
    path="/public/v1/export/ticks",
    summary="Export ticks",
    description=(
        "Every stored tick of the symbol (of every source, or of `source`) with `start <= timestamp < end`,"
        " by time, in one streamed response. The range may span at most `PERSEUS_EXPORT_MAX_TICK_HOURS` hours"
        " (400 beyond). A tick export needs one row of budget left to start and may send as many rows as the"
        " budget has left; beyond, it ends with an error line (`RATE_LIMIT_EXCEEDED`)." + _COMMON
    ),
    tag="export",
    params=(
        Param("symbol", "symbol", "Pair", required=True, example="BTC-USD"),
        Param("source", "source", "Only ticks of this source"),
        Param("start", "time", "Start, inclusive", required=True, example="2026-12-01T00:00:00Z"),
        Param("end", "time", "End, exclusive", required=True, example="2026-12-02T00:00:00Z"),
        FORMAT,
    ),
    data=descriptor_of(prices_pb2.PriceFeed),
    cost="rows (daily budget)",
    streamed=(NDJSON, "text/csv"),
)
OPERATIONS = (EXPORT_CANDLES, EXPORT_TICKS)


def _range(values: dict[str, Any]) -> tuple[int, int]:
    start, end = values["start"], values["end"]
    if start >= end:
        raise ValidationFailed("`end` must be after `start`", details={"field": "end"})
    return start, end


def row_budget(request: RestRequest, api_key: key_service_pb2.ApiKey) -> int:
    """Export rows per UTC day of ``api_key``: free keys the free budget, pro and internal keys the pro one,
    admin keys none (:data:`UNLIMITED`)."""
    settings = request.app.ctx.settings
    if api_key.tier == key_service_pb2.KEY_TIER_ADMIN:
        return UNLIMITED
    if api_key.tier == key_service_pb2.KEY_TIER_FREE:
        return settings.export_rows_per_day_free
    return settings.export_rows_per_day_pro


@EXPORT_CANDLES.register(blueprint)
async def export_candles(request: RestRequest, **_: str) -> None:
    api_key = await authenticate(request)
    values = parameters(request, EXPORT_CANDLES)
    name = TIMEFRAME_NAMES[values["timeframe"]]
    step = TIMEFRAME_MS[name]
    start, end = (align_up(ms, step, cap=MAX_TIME_MS) or 0 for ms in _range(values))
    max_candles = request.app.ctx.settings.export_max_candles
    if end - start > step * max_candles:
        raise ValidationFailed(
            f"`start`: the range spans more than {max_candles} candles of {name}; narrow it or widen `timeframe`",
            details={"field": "start"},
        )
    exchange, symbol = values["exchange"], values["symbol"]
    await request.app.ctx.services.directory.require(exchange, symbol)
    message = pb.ExportCandlesRequest(
        exchange=exchange, symbol=symbol, timeframe=values["timeframe"], chunk_size=CHUNK_ROWS
    )
    set_time(message, "start_time", start)
    set_time(message, "end_time", end)
    filename = f"candles_{exchange}_{symbol}_{name}_{start}_{end}"
    reserve = ratelimit.range_buckets(end - start, step) if end > start else 1
    await _export(
        request, api_key, values["format"], filename, "ExportCandles", message, "candles", candles_pb2.Candle, reserve
    )


@EXPORT_TICKS.register(blueprint)
async def export_ticks(request: RestRequest) -> None:
    api_key = await authenticate(request)
    values = parameters(request, EXPORT_TICKS)
    start, end = _range(values)
    max_hours = request.app.ctx.settings.export_max_tick_hours
    if end - start > max_hours * HOUR_MS:
        raise ValidationFailed(
            f"`start`: the range spans more than {max_hours} hours; narrow it", details={"field": "start"}
        )
    source = values["source"] or ""
    message = pb.ExportTicksRequest(symbol=values["symbol"], source=source, chunk_size=CHUNK_ROWS)
    set_time(message, "start_time", start)
    set_time(message, "end_time", end)
    filename = f"ticks_{values['symbol']}{'_' + source if source else ''}_{start}_{end}"
    await _export(
        request, api_key, values["format"], filename, "ExportTicks", message, "ticks", prices_pb2.PriceFeed, 1
    )


async def _export(
    request: RestRequest,
    api_key: key_service_pb2.ApiKey,
    fmt: str,
    filename: str,
    method: str,
    message: Message,
    field: str,
    item: type[Message],
    reserve: int,
) -> None:
    """Reserve the budget (429), open the core's stream and read its first chunk (errors before the first
    byte are error answers), then write chunk by chunk; settle the budget to the rows sent, whatever happens."""
    services = request.app.ctx.services
    budget = row_budget(request, api_key)
    decision, day = await services.limiter.spend_rows(api_key.id, budget, reserve)
    request.ctx.rate_headers = decision.headers()
    if not decision.allowed:
        raise RateLimitExceeded(
            decision.retry_after_s(time.time()),
            f"daily export budget of {decision.limit} rows: {decision.remaining} left, this export may send {reserve}",
        )
    # a tick export may send what is left; a candle export never more than it reserved
    cap = decision.remaining + reserve if budget != UNLIMITED and reserve == 1 and field == "ticks" else None
    sent = [0]  # rows written so far: a client gone mid-stream is charged what it was sent
    try:
        with (
            nullcontext()
            if api_key.tier == key_service_pb2.KEY_TIER_ADMIN
            else services.heavy.hold(api_key.id, "heavy reads (price ranges, exports)")
        ):
            await _stream(request, fmt, filename, method, message, field, item, cap, sent)
    finally:
        if budget != UNLIMITED:
            await asyncio.shield(services.limiter.settle_rows(api_key.id, day, sent[0] - reserve))


async def _stream(
    request: RestRequest,
    fmt: str,
    filename: str,
    method: str,
    message: Message,
    field: str,
    item: type[Message],
    cap: int | None,
    sent: list[int],
) -> None:
    core = request.app.ctx.services.core
    options = core.call_options(request_id_of(request))
    options["timeout"] = EXPORT_DEADLINE_S
    call = getattr(core.export, method)(message, **options)
    try:
        chunks: AsyncIterator[Any] = call.__aiter__()
        try:
            first = await anext(chunks, None)
        except grpc.RpcError as exc:
            raise api_error(exc) from exc
        encode = Encoder(fmt, descriptor_of(item))
        headers = {"Content-Disposition": f'attachment; filename="{filename}.{fmt}"', "Cache-Control": "no-store"}
        response = await request.respond(content_type=MEDIA[fmt], headers=headers)
        assert response is not None
        rows = 0
        if head := encode.head():
            await response.send(head)
        error: ApiError | None = None
        chunk = first
        while chunk is not None:
            items: Sequence[Message] = getattr(chunk, field)
            if cap is not None and rows + len(items) > cap:
                items = items[: cap - rows]
                error = RateLimitExceeded(1, f"daily export budget reached after {rows + len(items)} rows")
            if items:
                await response.send(encode.rows(items))
                rows += len(items)
                sent[0] = rows
            if error is not None:
                break
            try:
                chunk = await anext(chunks, None)
            except grpc.RpcError as exc:
                error = api_error(exc)
                break
        if error is None:
            await response.send(encode.end(rows))
        else:
            await response.send(encode.error(error, request_id_of(request), rows))
        await response.eof()
    finally:
        call.cancel()  # a no-op once the stream ended; otherwise the core's cursor closes now


class Encoder:
    """Rows of one message type as NDJSON lines or CSV records (the public fields, in declaration order)."""

    def __init__(self, fmt: str, descriptor: Descriptor) -> None:
        self._csv = fmt == "csv"
        self._project: Callable[[Message], dict[str, Any]] = projector(descriptor)
        self._columns = [f.name for f in public_fields(descriptor)]

    def _records(self, records: Iterable[Sequence[Any]]) -> bytes:
        out = io.StringIO()
        csv.writer(out, lineterminator="\r\n").writerows(records)
        return out.getvalue().encode()

    def head(self) -> bytes:
        return self._records([self._columns]) if self._csv else b""

    def rows(self, items: Sequence[Message]) -> bytes:
        if not self._csv:
            return b"".join(orjson.dumps(self._project(i)) + b"\n" for i in items)
        columns = self._columns
        return self._records([["" if (v := d[c]) is None else v for c in columns] for d in map(self._project, items)])

    def end(self, rows: int) -> bytes:
        return f"# end rows={rows}\r\n".encode() if self._csv else orjson.dumps({"type": "end", "rows": rows}) + b"\n"

    def error(self, error: ApiError, request_id: str, rows: int) -> bytes:
        code = error.code
        if self._csv:
            text = " ".join(str(error).split())
            return f"# error {code.value}: {text}\r\n".encode()
        body = error_body(code, str(error), request_id=request_id, details=error.details)
        return orjson.dumps({"type": "error", "error": body["error"], "rows": rows}) + b"\n"


__all__ = ["EXPORT_CANDLES", "EXPORT_TICKS", "OPERATIONS", "ErrorCode", "blueprint"]
