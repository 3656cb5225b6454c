"""The SDK's typed REST objects: every public field of what the gateway serves, decoded exactly, and no more."""

from __future__ import annotations

import dataclasses
import datetime as dt
import types
from decimal import Decimal
from typing import Any, get_args, get_type_hints

import pytest

from common.projection import public_schema
from gateways.rest.app import OPERATIONS
from perseus_sdk import models
from perseus_sdk.models import Candle, ConsensusPrice, DecodeError, Exchange, TradeSignal, decode, decode_all

JSON_TYPE = {
    str: "string",
    Decimal: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dt.datetime: "string",
}


def _json_type(hint: Any) -> str:
    return "array" if hint == tuple[str, ...] else JSON_TYPE[hint]


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.name)
def test_each_model_holds_exactly_the_public_fields_its_route_serves(operation: Any) -> None:
    schema = public_schema(operation.data)
    model = getattr(models, operation.data.name)
    hints = get_type_hints(model)
    assert [f.name for f in dataclasses.fields(model)] == list(schema["properties"])
    for name, prop in schema["properties"].items():
        nullable = "anyOf" in prop
        hint = hints[name]
        allows_none = isinstance(hint, types.UnionType) and type(None) in get_args(hint)
        assert allows_none == nullable, f"{model.__name__}.{name}"
        value = hint if not allows_none else next(a for a in get_args(hint) if a is not type(None))
        assert _json_type(value) == (prop["anyOf"][0] if nullable else prop)["type"], f"{model.__name__}.{name}"


CANDLE = {
    "exchange": "sim",
    "symbol": "BTC-USD",
    "timeframe": "1m",
    "timestamp": "2026-12-01T10:00:00.123456789Z",
    "open": "0.1",
    "high": "0.30000000000000004",
    "low": "0.1",
    "close": "0.2",
    "volume": "12.000",
}


def test_prices_stay_exact_decimals_and_times_aware_utc() -> None:
    candle = decode(Candle, CANDLE)
    assert candle.high == Decimal("0.30000000000000004") and str(candle.volume) == "12.000"
    assert candle.open + candle.close == Decimal("0.3")  # no binary float on the way
    assert candle.timestamp == dt.datetime(2026, 12, 1, 10, 0, 0, 123456, tzinfo=dt.UTC)


def test_fields_a_newer_gateway_adds_are_ignored_and_nulls_kept() -> None:
    exchange = decode(
        Exchange,
        {
            "name": "sim",
            "display_name": "Sim",
            "status": None,
            "simulated": True,
            "last_heartbeat_time": None,
            "region": "eu-west",
        },
    )
    assert exchange == Exchange("sim", "Sim", None, True, None)
    signal = decode(
        TradeSignal,
        {
            "symbol": "BTC-USD",
            "exchange": "sim",
            "timeframe": "1w",
            "signal_type": "zero_cross",
            "direction": "bullish",
            "strength": "extreme",
            "price": "101.5",
            "timestamp": "2026-12-01T10:00:00Z",
        },
    )
    assert signal.timeframe == "1w" and signal.price == Decimal("101.5")  # an enum value this SDK does not know


def test_lists_become_tuples_so_the_objects_hash() -> None:
    consensus = decode_all(
        ConsensusPrice,
        [
            {
                "symbol": "BTC-USD",
                "price": "2",
                "median": "2",
                "mean": "2.5",
                "std_dev": "0.5",
                "num_sources": 2,
                "sources": ["coinbase", "kraken"],
                "timestamp": "2026-12-01T10:00:00Z",
            }
        ],
    )
    assert consensus[0].sources == ("coinbase", "kraken") and len({consensus[0], consensus[0]}) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"close": None}, "Candle.close"),
        ({"close": 0.2}, "Candle.close"),  # a float would already be rounded
        ({"close": "n/a"}, "Candle.close"),
        ({"timestamp": "yesterday"}, "Candle.timestamp"),
        ({"exchange": 7}, "Candle.exchange"),
    ],
)
def test_a_known_field_of_the_wrong_type_is_a_decode_error(change: dict[str, object], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode(Candle, {**CANDLE, **change})


def test_a_missing_field_or_a_non_object_is_a_decode_error() -> None:
    with pytest.raises(DecodeError, match=r"Candle\.volume: missing"):
        decode(Candle, {k: v for k, v in CANDLE.items() if k != "volume"})
    with pytest.raises(DecodeError, match="expected a JSON array"):
        decode_all(Candle, CANDLE)
    with pytest.raises(DecodeError, match="expected a JSON object"):
        decode_all(Candle, [1])
