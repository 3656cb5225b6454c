"""Stream events on the wire between the core's publishers and its subscribers: ``StreamEvent`` bytes.

The ``channel`` inside an event is the explicit public name
(``candles:coinbase:BTC-USD:1h``); ``seq`` is left 0 here and set by the
subscriber side from the sequence the publisher script assigned.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from core.domain.candles import Candle
from core.domain.channels import Channel, ChannelFamily
from core.domain.prices import Tick, decimal_str
from core.domain.timeframes import Timeframe
from perseus.marketdata.v1 import candles_pb2, common_pb2, prices_pb2, stream_service_pb2

TIMEFRAME_TO_PB = {tf: common_pb2.Timeframe.Value(f"TIMEFRAME_{tf.value.upper()}") for tf in Timeframe}


def ms_timestamp(ms: int) -> Timestamp:
    return Timestamp(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def set_ms(target: Timestamp, ms: int) -> None:
    """Fill a Timestamp field in place (much cheaper than building one and copying it in)."""
    target.seconds = ms // 1000
    target.nanos = (ms % 1000) * 1_000_000


def explicit_name(channel: Channel) -> str:
    parts = [channel.family.value, channel.exchange or "", channel.symbol]
    if channel.timeframe is not None:
        parts.append(channel.timeframe.value)
    return ":".join(parts)


def price_channel(tick: Tick) -> Channel:
    return Channel(ChannelFamily.PRICES, tick.source, tick.symbol, None)


def candle_channel(candle: Candle) -> Channel:
    return Channel(ChannelFamily.CANDLES, candle.exchange, candle.symbol, candle.timeframe)


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


def candle_to_pb(candle: Candle, *, exchange_id: int = 0) -> candles_pb2.Candle:
    return candles_pb2.Candle(
        exchange=candle.exchange,
        symbol=candle.symbol,
        timeframe=TIMEFRAME_TO_PB[candle.timeframe],
        timestamp=ms_timestamp(candle.open_time),
        open=decimal_str(candle.open),
        high=decimal_str(candle.high),
        low=decimal_str(candle.low),
        close=decimal_str(candle.close),
        volume=decimal_str(candle.volume),
        is_synthetic=candle.is_synthetic,
        sequence_num=candle.sequence_num,
        exchange_id=exchange_id,
    )


def price_event(tick: Tick, *, now_ms: int) -> bytes:
    """The event of one tick: built field by field, it is on the ingest hot path."""
    event = stream_service_pb2.StreamEvent(channel=explicit_name(price_channel(tick)))
    fill_price_feed(event.price_update, tick)
    set_ms(event.publish_time, now_ms)
    return event.SerializeToString()


def candle_event(candle: Candle, *, exchange_id: int, now_ms: int) -> bytes:
    return stream_service_pb2.StreamEvent(
        channel=explicit_name(candle_channel(candle)),
        candle_close=candle_to_pb(candle, exchange_id=exchange_id),
        publish_time=ms_timestamp(now_ms),
    ).SerializeToString()
