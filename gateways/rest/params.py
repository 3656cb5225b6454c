"""Request parameters of the REST routes, declared once: the same declaration parses and documents.

Each route lists its :class:`Param` values; :func:`parse` turns a request's
path and query values into Python values (or raises ``VALIDATION_ERROR``
naming the parameter), and :meth:`Param.openapi` gives the OpenAPI
parameter object, so the spec and the checks cannot drift apart. Pure code.

Times are ISO-8601 with a zone (``2026-12-02T06:00:00Z``) or epoch
milliseconds; symbols are ``BASE-QUOTE`` or ``BASE/QUOTE`` in any case and
come out canonical (``BTC-USD``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from common.projection import enum_names
from gateways.common.errors import ValidationFailed
from perseus.marketdata.v1 import common_pb2

Location = Literal["path", "query"]

MAX_TEXT = 128
MAX_SYMBOLS = 100
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant a Timestamp holds
SYMBOL_PATTERN = r"^[A-Za-z0-9]{1,20}[-/][A-Za-z0-9]{1,20}$"
CANONICAL_SYMBOL_PATTERN = r"^[A-Z0-9]{1,20}-[A-Z0-9]{1,20}$"  # how every answer spells a symbol
EXCHANGE_PATTERN = r"^[A-Za-z][A-Za-z0-9_]{0,31}$"
SOURCE_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"
EPOCH_MS_PATTERN = r"^[0-9]{1,15}$"
# ISO-8601 with a zone: every RFC 3339 date-time (fractions cut to the millisecond) and the same to the minute.
ISO_TIME_PATTERN = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,9})?)?([Zz]|[+-][0-9]{2}:[0-9]{2})$"
)
TIME_PATTERN = f"^({EPOCH_MS_PATTERN[1:-1]}|{ISO_TIME_PATTERN[1:-1]})$"
CURSOR_PATTERN = r"^[A-Za-z0-9_=\-]{1,128}$"
_SYMBOL = re.compile(SYMBOL_PATTERN)
_EXCHANGE = re.compile(EXCHANGE_PATTERN)
_SOURCE = re.compile(SOURCE_PATTERN)
_CURSOR = re.compile(CURSOR_PATTERN)
_TIME = re.compile(TIME_PATTERN)
_BAD_TIME = "expected an ISO-8601 time with a zone, e.g. 2026-12-02T06:00:00Z, or epoch milliseconds"
TIMEFRAMES: Mapping[str, int] = {
    name: number for number, name in enum_names(common_pb2.Timeframe.DESCRIPTOR).items() if name
}
TIMEFRAME_NAMES: Mapping[int, str] = {number: name for name, number in TIMEFRAMES.items()}


def canonical_symbol(text: str) -> str:
    """``btc/usd`` → ``BTC-USD``; raises ValueError for anything that is not a pair."""
    if not _SYMBOL.fullmatch(text):
        raise ValueError("expected BASE-QUOTE such as BTC-USD (or BTC/USD)")
    return text.upper().replace("/", "-")


def time_ms(text: str) -> int:
    """Epoch milliseconds of ISO-8601 text with a zone, or of digits (already epoch milliseconds)."""
    if not _TIME.fullmatch(text):
        raise ValueError(_BAD_TIME)
    if text.isdigit():
        value = int(text)
    else:
        try:  # the pattern admits 2026-02-31 or a +99:00 offset: Python's own words about them stay inside
            moment = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
            value = int(moment.astimezone(UTC).timestamp() * 1000)
        except OverflowError:
            raise ValueError(_OUT_OF_RANGE) from None
        except ValueError:
            raise ValueError(f"not a valid date, time or zone offset; {_BAD_TIME}") from None
    if not 0 <= value <= MAX_TIME_MS:
        raise ValueError(_OUT_OF_RANGE)
    return value


_OUT_OF_RANGE = "must be between 1970-01-01 and 9999-12-31 UTC"


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[str], str]:
    def check(text: str) -> str:
        if not pattern.fullmatch(text):
            raise ValueError(f"malformed {what}")
        return text

    return check


def _timeframe(text: str) -> int:
    try:
        return TIMEFRAMES[text.lower()]
    except KeyError:
        raise ValueError(f"one of {', '.join(TIMEFRAMES)}") from None


def _symbols(text: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ValueError("at least one symbol is required")
    if len(items) > MAX_SYMBOLS:
        raise ValueError(f"at most {MAX_SYMBOLS} symbols")
    return list(dict.fromkeys(canonical_symbol(item) for item in items))


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    kind: Literal["exchange", "symbol", "symbols", "timeframe", "integer", "time", "source", "cursor", "choice"]
    description: str
    where: Location = "query"
    required: bool = False
    default: Any = None
    minimum: int = 1
    maximum: int = 0
    example: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def convert(self, text: str) -> Any:
        if self.kind == "integer":
            if not re.fullmatch(r"[0-9]{1,9}", text):
                raise ValueError(f"an integer from {self.minimum} to {self.maximum}")
            value = int(text)
            if not self.minimum <= value <= self.maximum:
                raise ValueError(f"must be from {self.minimum} to {self.maximum}")
            return value
        if self.kind == "choice":  # one of extra["enum"], any case
            choices: list[str] = list(self.extra["enum"])
            if text.lower() not in choices:
                raise ValueError(f"one of {', '.join(choices)}")
            return text.lower()
        return _CONVERTERS[self.kind](text)

    def schema(self) -> dict[str, Any]:
        match self.kind:
            case "integer":
                schema: dict[str, Any] = {"type": "integer", "minimum": self.minimum, "maximum": self.maximum}
            case "timeframe":
                schema = {"type": "string", "enum": list(TIMEFRAMES)}
            case "choice":
                schema = {"type": "string", "enum": list(self.extra["enum"])}
            case "time":  # a date-time, or the same to the minute, or epoch milliseconds
                schema = {
                    "type": "string",
                    "anyOf": [{"format": "date-time", "pattern": ISO_TIME_PATTERN}, {"pattern": TIME_PATTERN}],
                }
            case "symbols":
                schema = {"type": "string", "pattern": rf"^{SYMBOL_PATTERN[1:-1]}(,{SYMBOL_PATTERN[1:-1]}){{0,99}}$"}
            case _:
                schema = {"type": "string", "minLength": 1, "pattern": _PATTERNS[self.kind]}
        if self.default is not None:
            schema["default"] = self.default
        return schema

    def openapi(self) -> dict[str, Any]:
        parameter: dict[str, Any] = {
            "name": self.name,
            "in": self.where,
            "required": self.required or self.where == "path",
            "description": self.description,
            "schema": self.schema(),
        }
        if self.example is not None:
            parameter["example"] = self.example
        return parameter


_CONVERTERS: Mapping[str, Callable[[str], Any]] = {
    "exchange": lambda text: _matching(_EXCHANGE, "exchange name")(text).lower(),
    "symbol": canonical_symbol,
    "symbols": _symbols,
    "timeframe": _timeframe,
    "time": time_ms,
    "source": _matching(_SOURCE, "source name"),
    "cursor": _matching(_CURSOR, "cursor; pass meta.next_cursor of the previous page"),
}
_PATTERNS: Mapping[str, str] = {
    "exchange": EXCHANGE_PATTERN,
    "symbol": SYMBOL_PATTERN,
    "source": SOURCE_PATTERN,
    "cursor": CURSOR_PATTERN,
}


def parse(params: tuple[Param, ...], path: Mapping[str, str], query: Mapping[str, list[str]]) -> dict[str, Any]:
    """The values of ``params`` (defaults filled in); unknown query parameters are ignored."""
    values: dict[str, Any] = {}
    for param in params:
        raw: str | None
        if param.where == "path":
            raw = path.get(param.name)
        else:
            given = query.get(param.name)
            raw = given[-1] if given else None
        if raw == "":  # sent but empty: not the same as absent
            raise ValidationFailed(f"`{param.name}` must not be empty", details={"field": param.name})
        if raw is None:
            if param.required or param.where == "path":
                raise ValidationFailed(f"`{param.name}` is required", details={"field": param.name})
            values[param.name] = (
                param.default if param.kind != "timeframe" or param.default is None else (TIMEFRAMES[param.default])
            )
            continue
        if len(raw) > (MAX_TEXT if param.kind != "symbols" else MAX_SYMBOLS * 42):
            raise ValidationFailed(f"`{param.name}` is too long", details={"field": param.name})
        try:
            values[param.name] = param.convert(raw)
        except (ValueError, OverflowError) as exc:
            raise ValidationFailed(f"`{param.name}`: {exc}", details={"field": param.name}) from None
    return values


PAIR_IN_PATH = (
    Param("exchange", "exchange", "Exchange name", where="path", example="sim"),
    Param("symbol", "symbol", "Pair, `BTC-USD` or `BTC/USD` (URL-encoded)", where="path", example="BTC-USD"),
)
