"""``ReplayService``: a channel's stored history as its live events (issue 21, replay over the stream).

A replay reads its range from PostgreSQL on the heavy-read pool (``PERSEUS_DATABASE_HEAVY_POOL_SIZE``): one
read-only transaction, one server-side cursor, ``chunk_size`` rows per fetch and one response per chunk. The
next chunk is fetched only once the previous response was written, so a caller that reads slowly (the
WebSocket gateway pacing a replay at 1x) holds one chunk here, whatever the range; a cancelled call closes the
cursor and returns the connection. Each event is built by the same codec as the live one
(:func:`core.codec.messages.fill_price_feed`), with the channel's explicit name, seq 0 and no publish time.
Prices channels (stored ticks) and candles channels (stored closed candles) for now. See
docs/design/ws-replay.md.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import aclosing
from typing import Any

import asyncpg
import grpc
from grpc import aio

from core.adapters.alert_store import RANGE_SQL as ALERTS_RANGE_SQL, alert_record
from core.adapters.postgres import ms_to_datetime
from core.codec.messages import candle_to_pb, fill_price_feed, fill_trade_signal
from core.domain.candles import Candle
from core.domain.channels import ALL_SOURCES, ALL_SYMBOLS, Channel, ChannelFamily, explicit_name
from core.domain.errors import InvalidArgument
from core.domain.prices import Tick
from core.domain.timeframes import Timeframe
from core.rpc.cursor_reads import read_chunks
from core.rpc.wire import to_wire
from perseus.marketdata.v1 import replay_service_pb2 as pb, stream_service_pb2

logger = logging.getLogger(__name__)

Context = aio.ServicerContext[Any, Any]
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ReplayService"].full_name
DEFAULT_CHUNK = 1000
MAX_CHUNK = 10_000

_MS = "(extract(epoch FROM {}) * 1000)::bigint"
TICKS_SQL = (
    f"SELECT symbol, price, volume, source, {_MS.format('ts')}, bid, ask, {_MS.format('exchange_ts')}"
    " FROM price_feeds WHERE symbol = $1 AND ($2 = '' OR source = $2) AND ts >= $3 AND ts < $4 ORDER BY ts, id"
)

# closed candles only (open_time <= $6: now less one timeframe), as the live candle_close events carry
CANDLES_SQL = (
    f"SELECT {_MS.format('open_time')}, open, high, low, close, volume, is_synthetic FROM candles"
    " WHERE exchange_id = $1 AND symbol = $2 AND timeframe = $3 AND open_time >= $4 AND open_time < $5"
    " AND open_time <= $6 ORDER BY open_time"
)


class ReplayServicer:
    def __init__(
        self, pool: asyncpg.Pool, resolve: Callable[[str], Channel], exchange_ids: Mapping[str, int] | None = None
    ) -> None:
        self._pool = pool  # the heavy-read pool
        self._resolve = resolve  # the stream service's channel names (Streams.resolve)
        self._exchange_ids = exchange_ids or {}

    async def Replay(self, request: pb.ReplayRequest, context: Context) -> AsyncIterator[bytes]:
        chunk = request.chunk_size or DEFAULT_CHUNK
        if not 1 <= chunk <= MAX_CHUNK:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"chunk_size must be from 1 to {MAX_CHUNK}")
        if not request.HasField("start_time") or not request.HasField("end_time"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "start_time and end_time are required")
        start, end = request.start_time.ToMilliseconds(), request.end_time.ToMilliseconds()
        if start >= end:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "start_time must be before end_time")
        try:
            channel = self._resolve(request.channel)
        except InvalidArgument as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # abort raises; this is for the type checker
        name = explicit_name(channel)
        if channel.family is ChannelFamily.CANDLES:
            async for candles in self._candles(channel, name, start, end, chunk, context):
                yield candles
            return
        if channel.family is ChannelFamily.SIGNALS:
            async for signals in self._signals(channel, name, start, end, chunk, context):
                yield signals
            return
        if channel.family is not ChannelFamily.PRICES or channel.symbol == ALL_SYMBOLS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"replay serves prices, candles and signals channels of one symbol, not {request.channel[:100]!r}",
            )
        source = "" if channel.exchange == ALL_SOURCES else channel.exchange or ""
        args = (channel.symbol, source, ms_to_datetime(start), ms_to_datetime(end))

        def fill(event: stream_service_pb2.StreamEvent, row: Any) -> None:
            fill_price_feed(event.price_update, Tick(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7]))

        async for prices in self._events(TICKS_SQL, args, chunk, name, fill, context):
            yield prices

    async def _events(
        self,
        sql: str,
        args: tuple[Any, ...],
        chunk: int,
        name: str,
        fill: Callable[[stream_service_pb2.StreamEvent, Any], None],
        context: Context,
    ) -> AsyncIterator[bytes]:
        """One response per chunk of ``sql``'s rows, each row an event of ``name`` filled by ``fill``."""
        async with aclosing(read_chunks(self._pool, sql, args, chunk, context, what="replay")) as chunks:
            async for rows in chunks:
                response = pb.ReplayResponse()
                for row in rows:
                    event = response.events.add()
                    event.channel = name
                    fill(event, row)
                yield response.SerializeToString()

    async def _series(self, channel: Channel, context: Context) -> tuple[int, Timeframe]:
        """The exchange id and timeframe of a candles or signals channel (INVALID_ARGUMENT for an unknown one)."""
        exchange_id = self._exchange_ids.get(channel.exchange or "")
        if exchange_id is None or channel.timeframe is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"unknown exchange {channel.exchange or ''!r}")
        assert exchange_id is not None and channel.timeframe is not None
        return exchange_id, channel.timeframe

    async def _signals(
        self, channel: Channel, name: str, start: int, end: int, chunk: int, context: Context
    ) -> AsyncIterator[bytes]:
        """The stored alerts triggered in the range, oldest first, as the live ``trade_signal`` events."""
        exchange_id, timeframe = await self._series(channel, context)
        args = (exchange_id, channel.symbol, timeframe.value, ms_to_datetime(start), ms_to_datetime(end))

        def fill(event: stream_service_pb2.StreamEvent, row: Any) -> None:
            fill_trade_signal(event.trade_signal, alert_record(row))

        async for signals in self._events(ALERTS_RANGE_SQL, args, chunk, name, fill, context):
            yield signals

    async def _candles(
        self, channel: Channel, name: str, start: int, end: int, chunk: int, context: Context
    ) -> AsyncIterator[bytes]:
        exchange_id, timeframe = await self._series(channel, context)
        exchange = channel.exchange or ""
        closed_before = int(time.time() * 1000) - timeframe.ms
        args = (
            exchange_id,
            channel.symbol,
            timeframe.value,
            ms_to_datetime(start),
            ms_to_datetime(end),
            ms_to_datetime(closed_before),
        )

        def fill(event: stream_service_pb2.StreamEvent, row: Any) -> None:
            ohlcv = (row[1], row[2], row[3], row[4], row[5])
            candle = Candle(exchange, channel.symbol, timeframe, row[0], *ohlcv, is_synthetic=row[6])
            event.candle_close.CopyFrom(candle_to_pb(candle, exchange_id=exchange_id))

        async for candles in self._events(CANDLES_SQL, args, chunk, name, fill, context):
            yield candles


def replay_service_handler(servicer: ReplayServicer) -> grpc.GenericRpcHandler:
    """ReplayService with responses that are already bytes (``core.rpc.wire.to_wire`` passes them on)."""
    return grpc.method_handlers_generic_handler(
        SERVICE_NAME,
        {
            "Replay": grpc.unary_stream_rpc_method_handler(
                servicer.Replay, request_deserializer=pb.ReplayRequest.FromString, response_serializer=to_wire
            )
        },
    )
