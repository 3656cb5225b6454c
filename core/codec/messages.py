"""Conversions between domain records and protobuf messages (no logic beyond mapping).

The rpc layer answers with these; the stores keep candles as serialized
``Candle`` messages made here, and the event codec (:mod:`core.codec.events`)
fills its ``StreamEvent`` payloads with the same functions, so a candle or a
trade signal has one encoding whether it is read, stored or streamed. Fields
are filled in place where a message sits on a hot path (``fill_*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar, cast

from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper

from core.codec.timestamps import datetime_timestamp, ms_timestamp, set_ms, timestamp_ms
from core.domain.candles import Candle
from core.domain.consensus import Consensus
from core.domain.errors import InvalidArgument
from core.domain.keys import ApiKeyRecord, KeyTier
from core.domain.models import DependencyHealth, Exchange, Symbol, VenueHealth, VenueState
from core.domain.prices import RawFeed, Tick, decimal_str
from core.domain.signals import Direction, Stage, Strength, Zone
from core.domain.timeframes import TIMEFRAMES, Timeframe
from core.services.indicator_queries import CurrentSignal
from core.services.indicators import AlertRecord, IndicatorReading
from core.services.ingest_meter import IngestReading
from core.services.ingestion import IngestResult
from core.services.price_queries import LatestQuote, PriceBucket
from core.services.status import ComponentHealth, HubCounts, WriterHealth
from core.services.streams import RejectReason
from core.settings import Mode
from perseus.marketdata.v1 import (
    candles_pb2,
    common_pb2,
    indicators_pb2,
    ingest_service_pb2,
    key_service_pb2,
    market_data_service_pb2,
    market_pb2,
    prices_pb2,
    signals_pb2,
    stream_service_pb2,
)

_Key = TypeVar("_Key")
_Enum = TypeVar("_Enum", bound=int)


def enum_members(enum: type[_Enum], names: Mapping[_Key, str]) -> dict[_Key, _Enum]:
    """Each key's member of the proto enum ``enum``, by value name (an unknown name fails at import).

    protoc's .pyi declares a proto enum as an ``int`` subclass whose metaclass, ``EnumTypeWrapper``, gives
    ``Value()`` the return type ``int``: the number is a member of ``enum``, which the stubs cannot say.
    """
    wrapper = cast(EnumTypeWrapper, enum)
    return {key: cast(_Enum, wrapper.Value(name)) for key, name in names.items()}


TIMEFRAME_TO_PB = enum_members(common_pb2.Timeframe, {tf: f"TIMEFRAME_{tf.value.upper()}" for tf in Timeframe})
TIMEFRAME_FROM_PB: dict[int, Timeframe] = {number: timeframe for timeframe, number in TIMEFRAME_TO_PB.items()}

MODE_TO_PB = {
    Mode.EXCHANGE: common_pb2.RUNTIME_MODE_EXCHANGE,
    Mode.PW_HOST: common_pb2.RUNTIME_MODE_PW_HOST,
}

STAGE_TO_PB = enum_members(indicators_pb2.MomentumStage, {s: f"MOMENTUM_STAGE_{s.name}" for s in Stage})
ZONE_TO_PB = enum_members(indicators_pb2.ValueZone, {z: f"VALUE_ZONE_{z.name}" for z in Zone})
DIRECTION_TO_PB = enum_members(signals_pb2.SignalDirection, {d: f"SIGNAL_DIRECTION_{d.name}" for d in Direction})
STRENGTH_TO_PB = enum_members(signals_pb2.SignalStrength, {s: f"SIGNAL_STRENGTH_{s.name}" for s in Strength})
REJECT_REASON_TO_PB = enum_members(
    stream_service_pb2.RejectReason, {r: f"REJECT_REASON_{r.name}" for r in RejectReason}
)

TIER_TO_PB = {
    KeyTier.FREE: key_service_pb2.KEY_TIER_FREE,
    KeyTier.PRO: key_service_pb2.KEY_TIER_PRO,
    KeyTier.INTERNAL: key_service_pb2.KEY_TIER_INTERNAL,
    KeyTier.ADMIN: key_service_pb2.KEY_TIER_ADMIN,
}


def exchange_to_pb(exchange: Exchange) -> market_pb2.Exchange:
    return market_pb2.Exchange(
        id=exchange.id,
        name=exchange.name,
        display_name=exchange.display_name,
        status=market_pb2.EXCHANGE_STATUS_ONLINE if exchange.online else market_pb2.EXCHANGE_STATUS_OFFLINE,
        simulated=exchange.simulated,
        last_heartbeat_time=datetime_timestamp(exchange.last_heartbeat),
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


VENUE_STATE_TO_PB: dict[VenueState, market_data_service_pb2.VenueState] = {
    "connecting": market_data_service_pb2.VENUE_STATE_CONNECTING,
    "connected": market_data_service_pb2.VENUE_STATE_CONNECTED,
    "reconnecting": market_data_service_pb2.VENUE_STATE_RECONNECTING,
    "stopped": market_data_service_pb2.VENUE_STATE_STOPPED,
}


def venue_to_pb(venue: VenueHealth) -> market_data_service_pb2.VenueStatus:
    out = market_data_service_pb2.VenueStatus(exchange=venue.exchange, state=VENUE_STATE_TO_PB[venue.state])
    if venue.last_message_ms is not None:
        out.last_message_time.FromMilliseconds(venue.last_message_ms)
    return out


def hub_to_pb(counts: HubCounts) -> market_data_service_pb2.StreamHubStatus:
    return market_data_service_pb2.StreamHubStatus(sessions=counts.sessions, channels=counts.channels)


def ingest_to_pb(reading: IngestReading, pending: int) -> market_data_service_pb2.IngestRateStatus:
    out = market_data_service_pb2.IngestRateStatus(
        ticks_total=reading.ticks_total,
        ticks_per_second=reading.ticks_per_second,
        lag_ms=reading.lag_ms,
        pending_price_updates=pending,
    )
    if reading.last_stored_ms is not None:
        out.last_stored_time.FromMilliseconds(reading.last_stored_ms)
    return out


def writer_to_pb(writer: WriterHealth) -> market_data_service_pb2.WriterStatus:
    return market_data_service_pb2.WriterStatus(exchange=writer.exchange, leader=writer.leader, term=writer.term)


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
        create_time=datetime_timestamp(record.created_at),
    )


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
        trade_id=feed.trade_id if feed.HasField("trade_id") else None,
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


def timeframe_from_pb(value: int, *, field: str) -> Timeframe | None:
    """The timeframe of an enum number; None for TIMEFRAME_UNSPECIFIED (the caller's default)."""
    if value == common_pb2.TIMEFRAME_UNSPECIFIED:
        return None
    if value not in TIMEFRAME_FROM_PB:
        raise InvalidArgument(f"unknown {field} {value}; expected one of {', '.join(TIMEFRAMES)}")
    return TIMEFRAME_FROM_PB[value]


def latest_price_to_pb(quote: LatestQuote) -> prices_pb2.LatestPrice:
    return prices_pb2.LatestPrice(
        symbol=quote.symbol,
        price=decimal_str(quote.price),
        volume=decimal_str(quote.volume),
        source=quote.source,
        timestamp=ms_timestamp(quote.ts_ms),
        staleness_ms=quote.staleness_ms,
    )


def price_bucket_to_pb(bucket: PriceBucket) -> prices_pb2.PriceBucket:
    return prices_pb2.PriceBucket(
        timestamp=ms_timestamp(bucket.open_ms),
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
        timestamp=ms_timestamp(consensus.ts_ms),
    )


def macd_v_to_pb(reading: IndicatorReading) -> indicators_pb2.MacdV:
    """Every field, internals included (internal callers only; the gateways project the public ones)."""
    return fill_macd_v(indicators_pb2.MacdV(), reading)


def fill_macd_v(message: indicators_pb2.MacdV, reading: IndicatorReading) -> indicators_pb2.MacdV:
    """Field by field: every close of a wave publishes one (``indicator_update`` events)."""
    value, params = reading.value, reading.params
    message.exchange = reading.exchange
    message.symbol = reading.symbol
    message.timeframe = TIMEFRAME_TO_PB[reading.timeframe]
    set_ms(message.timestamp, reading.timeframe.close_time(value.open_time))
    message.macd_v = value.macd_v
    message.signal = value.signal
    message.histogram = value.histogram
    message.stage = STAGE_TO_PB[value.stage]
    message.zone = ZONE_TO_PB[value.zone]
    message.fast_ema = value.fast_ema
    message.slow_ema = value.slow_ema
    message.atr = value.atr
    message.fast_period = params.fast
    message.slow_period = params.slow
    message.signal_period = params.signal
    message.atr_period = params.atr
    message.exchange_id = reading.exchange_id
    message.symbol_id = reading.symbol_id
    return message


def current_signal_to_pb(current: CurrentSignal) -> signals_pb2.CurrentSignal:
    reading = current.reading
    message = signals_pb2.CurrentSignal(
        symbol=reading.symbol,
        exchange=reading.exchange,
        timeframe=TIMEFRAME_TO_PB[reading.timeframe],
        signal_type=current.signal_type,
        direction=DIRECTION_TO_PB[current.direction],
        strength=STRENGTH_TO_PB[current.strength],
        stage=STAGE_TO_PB[current.stage],
        price=decimal_str(current.price),
        exchange_id=reading.exchange_id,
        symbol_id=reading.symbol_id,
    )
    set_ms(message.timestamp, current.time_ms)
    return message


def candle_to_pb(candle: Candle, *, exchange_id: int = 0) -> candles_pb2.Candle:
    message = candles_pb2.Candle(
        exchange=candle.exchange,
        symbol=candle.symbol,
        timeframe=TIMEFRAME_TO_PB[candle.timeframe],
        open=decimal_str(candle.open),
        high=decimal_str(candle.high),
        low=decimal_str(candle.low),
        close=decimal_str(candle.close),
        volume=decimal_str(candle.volume),
        is_synthetic=candle.is_synthetic,
        sequence_num=candle.sequence_num,
        exchange_id=exchange_id,
    )
    set_ms(message.timestamp, candle.open_time)
    return message


def fill_price_feed(feed: prices_pb2.PriceFeed, tick: Tick) -> prices_pb2.PriceFeed:
    feed.symbol = tick.symbol
    feed.price = decimal_str(tick.price)
    feed.volume = decimal_str(tick.volume)
    feed.source = tick.source
    set_ms(feed.timestamp, tick.ts_ms)
    if tick.bid is not None:
        feed.bid = decimal_str(tick.bid)
    if tick.ask is not None:
        feed.ask = decimal_str(tick.ask)
    if tick.exchange_ts_ms:
        set_ms(feed.exchange_timestamp, tick.exchange_ts_ms)
    return feed


def fill_trade_signal(signal: signals_pb2.TradeSignal, record: AlertRecord) -> signals_pb2.TradeSignal:
    """Every field of the alert, internal ones included: the gateways project the public ones."""
    signal.id = record.id
    signal.symbol = record.symbol
    signal.exchange = record.exchange
    signal.timeframe = TIMEFRAME_TO_PB[record.timeframe]
    signal.signal_type = record.signal_type
    signal.direction = DIRECTION_TO_PB[record.direction]
    signal.strength = STRENGTH_TO_PB[record.strength]
    signal.price = decimal_str(record.price)
    set_ms(signal.timestamp, record.triggered_ms)
    signal.alert_type = record.alert_type
    signal.trigger_value = record.trigger_value
    signal.signal_delta = record.signal_delta
    signal.trigger_label = record.trigger_label
    signal.source_exchange_id = record.exchange_id
    return signal


def trade_signal_to_pb(record: AlertRecord) -> signals_pb2.TradeSignal:
    return fill_trade_signal(signals_pb2.TradeSignal(), record)
