"""gRPC servicers: map protobuf requests to services and domain results back to protobuf.

No logic lives here beyond the mapping; errors are translated by
:func:`core.rpc.status.translates_errors`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

import grpc
from google.protobuf.message import Message
from grpc import aio

from core.codec import messages
from core.codec.timestamps import timestamp_ms
from core.domain.keys import ApiKeyRecord
from core.domain.models import Exchange, Symbol
from core.rpc import wire
from core.rpc.status import DEFAULT_MAX_CALL_S, translates_errors
from core.services.candle_queries import CandleQueries, CandleQuery
from core.services.hot_candles import HotCandles
from core.services.indicator_queries import IndicatorQueries
from core.services.ingestion import Ingestion
from core.services.price_queries import PriceQueries
from core.services.status import StatusService
from core.settings import Mode
from perseus.marketdata.v1 import (
    ingest_service_pb2,
    ingest_service_pb2_grpc,
    key_service_pb2,
    key_service_pb2_grpc,
    market_data_service_pb2 as md_pb2,
    market_data_service_pb2_grpc as md_grpc,
)

Context = aio.ServicerContext[Any, Any]


class ExchangeSource(Protocol):
    async def list_exchanges(self) -> list[Exchange]: ...

    async def list_symbols(self, exchange: str) -> list[Symbol]: ...


class KeyAuthenticator(Protocol):
    async def __call__(self, key: str) -> ApiKeyRecord | None: ...


ResponseT = TypeVar("ResponseT", bound=Message)


class AnswerCache(Protocol):
    """Whole answers kept a while (``core.adapters.answer_cache``): the kept one, else ``compute()``'s."""

    async def answer(
        self,
        kind: str,
        request: Message,
        response_type: type[ResponseT],
        compute: Callable[[], Awaitable[ResponseT]],
        *,
        ttl_s: int,
    ) -> ResponseT: ...


# Seed 004: range results kept 5 minutes, consensus 60 s (docs/design/price-queries.md).
RANGE_ANSWER_TTL_S = 300
CONSENSUS_ANSWER_TTL_S = 60


# A window that ended less than this long ago still takes ticks in flight (the gateways send "now" as the end of
# a range asked without `to`): its answer is computed every time.
SETTLED_AFTER_MS = 60_000


def _past(end_ms: int | None) -> bool:
    """Whether a window ended a while ago: only then is its answer kept (one ending now or later still grows)."""
    return end_ms is not None and end_ms <= time.time_ns() // 1_000_000 - SETTLED_AFTER_MS


class MarketDataServicer(md_grpc.MarketDataServiceServicer):
    def __init__(
        self,
        *,
        mode: Mode,
        version: str,
        exchange_names: Sequence[str],
        exchanges: ExchangeSource,
        status: StatusService,
        price_queries: PriceQueries,
        indicators: IndicatorQueries,
        candles: CandleQueries,
        hot_candles: HotCandles,
        max_call_s: float = DEFAULT_MAX_CALL_S,
        answers: AnswerCache | None = None,
    ) -> None:
        self.max_call_s = max_call_s  # the deadline of a call whose caller sent none (translates_errors)
        self._mode = mode
        self._version = version
        self._exchange_names = list(exchange_names)
        self._exchanges = exchanges
        self._status = status
        self._price_queries = price_queries
        self._indicators = indicators
        self._candles = candles
        self._hot_candles = hot_candles
        self._answers = answers  # price ranges and consensus over a past window, kept a while (seed 004)

    @translates_errors
    async def ListExchanges(
        self, request: md_pb2.ListExchangesRequest, context: Context
    ) -> md_pb2.ListExchangesResponse:
        exchanges = await self._exchanges.list_exchanges()
        return md_pb2.ListExchangesResponse(exchanges=[messages.exchange_to_pb(e) for e in exchanges])

    @translates_errors
    async def GetCandles(self, request: md_pb2.GetCandlesRequest, context: Context) -> bytes:
        query = self._candles.query(
            request.exchange,
            request.symbol,
            messages.timeframe_from_pb(request.timeframe, field="timeframe"),
            request.limit,
            timestamp_ms(request, "start_time"),
            timestamp_ms(request, "end_time"),
        )
        # A kept answer is returned without awaiting anything: no coroutine of the cache's per call.
        kept = self._hot_candles.kept(query)
        return kept if kept is not None else await self._hot_candles.fill(query, self._candles_answer)

    async def _candles_answer(self, query: CandleQuery) -> bytes:
        # The stored candles are already serialized Candle messages: the response is their concatenation.
        return wire.repeated_field_bytes(1, await self._candles.candles(query))

    @translates_errors
    async def GetLatestPrices(
        self, request: md_pb2.GetLatestPricesRequest, context: Context
    ) -> md_pb2.GetLatestPricesResponse:
        quotes = await self._price_queries.latest(list(request.symbols))
        cached = bool(quotes) and all(q.cached for q in quotes)
        return md_pb2.GetLatestPricesResponse(prices=[messages.latest_price_to_pb(q) for q in quotes], cached=cached)

    @translates_errors
    async def GetPriceRange(
        self, request: md_pb2.GetPriceRangeRequest, context: Context
    ) -> md_pb2.GetPriceRangeResponse:
        async def compute() -> md_pb2.GetPriceRangeResponse:
            buckets = await self._price_queries.price_range(
                request.symbol,
                start_ms=timestamp_ms(request, "start_time"),
                end_ms=timestamp_ms(request, "end_time"),
                interval=messages.timeframe_from_pb(request.interval, field="interval"),
                source=request.source,
                limit=request.limit,
            )
            return md_pb2.GetPriceRangeResponse(buckets=[messages.price_bucket_to_pb(b) for b in buckets])

        if self._answers is None or not _past(timestamp_ms(request, "end_time")):
            return await compute()
        return await self._answers.answer(
            "price_range", request, md_pb2.GetPriceRangeResponse, compute, ttl_s=RANGE_ANSWER_TTL_S
        )

    @translates_errors
    async def GetConsensus(self, request: md_pb2.GetConsensusRequest, context: Context) -> md_pb2.GetConsensusResponse:
        async def compute() -> md_pb2.GetConsensusResponse:
            prices = await self._price_queries.consensus(list(request.symbols), at_ms=timestamp_ms(request, "time"))
            return md_pb2.GetConsensusResponse(prices=[messages.consensus_to_pb(c) for c in prices])

        if self._answers is None or not _past(timestamp_ms(request, "time")):
            return await compute()  # "now" moves: an answer for it is not kept
        return await self._answers.answer(
            "consensus", request, md_pb2.GetConsensusResponse, compute, ttl_s=CONSENSUS_ANSWER_TTL_S
        )

    @translates_errors
    async def ListSymbols(self, request: md_pb2.ListSymbolsRequest, context: Context) -> md_pb2.ListSymbolsResponse:
        symbols = await self._exchanges.list_symbols(request.exchange)
        return md_pb2.ListSymbolsResponse(symbols=[messages.symbol_to_pb(s) for s in symbols])

    @translates_errors
    async def GetIndicator(self, request: md_pb2.GetIndicatorRequest, context: Context) -> md_pb2.GetIndicatorResponse:
        reading = await self._indicators.indicator(
            request.exchange, request.symbol, messages.timeframe_from_pb(request.timeframe, field="timeframe")
        )
        return md_pb2.GetIndicatorResponse(indicator=messages.macd_v_to_pb(reading))

    @translates_errors
    async def GetSignal(self, request: md_pb2.GetSignalRequest, context: Context) -> md_pb2.GetSignalResponse:
        timeframe = messages.timeframe_from_pb(request.timeframe, field="timeframe")
        current = await self._indicators.signal(request.exchange, request.symbol, timeframe)
        reply = md_pb2.GetSignalResponse(current=messages.current_signal_to_pb(current))
        record = await self._indicators.last_alert(request.exchange, request.symbol, timeframe)
        if record is not None:
            messages.fill_trade_signal(reply.signal, record)
        return reply

    @translates_errors
    async def ListAlerts(self, request: md_pb2.ListAlertsRequest, context: Context) -> md_pb2.ListAlertsResponse:
        page = await self._indicators.alert_history(
            exchange=request.exchange,
            symbol=request.symbol,
            timeframe=messages.timeframe_from_pb(request.timeframe, field="timeframe"),
            since_ms=timestamp_ms(request, "since_time"),
            page_size=request.page_size,
            page_token=request.page_token,
        )
        return md_pb2.ListAlertsResponse(
            signals=[messages.trade_signal_to_pb(r) for r in page.records], next_page_token=page.next_page_token
        )

    async def GetStatus(self, request: md_pb2.GetStatusRequest, context: Context) -> md_pb2.GetStatusResponse:
        dependencies, writers = await asyncio.gather(self._status.check(), self._status.writers())
        reply = md_pb2.GetStatusResponse(
            mode=messages.MODE_TO_PB[self._mode],
            dependencies=[messages.dependency_to_pb(d) for d in dependencies],
            version=self._version,
            exchanges=self._exchange_names,
            components=[messages.component_to_pb(c) for c in self._status.components()],
            uptime_seconds=self._status.uptime_s(),
            venues=[messages.venue_to_pb(v) for v in self._status.venues()],
            writers=[messages.writer_to_pb(w) for w in writers],
        )
        readings = self._status.readings
        if readings.hub is not None:
            reply.streams.CopyFrom(messages.hub_to_pb(readings.hub()))
        if readings.ingest is not None:
            pending = readings.pending_price_updates() if readings.pending_price_updates is not None else 0
            reply.ingest.CopyFrom(messages.ingest_to_pb(readings.ingest(), pending))
        return reply


class IngestServicer(ingest_service_pb2_grpc.IngestServiceServicer):
    def __init__(self, *, ingestion: Ingestion) -> None:
        self._ingestion = ingestion

    @translates_errors
    async def IngestPrices(
        self, request: ingest_service_pb2.IngestPricesRequest, context: Context
    ) -> ingest_service_pb2.IngestPricesResponse:
        # The caller's deadline (capped like every call's) goes down to the insert: a batch the caller gave up
        # on is not started, and a stalled PostgreSQL does not commit it later (Ingestion.ingest).
        remaining = context.time_remaining()
        timeout_s = DEFAULT_MAX_CALL_S if remaining is None else min(remaining, DEFAULT_MAX_CALL_S)
        if timeout_s <= 0:
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed; nothing was stored")
        result = await self._ingestion.ingest(
            [messages.raw_feed(feed) for feed in request.feeds],
            worker_id=request.worker_id,
            batch_id=request.batch_id,
            timeout_s=timeout_s,
        )
        return messages.ingest_result_to_pb(result)


class KeyServicer(key_service_pb2_grpc.KeyServiceServicer):
    def __init__(self, *, authenticate: KeyAuthenticator) -> None:
        self._authenticate = authenticate

    @translates_errors
    async def AuthenticateKey(
        self, request: key_service_pb2.AuthenticateKeyRequest, context: Context
    ) -> key_service_pb2.AuthenticateKeyResponse:
        record = await self._authenticate(request.key)
        if record is None:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked API key")
        return key_service_pb2.AuthenticateKeyResponse(api_key=messages.api_key_to_pb(record))
