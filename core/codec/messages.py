"""Conversions between domain records and protobuf messages (no logic beyond mapping)."""

from __future__ import annotations

from datetime import datetime

from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from core.adapters.alert_store import fill_trade_signal
from core.adapters.apikeys import ApiKeyRecord, KeyTier
from core.codec.events import TIMEFRAME_TO_PB
from core.domain.consensus import Consensus
from core.domain.errors import InvalidArgument
from core.domain.models import DependencyHealth, Exchange, Symbol
from core.domain.prices import RawFeed, decimal_str
from core.domain.signals import Stage, Zone
from core.domain.timeframes import TIMEFRAMES, Timeframe
from core.services.indicator_queries import IndicatorReading
from core.services.indicators import AlertRecord
from core.services.ingestion import IngestResult
from core.services.price_queries import LatestQuote, PriceBucket
from core.services.status import ComponentHealth
from core.settings import Mode
from perseus.marketdata.v1 import (
    common_pb2,
    indicators_pb2,
    ingest_service_pb2,
    key_service_pb2,
    market_data_service_pb2,
    market_pb2,
    prices_pb2,
    signals_pb2,
)

MODE_TO_PB = {
    Mode.EXCHANGE: common_pb2.RUNTIME_MODE_EXCHANGE,
    Mode.PW_HOST: common_pb2.RUNTIME_MODE_PW_HOST,
}

STAGE_TO_PB = {s: indicators_pb2.MomentumStage.Value(f"MOMENTUM_STAGE_{s.name}") for s in Stage}
ZONE_TO_PB = {z: indicators_pb2.ValueZone.Value(f"VALUE_ZONE_{z.name}") for z in Zone}

TIER_TO_PB = {
    KeyTier.FREE: key_service_pb2.KEY_TIER_FREE,
    KeyTier.PRO: key_service_pb2.KEY_TIER_PRO,
    KeyTier.INTERNAL: key_service_pb2.KEY_TIER_INTERNAL,
    KeyTier.ADMIN: key_service_pb2.KEY_TIER_ADMIN,
}


def timestamp(value: datetime | None) -> Timestamp | None:
    if value is None:
        return None
    ts = Timestamp()
    ts.FromDatetime(value)
    return ts


def exchange_to_pb(exchange: Exchange) -> market_pb2.Exchange:
    return market_pb2.Exchange(
        id=exchange.id,
        name=exchange.name,
        display_name=exchange.display_name,
        status=market_pb2.EXCHANGE_STATUS_ONLINE if exchange.online else market_pb2.EXCHANGE_STATUS_OFFLINE,
        simulated=exchange.simulated,
        last_heartbeat_time=timestamp(exchange.last_heartbeat),
    )


def symbol_to_pb(symbol: Symbol) -> market_pb2.Symbol:
    return market_pb2.Symbol(
        id=symbol.id,
        exchange_id=symbol.exchange_id,
        exchange=symbol.exchange,
        symbol=symbol.symbol,
        base=symbol.base,
        quote=symbol.quote,
        active=symbol.active,
    )


def dependency_to_pb(dep: DependencyHealth) -> market_data_service_pb2.DependencyStatus:
    return market_data_service_pb2.DependencyStatus(
        name=dep.name,
        state=market_data_service_pb2.DEPENDENCY_STATE_UP if dep.up else market_data_service_pb2.DEPENDENCY_STATE_DOWN,
        detail=dep.detail,
        latency_ms=dep.latency_ms,
    )


def component_to_pb(component: ComponentHealth) -> market_data_service_pb2.ComponentStatus:
    return market_data_service_pb2.ComponentStatus(
        name=component.name,
        state=market_data_service_pb2.COMPONENT_STATE_UP
        if component.up
        else market_data_service_pb2.COMPONENT_STATE_DEGRADED,
        detail=component.detail,
        restarts=component.restarts,
    )


def api_key_to_pb(record: ApiKeyRecord) -> key_service_pb2.ApiKey:
    limits = record.limits
    return key_service_pb2.ApiKey(
        id=record.id,
        name=record.name,
        tier=TIER_TO_PB[record.tier],
        rate_limit_per_minute=limits.requests_per_minute,
        max_connections=limits.max_ws_connections,
        prefix=record.prefix,
        create_time=timestamp(record.created_at),
    )


def timestamp_ms(message: Message, field: str) -> int | None:
    if not message.HasField(field):
        return None
    value: Timestamp = getattr(message, field)
    return value.seconds * 1000 + value.nanos // 1_000_000


def raw_feed(feed: prices_pb2.PriceFeed) -> RawFeed:
    return RawFeed(
        symbol=feed.symbol,
        price=feed.price,
        volume=feed.volume,
        source=feed.source,
        ts_ms=timestamp_ms(feed, "timestamp"),
        bid=feed.bid if feed.HasField("bid") else None,
        ask=feed.ask if feed.HasField("ask") else None,
        exchange_ts_ms=timestamp_ms(feed, "exchange_timestamp"),
    )


def ingest_result_to_pb(result: IngestResult) -> ingest_service_pb2.IngestPricesResponse:
    if not result.errors:
        status = ingest_service_pb2.INGEST_STATUS_SUCCESS
    elif result.ingested:
        status = ingest_service_pb2.INGEST_STATUS_PARTIAL
    else:
        status = ingest_service_pb2.INGEST_STATUS_FAILED
    return ingest_service_pb2.IngestPricesResponse(
        status=status,
        ingested=result.ingested,
        failed=result.failed,
        errors=[ingest_service_pb2.FeedError(index=e.index, field=e.field, reason=e.reason) for e in result.errors],
    )


TIMEFRAME_FROM_PB = {number: timeframe for timeframe, number in TIMEFRAME_TO_PB.items()}


def timeframe_from_pb(value: int, *, field: str) -> Timeframe | None:
    """The timeframe of an enum number; None for TIMEFRAME_UNSPECIFIED (the caller's default)."""
    if value == common_pb2.TIMEFRAME_UNSPECIFIED:
        return None
    if value not in TIMEFRAME_FROM_PB:
        raise InvalidArgument(f"unknown {field} {value}; expected one of {', '.join(TIMEFRAMES)}")
    return TIMEFRAME_FROM_PB[value]


def timestamp_from_ms(ms: int) -> Timestamp:
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


def latest_price_to_pb(quote: LatestQuote) -> prices_pb2.LatestPrice:
    return prices_pb2.LatestPrice(
        symbol=quote.symbol,
        price=decimal_str(quote.price),
        volume=decimal_str(quote.volume),
        source=quote.source,
        timestamp=timestamp_from_ms(quote.ts_ms),
        staleness_ms=quote.staleness_ms,
    )


def price_bucket_to_pb(bucket: PriceBucket) -> prices_pb2.PriceBucket:
    return prices_pb2.PriceBucket(
        timestamp=timestamp_from_ms(bucket.open_ms),
        open=decimal_str(bucket.open),
        high=decimal_str(bucket.high),
        low=decimal_str(bucket.low),
        close=decimal_str(bucket.close),
        volume=decimal_str(bucket.volume),
        num_feeds=bucket.num_feeds,
    )


def consensus_to_pb(consensus: Consensus) -> prices_pb2.ConsensusPrice:
    return prices_pb2.ConsensusPrice(
        symbol=consensus.symbol,
        price=decimal_str(consensus.price),
        median=decimal_str(consensus.median),
        mean=decimal_str(consensus.mean),
        std_dev=decimal_str(consensus.std_dev),
        num_sources=len(consensus.sources),
        sources=consensus.sources,
        timestamp=timestamp_from_ms(consensus.ts_ms),
    )


def macd_v_to_pb(reading: IndicatorReading) -> indicators_pb2.MacdV:
    """Every field, internals included (internal callers only; the gateways project the public ones)."""
    value, params = reading.value, reading.params
    return indicators_pb2.MacdV(
        exchange=reading.exchange,
        symbol=reading.symbol,
        timeframe=TIMEFRAME_TO_PB[reading.timeframe],
        timestamp=timestamp_from_ms(reading.timeframe.close_time(value.open_time)),
        macd_v=value.macd_v,
        signal=value.signal,
        histogram=value.histogram,
        stage=STAGE_TO_PB[value.stage],
        zone=ZONE_TO_PB[value.zone],
        fast_ema=value.fast_ema,
        slow_ema=value.slow_ema,
        atr=value.atr,
        fast_period=params.fast,
        slow_period=params.slow,
        signal_period=params.signal,
        atr_period=params.atr,
        exchange_id=reading.exchange_id,
        symbol_id=reading.symbol_id,
    )


def trade_signal_to_pb(record: AlertRecord) -> signals_pb2.TradeSignal:
    return fill_trade_signal(signals_pb2.TradeSignal(), record)
