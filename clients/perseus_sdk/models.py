"""The REST gateway's public JSON, typed: what :class:`~perseus_sdk.rest.RestClient` returns.

One frozen dataclass per object of the public contract, named as in the
gateway's OpenAPI spec (``/public/v1/openapi.json``) and holding every public
field under its JSON name. Decimal strings become :class:`~decimal.Decimal`
(exact, never a binary float), ISO-8601 times become aware UTC
:class:`~datetime.datetime`, lists become tuples (so the objects hash).

Why dataclasses and not the betterproto2 messages of ``perseus_sdk._generated``:
those mirror the gRPC contract, internal-only fields included (``is_synthetic``,
``sequence_num``, ``alert_type``…), which REST never sends; decoding into them
would hand callers fields that are always empty, enums as numbers where REST
speaks ``"1h"`` and ``"bullish"``, and prices as ``str``. These types are
exactly what the REST answer holds.

Enumerations (``timeframe``, ``direction``, ``strength``, ``status``) stay
``str`` and what the spec marks nullable is ``| None``: a value added to an
enumeration on the server then decodes on an older SDK instead of failing.
For the same reason decoding ignores fields it does not know. A field it
knows that is missing or of the wrong type is a broken contract and raises
:class:`DecodeError`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any, TypeVar, get_type_hints

__all__ = [
    "Candle",
    "ConsensusPrice",
    "CurrentSignal",
    "DecodeError",
    "Exchange",
    "LatestPrice",
    "MacdV",
    "PriceBucket",
    "PriceFeed",
    "Symbol",
    "TradeSignal",
    "decode",
    "decode_all",
]


@dataclass(frozen=True, slots=True)
class Exchange:
    name: str
    display_name: str
    status: str | None  # "online" | "offline"
    simulated: bool
    last_heartbeat_time: dt.datetime | None


@dataclass(frozen=True, slots=True)
class Symbol:
    exchange: str
    symbol: str  # canonical form, BTC-USD
    base: str
    quote: str
    active: bool


@dataclass(frozen=True, slots=True)
class Candle:
    exchange: str
    symbol: str
    timeframe: str | None  # "1m" "5m" "15m" "1h" "4h" "1d"
    timestamp: dt.datetime | None  # the open time
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@dataclass(frozen=True, slots=True)
class TradeSignal:
    """Each alert of ``RestClient.alerts`` (the signal history)."""

    symbol: str
    exchange: str
    timeframe: str | None
    signal_type: str
    direction: str | None  # "bullish" | "bearish"
    strength: str | None  # "weak" | "moderate" | "strong" | "extreme"
    price: Decimal
    timestamp: dt.datetime | None


@dataclass(frozen=True, slots=True)
class CurrentSignal:
    """``RestClient.signal``: the signal of the current MACD-V state, served as soon as the indicator is warm."""

    symbol: str
    exchange: str
    timeframe: str | None
    signal_type: str  # "momentum_state"
    direction: str | None  # "bullish" (MACD-V at or above its signal line) | "bearish"
    strength: str | None  # "weak" | "moderate" | "strong" | "extreme"
    stage: str | None  # "oversold" | "rebounding" | "rallying" | "overbought" | "retracing" | "reversing" | "ranging"
    price: Decimal  # the close of the last closed candle
    timestamp: dt.datetime | None  # that candle's close time


@dataclass(frozen=True, slots=True)
class MacdV:
    """``RestClient.indicator``: the public MACD-V of the last closed candle (never EMAs, ATR or periods)."""

    exchange: str
    symbol: str
    timeframe: str | None
    timestamp: dt.datetime | None  # the close time of the candle
    macd_v: float
    signal: float
    histogram: float
    stage: str | None
    zone: str | None  # "deep_negative" | "negative" | "neutral" | "positive" | "elevated" | "overbought"


@dataclass(frozen=True, slots=True)
class LatestPrice:
    symbol: str
    price: Decimal
    volume: Decimal
    source: str
    timestamp: dt.datetime | None
    staleness_ms: int


@dataclass(frozen=True, slots=True)
class PriceFeed:
    """One stored tick, as the tick export sends it."""

    symbol: str
    price: Decimal
    volume: Decimal
    source: str
    timestamp: dt.datetime | None
    bid: Decimal | None
    ask: Decimal | None
    exchange_timestamp: dt.datetime | None


@dataclass(frozen=True, slots=True)
class PriceBucket:
    timestamp: dt.datetime | None  # the bucket's start
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    num_feeds: int


@dataclass(frozen=True, slots=True)
class ConsensusPrice:
    symbol: str
    price: Decimal  # the median
    median: Decimal
    mean: Decimal
    std_dev: Decimal
    num_sources: int
    sources: tuple[str, ...]
    timestamp: dt.datetime | None


class DecodeError(ValueError):
    """The answer does not hold what the contract says it holds."""


M = TypeVar("M")


def decode(model: type[M], item: object) -> M:
    """``item`` (one JSON object) as ``model``: every field ``model`` declares, and nothing else read."""
    if not isinstance(item, Mapping):
        raise DecodeError(f"{model.__name__}: expected a JSON object, got {type(item).__name__}")
    values: dict[str, Any] = {}
    for name, read in _readers(model):
        if name not in item:
            raise DecodeError(f"{model.__name__}.{name}: missing")
        try:
            values[name] = read(item[name])
        except (TypeError, ValueError, ArithmeticError) as exc:  # decimal.InvalidOperation is an ArithmeticError
            raise DecodeError(f"{model.__name__}.{name}: {exc}") from None
    return model(**values)


def decode_all(model: type[M], items: object) -> list[M]:
    if not isinstance(items, list):
        raise DecodeError(f"list of {model.__name__}: expected a JSON array, got {type(items).__name__}")
    return [decode(model, item) for item in items]


# --- one reader per field type -------------------------------------------------------------------

Reader = Callable[[object], Any]


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"expected an integer, got {value!r}")
    return value


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _number(value: object) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


def _decimal(value: object) -> Decimal:
    return Decimal(_text(value))  # from the string only: a float here would already be rounded


def _time(value: object) -> dt.datetime:
    moment = dt.datetime.fromisoformat(_text(value))  # nanoseconds, when sent, are cut to microseconds
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _texts(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {value!r}")
    return tuple(_text(v) for v in value)


def _or_none(read: Reader) -> Reader:
    return lambda value: None if value is None else read(value)


_READERS: dict[object, Reader] = {
    str: _text,
    int: _integer,
    float: _number,
    bool: _flag,
    Decimal: _decimal,
    dt.datetime: _time,
    tuple[str, ...]: _texts,
}
_READERS.update({hint | None: _or_none(read) for hint, read in list(_READERS.items()) if isinstance(hint, type)})


_MODEL_READERS: dict[type, tuple[tuple[str, Reader], ...]] = {}


def _readers(model: type) -> tuple[tuple[str, Reader], ...]:
    """Each field of the dataclass ``model`` with the reader of its declared type (worked out once per model)."""
    readers = _MODEL_READERS.get(model)
    if readers is None:
        hints = get_type_hints(model)
        readers = _MODEL_READERS[model] = tuple((f.name, _READERS[hints[f.name]]) for f in fields(model))
    return readers
