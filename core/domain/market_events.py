"""What exchange feeds produce, venue-independent: trades, candles, gaps. Pure records."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Trade:
    """One executed trade (or ticker print) on an exchange; ``symbol`` is canonical (``BTC-USD``)."""

    exchange: str
    symbol: str
    price: Decimal
    size: Decimal
    ts_ms: int
    trade_id: str = ""


@dataclass(frozen=True, slots=True)
class ExchangeCandle:
    """A 1-minute candle as the exchange publishes it. ``closed`` is False while the minute is open."""

    exchange: str
    symbol: str
    open_time_ms: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    closed: bool


@dataclass(frozen=True, slots=True)
class SequenceGap:
    """The exchange's own sequence numbers skipped: messages between ``expected`` and ``received`` were lost."""

    exchange: str
    symbol: str
    expected: int
    received: int


MarketEvent = Trade | ExchangeCandle | SequenceGap

# Exchanges whose candles are their own closed 1-minute candles (klines), never built from trades: their trades,
# from the venue or ingested, are stored as ticks only. Every other exchange's candles are built from trades.
CANDLES_FROM_VENUE = frozenset({"binance", "kraken"})
