"""Price feeds (ticks): validation of raw input into exact Decimal ticks.

Each feed of a batch is validated on its own; a bad one is reported by index
with the field and the reason, and the good ones go on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from core.domain.symbols import canonical_symbol

MAX_BATCH = 100
MAX_FUTURE_MS = 60_000
MAX_SIGNIFICANT_DIGITS = 40
MAX_EXPONENT = 30  # no value at or above 10**30, none below 10**-30
MAX_SOURCE_LENGTH = 64
MAX_TRADE_ID_LENGTH = 128  # a venue's trade id (Coinbase: a UUID-like string, Binance and Kraken: integers)


class FeedRejected(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class RawFeed:
    """A feed as it arrived, before any check (strings for numbers, epoch ms for times)."""

    symbol: str
    price: str
    volume: str
    source: str
    ts_ms: int | None
    bid: str | None = None
    ask: str | None = None
    exchange_ts_ms: int | None = None
    trade_id: str | None = None


@dataclass(frozen=True, slots=True)
class Tick:
    symbol: str
    price: Decimal
    volume: Decimal
    source: str
    ts_ms: int
    bid: Decimal | None = None
    ask: Decimal | None = None
    exchange_ts_ms: int | None = None
    # the venue's trade id ("" when the feed has none): part of the tick's identity (symbol, source, ts, price,
    # volume, trade_id), so two genuine trades alike in all else are two ticks, a redelivered trade id one
    trade_id: str = ""


@dataclass(frozen=True, slots=True)
class FeedError:
    index: int
    field: str
    reason: str


def parse_decimal(text: str, field: str, *, positive: bool) -> Decimal:
    """An exact, finite, bounded decimal from its string form; every digit is kept."""
    try:
        value = Decimal(text.strip())
    except (InvalidOperation, AttributeError):
        raise FeedRejected(field, f"is not a decimal number (got {_shown(text)})") from None
    if not value.is_finite():
        raise FeedRejected(field, f"must be finite (got {_shown(text)})")
    if value < 0 or (positive and value == 0):
        raise FeedRejected(field, f"must be {'positive' if positive else 'zero or positive'} (got {_shown(text)})")
    digits = value.as_tuple()
    exponent = digits.exponent if isinstance(digits.exponent, int) else 0
    if (
        len(digits.digits) > MAX_SIGNIFICANT_DIGITS
        or (value != 0 and not -MAX_EXPONENT <= value.adjusted() < MAX_EXPONENT)
        or exponent < -2 * MAX_EXPONENT
    ):
        raise FeedRejected(field, f"is out of range (got {_shown(text)})")
    return value


def _shown(text: str, limit: int = 48) -> str:
    """``text`` as a reason quotes it, cut at ``limit`` characters: a 4 MB price is not echoed back whole."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text)} characters)"


def decimal_str(value: Decimal) -> str:
    """The plain decimal string of ``value`` (never exponent notation), digits as stored."""
    return format(value, "f")


def validate_feed(raw: RawFeed, *, now_ms: int, known_sources: frozenset[str]) -> Tick:
    try:
        symbol = canonical_symbol(raw.symbol)
    except ValueError as exc:
        raise FeedRejected("symbol", str(exc)) from None
    source = raw.source.strip().lower()
    if not source or len(source) > MAX_SOURCE_LENGTH:
        raise FeedRejected("source", "is required (at most 64 characters)")
    if source not in known_sources:
        raise FeedRejected("source", f"unknown source {source!r}; known: {', '.join(sorted(known_sources))}")
    if raw.ts_ms is None or raw.ts_ms <= 0:
        raise FeedRejected("timestamp", "is required")
    if raw.ts_ms > now_ms + MAX_FUTURE_MS:
        raise FeedRejected("timestamp", f"is more than {MAX_FUTURE_MS // 1000} s in the future")
    trade_id = raw.trade_id or ""
    if len(trade_id) > MAX_TRADE_ID_LENGTH or not trade_id.isprintable():
        raise FeedRejected("trade_id", f"must be printable text of at most {MAX_TRADE_ID_LENGTH} characters")
    return Tick(
        symbol=symbol,
        price=parse_decimal(raw.price, "price", positive=True),
        volume=parse_decimal(raw.volume or "0", "volume", positive=False),
        source=source,
        ts_ms=raw.ts_ms,
        bid=parse_decimal(raw.bid, "bid", positive=True) if raw.bid else None,
        ask=parse_decimal(raw.ask, "ask", positive=True) if raw.ask else None,
        exchange_ts_ms=raw.exchange_ts_ms,
        trade_id=trade_id,
    )


def validate_batch(
    feeds: Sequence[RawFeed], *, now_ms: int, known_sources: frozenset[str]
) -> tuple[list[tuple[int, Tick]], list[FeedError]]:
    """Good ticks with their index in the batch, and one error per bad feed.

    A feed identical (source, symbol, timestamp, price, volume, trade id) to an
    earlier one of the same batch is reported as a duplicate rather than stored twice.
    """
    good: list[tuple[int, Tick]] = []
    errors: list[FeedError] = []
    seen: dict[tuple[str, str, int, Decimal, Decimal, str], int] = {}
    for index, raw in enumerate(feeds):
        try:
            tick = validate_feed(raw, now_ms=now_ms, known_sources=known_sources)
        except FeedRejected as exc:
            errors.append(FeedError(index, exc.field, exc.reason))
            continue
        identity = (tick.source, tick.symbol, tick.ts_ms, tick.price, tick.volume, tick.trade_id)
        if identity in seen:
            errors.append(FeedError(index, "feed", f"duplicate of feed {seen[identity]} in this batch"))
            continue
        seen[identity] = index
        good.append((index, tick))
    return good, errors
