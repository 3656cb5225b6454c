"""Stream events on the wire between the core's publishers and its subscribers: ``StreamEvent`` bytes.

The ``channel`` inside an event is the explicit public name
(``candles:coinbase:BTC-USD:1h``); ``seq`` is left 0 here and set by the
subscriber side from the sequence the publisher script assigned. The payload
messages come from :mod:`core.codec.messages`, so an event carries exactly
what a read of the same record answers.
"""

from __future__ import annotations

from core.codec.messages import candle_to_pb, fill_macd_v, fill_price_feed, fill_trade_signal
from core.codec.timestamps import set_ms
from core.domain.candles import Candle
from core.domain.channels import Channel, ChannelFamily, explicit_name
from core.domain.prices import Tick
from core.services.indicators import AlertRecord, IndicatorReading
from perseus.marketdata.v1 import stream_service_pb2


def price_channel(tick: Tick) -> Channel:
    return Channel(ChannelFamily.PRICES, tick.source, tick.symbol, None)


def candle_channel(candle: Candle) -> Channel:
    return Channel(ChannelFamily.CANDLES, candle.exchange, candle.symbol, candle.timeframe)


def signal_channel(record: AlertRecord) -> Channel:
    return Channel(ChannelFamily.SIGNALS, record.exchange, record.symbol, record.timeframe)


def indicator_channel(reading: IndicatorReading) -> Channel:
    return Channel(ChannelFamily.INDICATORS, reading.exchange, reading.symbol, reading.timeframe)


def indicator_event(reading: IndicatorReading, *, now_ms: int, channel: Channel | None = None) -> bytes:
    """An ``indicator_update``: the MacdV message of a read (internals included; the gateways project it).
    ``channel``: the reading's :func:`indicator_channel`, when the caller has it already."""
    event = stream_service_pb2.StreamEvent(channel=explicit_name(channel or indicator_channel(reading)))
    fill_macd_v(event.indicator_update, reading)
    set_ms(event.publish_time, now_ms)
    return event.SerializeToString()


def price_event(tick: Tick, *, now_ms: int, traceparent: str = "", channel: Channel | None = None) -> bytes:
    """The event of one tick: built field by field, it is on the ingest hot path. ``traceparent``: the span
    that publishes it, when traces are on (internal: never in a public projection). ``channel``: another
    stream than the tick's own that carries it too (``prices:all:…``)."""
    event = stream_service_pb2.StreamEvent(channel=explicit_name(channel or price_channel(tick)))
    fill_price_feed(event.price_update, tick)
    set_ms(event.publish_time, now_ms)
    if traceparent:
        event.traceparent = traceparent
    return event.SerializeToString()


_CHANNEL_TAG = 0x0A  # StreamEvent.channel: field 1, length-delimited; serialized first (fields go in number order)


def rechannel(payload: bytes, channel: Channel) -> bytes:
    """``payload`` (a serialized ``StreamEvent``) on another stream: its ``channel`` field replaced, the rest
    as is. A byte splice, not a parse: one tick on two more streams must not cost two more encodings."""
    name = explicit_name(channel).encode()
    if len(name) > 0x7F or not payload or payload[0] != _CHANNEL_TAG or payload[1] > 0x7F:
        event = stream_service_pb2.StreamEvent.FromString(payload)
        event.channel = name.decode()
        return event.SerializeToString()
    return bytes((_CHANNEL_TAG, len(name))) + name + payload[2 + payload[1] :]


def candle_event(candle: Candle, *, exchange_id: int, now_ms: int) -> bytes:
    event = stream_service_pb2.StreamEvent(
        channel=explicit_name(candle_channel(candle)),
        candle_close=candle_to_pb(candle, exchange_id=exchange_id),
    )
    set_ms(event.publish_time, now_ms)
    return event.SerializeToString()


def signal_event(record: AlertRecord, *, now_ms: int) -> bytes:
    event = stream_service_pb2.StreamEvent(channel=explicit_name(signal_channel(record)))
    fill_trade_signal(event.trade_signal, record)
    set_ms(event.publish_time, now_ms)
    return event.SerializeToString()
