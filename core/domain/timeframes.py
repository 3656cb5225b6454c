"""Candle timeframes and their UTC boundaries, in epoch milliseconds."""

from __future__ import annotations

import enum


class Timeframe(enum.StrEnum):
    M1 = "1m"
    M5 = "5m"
    M15 = "15m"
    H1 = "1h"
    H4 = "4h"
    D1 = "1d"

    @property
    def ms(self) -> int:
        return _MS[self]

    def open_time(self, ts_ms: int) -> int:
        """Start of the candle that contains ``ts_ms`` (epoch boundaries are UTC boundaries)."""
        return ts_ms - ts_ms % self.ms

    def close_time(self, open_ms: int) -> int:
        return open_ms + self.ms

    @classmethod
    def parse(cls, value: str) -> Timeframe:
        try:
            return cls(value.strip().lower())
        except ValueError:
            raise ValueError(f"unknown timeframe {value!r}; expected one of {', '.join(TIMEFRAMES)}") from None


_MINUTE_MS = 60_000
_MS = {
    Timeframe.M1: _MINUTE_MS,
    Timeframe.M5: 5 * _MINUTE_MS,
    Timeframe.M15: 15 * _MINUTE_MS,
    Timeframe.H1: 60 * _MINUTE_MS,
    Timeframe.H4: 240 * _MINUTE_MS,
    Timeframe.D1: 1440 * _MINUTE_MS,
}
TIMEFRAMES: tuple[Timeframe, ...] = tuple(Timeframe)
