"""The public projection: only PUBLIC fields, zero values kept, public spellings of enums and times."""

from __future__ import annotations

import itertools

import orjson
import pytest
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message

from common.projection import is_public, public_schema, timestamp_text, to_public
from perseus.marketdata.v1 import (
    candles_pb2,
    common_pb2,
    indicators_pb2,
    market_data_service_pb2,
    market_pb2,
    prices_pb2,
    signals_pb2,
    stream_service_pb2,
)

MODULES = (
    candles_pb2,
    indicators_pb2,
    market_pb2,
    prices_pb2,
    signals_pb2,
    market_data_service_pb2,
    stream_service_pb2,
)
MESSAGES = [
    getattr(module, name)
    for module in MODULES
    for name in module.DESCRIPTOR.message_types_by_name
    if not module.DESCRIPTOR.message_types_by_name[name].GetOptions().map_entry
]
_counter = itertools.count(1_000_003)


def canary_fill(message: Message, canaries: set[str], depth: int = 0) -> None:
    """Set every field (oneofs: the last member) to a unique value; internal ones go into ``canaries``."""
    for field in message.DESCRIPTOR.fields:
        internal = not is_public(field)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                key = f"canary-key-{next(_counter)}"
                getattr(message, field.name)[key] = _scalar(field.message_type.fields_by_name["value"], canaries, False)
                if internal:
                    canaries.add(key)
                continue
            if depth > 3:
                continue
            child = getattr(message, field.name).add() if field.is_repeated else getattr(message, field.name)
            if field.message_type.full_name == "google.protobuf.Timestamp":
                child.seconds = next(_counter) * 7
                if internal:
                    canaries.add(timestamp_text(child.seconds, 0)[:19])
                continue
            inner: set[str] = set()
            canary_fill(child, inner, depth + 1)
            canaries |= inner
            if internal:  # a whole internal message: its public values must not show either
                canaries.update(_all_values(child))
            continue
        value = _scalar(field, canaries, internal)
        if field.is_repeated:
            getattr(message, field.name).append(value)
        else:
            setattr(message, field.name, value)


def _scalar(field: FieldDescriptor, canaries: set[str], internal: bool) -> object:
    n = next(_counter)
    if field.type == FieldDescriptor.TYPE_STRING:
        value: object = f"canary-{n}"
    elif field.type == FieldDescriptor.TYPE_BOOL:
        return True  # a bool cannot carry a unique value; the key check covers it
    elif field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values[-1].number
    elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
        value = n + 0.25
    elif field.type == FieldDescriptor.TYPE_BYTES:
        value = f"canary-{n}".encode()
    else:
        value = n
    if internal:
        canaries.add(str(value) if not isinstance(value, bytes) else value.hex())
    return value


def _all_values(message: Message) -> set[str]:
    return {str(v) for _, v in message.ListFields() if isinstance(v, str | int | float) and not isinstance(v, bool)}


@pytest.mark.parametrize("message_type", MESSAGES, ids=lambda m: m.DESCRIPTOR.name)
def test_no_internal_value_or_name_reaches_the_projection(message_type: type[Message]) -> None:
    message = message_type()
    canaries: set[str] = set()
    canary_fill(message, canaries)
    body = orjson.dumps(to_public(message)).decode()
    leaked = sorted(c for c in canaries if c in body)
    assert not leaked, f"{message_type.DESCRIPTOR.name} leaks {leaked}: {body}"
    _assert_only_public_names(message.DESCRIPTOR, to_public(message))


def _assert_only_public_names(descriptor: Descriptor, body: dict[str, object]) -> None:
    assert set(body) == {f.name for f in descriptor.fields if is_public(f)}


def test_zero_values_of_public_fields_stay() -> None:
    body = to_public(prices_pb2.LatestPrice(symbol="BTC-USD"))
    assert body["staleness_ms"] == 0
    assert body["price"] == ""
    assert body["timestamp"] is None
    assert to_public(market_pb2.Exchange(name="sim"))["simulated"] is False


def test_enums_are_spelled_without_their_prefix() -> None:
    candle = candles_pb2.Candle(timeframe=common_pb2.TIMEFRAME_15M)
    signal = signals_pb2.TradeSignal(
        direction=signals_pb2.SIGNAL_DIRECTION_BEARISH, strength=signals_pb2.SIGNAL_STRENGTH_MODERATE
    )
    assert to_public(candle)["timeframe"] == "15m"
    assert (to_public(signal)["direction"], to_public(signal)["strength"]) == ("bearish", "moderate")
    assert to_public(candles_pb2.Candle())["timeframe"] is None


@pytest.mark.parametrize(
    ("seconds", "nanos", "text"),
    [
        (0, 0, "1970-01-01T00:00:00Z"),
        (1_764_656_460, 0, "2025-12-02T06:21:00Z"),
        (5, 120_000_000, "1970-01-01T00:00:05.120Z"),
        (5, 120_500_000, "1970-01-01T00:00:05.120500Z"),
        (5, 1, "1970-01-01T00:00:05.000000001Z"),
        # either side of the fast spelling's range (years 1000-9999; datetime's strftime outside it)
        (-30_610_224_001, 0, "999-12-31T23:59:59Z"),
        (-30_610_224_000, 0, "1000-01-01T00:00:00Z"),
        (-62_135_596_800, 0, "1-01-01T00:00:00Z"),
        (253_402_300_799, 999_000_000, "9999-12-31T23:59:59.999Z"),
        (-1, 0, "1969-12-31T23:59:59Z"),
    ],
)
def test_timestamps_are_iso_utc(seconds: int, nanos: int, text: str) -> None:
    assert timestamp_text(seconds, nanos) == text


def test_a_projection_reads_each_message_afresh() -> None:
    """The compiled projector (one per type, a generated function) and its cached time spellings keep
    nothing of one message for the next: same type, other values, other body."""
    first, second = candles_pb2.Candle(symbol="BTC-USD", open="1"), candles_pb2.Candle(symbol="ETH-USD", close="2")
    first.timestamp.FromMilliseconds(1_735_689_600_000)
    second.timestamp.FromMilliseconds(1_735_689_660_250)
    assert [to_public(first), to_public(second), to_public(first)] == [
        {"exchange": "", "symbol": "BTC-USD", "timeframe": None, "timestamp": "2025-01-01T00:00:00Z", "open": "1",
         "high": "", "low": "", "close": "", "volume": ""},
        {"exchange": "", "symbol": "ETH-USD", "timeframe": None, "timestamp": "2025-01-01T00:01:00.250Z",
         "open": "", "high": "", "low": "", "close": "2", "volume": ""},
        {"exchange": "", "symbol": "BTC-USD", "timeframe": None, "timestamp": "2025-01-01T00:00:00Z", "open": "1",
         "high": "", "low": "", "close": "", "volume": ""},
    ]  # fmt: skip
    second.ClearField("timestamp")
    assert to_public(second)["timestamp"] is None


def test_prices_keep_every_digit() -> None:
    feed = prices_pb2.PriceFeed(price="67234.123456789012345678901234567890", volume="0.00000001")
    body = to_public(feed)
    assert (body["price"], body["volume"]) == ("67234.123456789012345678901234567890", "0.00000001")


@pytest.mark.parametrize("message_type", MESSAGES, ids=lambda m: m.DESCRIPTOR.name)
def test_schema_lists_exactly_the_public_fields(message_type: type[Message]) -> None:
    schema = public_schema(message_type.DESCRIPTOR)
    assert set(schema["properties"]) == {f.name for f in message_type.DESCRIPTOR.fields if is_public(f)}
    assert schema["additionalProperties"] is False
