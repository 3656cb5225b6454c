"""``ExportService``: a whole range of stored candles or ticks, streamed from one PostgreSQL cursor (issue 21).

Each call takes one connection of the heavy-read pool (``PERSEUS_DATABASE_HEAVY_POOL_SIZE``), opens a
read-only transaction and a server-side cursor over the range, and fetches ``chunk_size`` rows at a time:
one chunk becomes one response, and the next is fetched only when the interceptor's ``context.write()`` of
the previous one returned, so gRPC's flow control (a gateway that stops reading) stops the reads too and
memory stays one chunk whatever the range. A cancelled call (the gateway's client went away) raises in that
write; the generator is closed there, which rolls the transaction back (the cursor with it) and returns the
connection to the pool. PostgreSQL lost mid-stream ends the call with UNAVAILABLE after the rows already
sent. See docs/design/export.md.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

import asyncpg
import grpc
from grpc import aio

from core.adapters.postgres import ms_to_datetime
from core.codec.messages import TIMEFRAME_FROM_PB
from core.rpc.cursor_reads import read_chunks
from core.rpc.wire import to_wire
from perseus.marketdata.v1 import candles_pb2, export_service_pb2 as pb, prices_pb2

logger = logging.getLogger(__name__)

Context = aio.ServicerContext[Any, Any]
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ExportService"].full_name
DEFAULT_CHUNK = 1000
MAX_CHUNK = 10_000

_US = "(extract(epoch FROM {}) * 1000000)::bigint"
CANDLES_SQL = (
    f"SELECT {_US.format('open_time')} AS t, open::text, high::text, low::text, close::text, volume::text,"
    " is_synthetic, sequence_num FROM candles"
    " WHERE exchange_id = $1 AND symbol = $2 AND timeframe = $3 AND open_time >= $4 AND open_time < $5"
    " ORDER BY open_time"
)
TICKS_SQL = (
    f"SELECT id, symbol, price::text, volume::text, source, {_US.format('ts')} AS t, bid::text, ask::text,"
    f" {_US.format('exchange_ts')} AS et, worker_id, {_US.format('ingested_at')} AS it FROM price_feeds"
    " WHERE symbol = $1 AND ($2 = '' OR source = $2) AND ts >= $3 AND ts < $4 ORDER BY ts, id"
)


class ExportServicer:
    def __init__(self, pool: asyncpg.Pool, exchange_ids: Mapping[str, int]) -> None:
        self._pool = pool  # the heavy-read pool
        self._exchange_ids = exchange_ids

    async def ExportCandles(self, request: pb.ExportCandlesRequest, context: Context) -> AsyncIterator[bytes]:
        chunk = await _chunk_size(request.chunk_size, context)
        start, end = await _range(request, context)
        timeframe = TIMEFRAME_FROM_PB.get(request.timeframe)
        if timeframe is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown timeframe {request.timeframe}")
        exchange_id = self._exchange_ids.get(request.exchange)
        if exchange_id is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown exchange {request.exchange!r}")
        assert timeframe is not None and exchange_id is not None
        args = (exchange_id, request.symbol, timeframe.value, ms_to_datetime(start), ms_to_datetime(end))
        template = candles_pb2.Candle(
            exchange=request.exchange, symbol=request.symbol, timeframe=request.timeframe, exchange_id=exchange_id
        )
        async with aclosing(read_chunks(self._pool, CANDLES_SQL, args, chunk, context, what="export")) as chunks:
            async for rows in chunks:
                response = pb.ExportCandlesResponse()
                for row in rows:
                    candle = response.candles.add()
                    candle.CopyFrom(template)
                    candle.timestamp.FromMicroseconds(row[0])
                    candle.open, candle.high, candle.low, candle.close = row[1], row[2], row[3], row[4]
                    candle.volume = row[5]
                    candle.is_synthetic, candle.sequence_num = row[6], row[7]
                yield response.SerializeToString()

    async def ExportTicks(self, request: pb.ExportTicksRequest, context: Context) -> AsyncIterator[bytes]:
        chunk = await _chunk_size(request.chunk_size, context)
        start, end = await _range(request, context)
        args = (request.symbol, request.source, ms_to_datetime(start), ms_to_datetime(end))
        async with aclosing(read_chunks(self._pool, TICKS_SQL, args, chunk, context, what="export")) as chunks:
            async for rows in chunks:
                response = pb.ExportTicksResponse()
                for row in rows:
                    tick: prices_pb2.PriceFeed = response.ticks.add()
                    tick.id, tick.symbol, tick.price, tick.volume, tick.source = row[0], row[1], row[2], row[3], row[4]
                    tick.timestamp.FromMicroseconds(row[5])
                    if row[6] is not None:
                        tick.bid = row[6]
                    if row[7] is not None:
                        tick.ask = row[7]
                    if row[8] is not None:
                        tick.exchange_timestamp.FromMicroseconds(row[8])
                    tick.worker_id = row[9]
                    tick.ingested_time.FromMicroseconds(row[10])
                yield response.SerializeToString()


async def _chunk_size(value: int, context: Context) -> int:
    if value == 0:
        return DEFAULT_CHUNK
    if not 1 <= value <= MAX_CHUNK:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"chunk_size must be from 1 to {MAX_CHUNK}")
    return value


async def _range(request: pb.ExportCandlesRequest | pb.ExportTicksRequest, context: Context) -> tuple[int, int]:
    if not request.HasField("start_time") or not request.HasField("end_time"):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "start_time and end_time are required")
    start, end = request.start_time.ToMilliseconds(), request.end_time.ToMilliseconds()
    if start >= end:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "start_time must be before end_time")
    return start, end


def export_service_handler(servicer: ExportServicer) -> grpc.GenericRpcHandler:
    """ExportService with responses that are already bytes (``core.rpc.wire.to_wire`` passes them on)."""
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "ExportCandles": grpc.unary_stream_rpc_method_handler(
                servicer.ExportCandles,
                request_deserializer=pb.ExportCandlesRequest.FromString,
                response_serializer=to_wire,
            ),
            "ExportTicks": grpc.unary_stream_rpc_method_handler(
                servicer.ExportTicks, request_deserializer=pb.ExportTicksRequest.FromString, response_serializer=to_wire
            ),
        },
    )
