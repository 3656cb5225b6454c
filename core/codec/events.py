"""Stream events on the wire between the core's publishers and its subscribers: ``StreamEvent`` bytes.

The ``channel`` inside an event is the explicit public name
(``candles:coinbase:BTC-USD:1h``); ``seq`` is left 0 here and set by the
subscriber side from the sequence the publisher script assigned. The payload
messages come from :mod:`core.codec.messages`, so an event carries exactly
what a read of the same record answers.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from google.protobuf.timestamp_pb2 import Timestamp

from core.codec.messages import (
    STAGE_TO_PB,
    TIMEFRAME_TO_PB,
    ZONE_TO_PB,
    candle_to_pb,
    fill_macd_v,
    fill_price_feed,
    fill_trade_signal,
)
from core.codec.timestamps import set_ms
from core.domain.candles import Candle
from core.domain.channels import Channel, ChannelFamily, explicit_name
from core.domain.indicators import MacdVParams
from core.domain.prices import Tick
from core.domain.timeframes import Timeframe
from core.services.indicators import AlertRecord, IndicatorReading
from perseus.marketdata.v1 import indicators_pb2, stream_service_pb2


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


# MacdV fields 5-12 when none is zero (proto3 leaves a zero out): each field's tag byte, then its value.
_MIDDLE = struct.Struct("<BdBdBdBBBBBdBdBd")
_STAGE_BYTE = {stage: number for stage, number in STAGE_TO_PB.items() if 0 < number < 0x80}  # one-byte varints
_ZONE_BYTE = {zone: number for zone, number in ZONE_TO_PB.items() if 0 < number < 0x80}
_INDICATOR_UPDATE_TAG = b"\x3a"  # StreamEvent.indicator_update: field 7, length-delimited
_TIMESTAMPS_KEPT = 1_024  # close times whose encoded field is kept (a wave has one per timeframe)


class _SeriesParts:
    """What every ``indicator_update`` of one series shares, encoded once."""

    __slots__ = ("channel", "exchange_id", "head", "params", "symbol_id", "tail")

    def __init__(self, reading: IndicatorReading) -> None:
        params = reading.params
        self.exchange_id, self.symbol_id, self.params = reading.exchange_id, reading.symbol_id, params
        self.channel = stream_service_pb2.StreamEvent(
            channel=explicit_name(indicator_channel(reading))
        ).SerializeToString()
        self.head = indicators_pb2.MacdV(
            exchange=reading.exchange, symbol=reading.symbol, timeframe=TIMEFRAME_TO_PB[reading.timeframe]
        ).SerializeToString()  # fields 1-3
        self.tail = indicators_pb2.MacdV(
            fast_period=params.fast,
            slow_period=params.slow,
            signal_period=params.signal,
            atr_period=params.atr,
            exchange_id=reading.exchange_id,
            symbol_id=reading.symbol_id,
        ).SerializeToString()  # fields 13-18

    def fits(self, reading: IndicatorReading) -> bool:
        params: MacdVParams = reading.params
        return (
            reading.exchange_id == self.exchange_id
            and reading.symbol_id == self.symbol_id
            and (params is self.params or params == self.params)
        )


class IndicatorEvents:
    """``indicator_update`` events of many readings, each byte for byte what :func:`indicator_event` gives.

    A close wave publishes one per ready close (6,000 for 1,000 symbols x 6 timeframes), so the parts that do
    not change between closes are encoded once: per series the event's channel, the MacdV's names and
    timeframe (fields 1-3) and its periods and ids (13-18); per call the publish time; per close time its
    timestamp. Serialized protobuf puts fields in number order and a message field is its tag, its length and
    its bytes, so the event is those parts joined around the reading's own fields (4-12), which are packed
    with one ``struct`` call when none is zero, and by protobuf otherwise (a zero is left out; -0.0 too).
    ``tests/unit/test_indicator_events.py`` holds the result to :func:`indicator_event`.
    """

    __slots__ = ("_series", "_timestamps")

    def __init__(self) -> None:
        self._series: dict[tuple[str, str, Timeframe], _SeriesParts] = {}  # as big as the set of series
        self._timestamps: dict[int, bytes] = {}

    def encode(self, readings: Sequence[IndicatorReading], *, now_ms: int) -> list[bytes]:
        published = bytearray(stream_service_pb2.StreamEvent(publish_time=_timestamp(now_ms)).SerializeToString())
        published += _INDICATOR_UPDATE_TAG
        prefix = bytes(published)
        series, timestamps, pack = self._series, self._timestamps, _MIDDLE.pack
        stage_byte, zone_byte = _STAGE_BYTE, _ZONE_BYTE
        out = []
        for reading in readings:
            parts = series.get((reading.exchange, reading.symbol, reading.timeframe))
            if parts is None or not parts.fits(reading):
                parts = series[reading.exchange, reading.symbol, reading.timeframe] = _SeriesParts(reading)
            value = reading.value
            close_ms = reading.timeframe.close_time(value.open_time)
            timestamp = timestamps.get(close_ms)
            if timestamp is None:
                if len(timestamps) >= _TIMESTAMPS_KEPT:
                    timestamps.clear()
                timestamp = timestamps[close_ms] = indicators_pb2.MacdV(
                    timestamp=_timestamp(close_ms)
                ).SerializeToString()
            stage, zone = stage_byte.get(value.stage), zone_byte.get(value.zone)
            if (
                value.macd_v
                and value.signal
                and value.histogram
                and value.fast_ema
                and value.slow_ema
                and value.atr
                and stage is not None
                and zone is not None
            ):
                fields = pack(
                    0x29, value.macd_v, 0x31, value.signal, 0x39, value.histogram, 0x40, stage, 0x48, zone,
                    0x51, value.fast_ema, 0x59, value.slow_ema, 0x61, value.atr,
                )  # fmt: skip
            else:
                fields = indicators_pb2.MacdV(
                    macd_v=value.macd_v,
                    signal=value.signal,
                    histogram=value.histogram,
                    stage=STAGE_TO_PB[value.stage],
                    zone=ZONE_TO_PB[value.zone],
                    fast_ema=value.fast_ema,
                    slow_ema=value.slow_ema,
                    atr=value.atr,
                ).SerializeToString()
            size = len(parts.head) + len(timestamp) + len(fields) + len(parts.tail)
            out.append(b"".join((parts.channel, prefix, _varint(size), parts.head, timestamp, fields, parts.tail)))
        return out


def _timestamp(ms: int) -> Timestamp:
    return set_ms(Timestamp(), ms)


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


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
