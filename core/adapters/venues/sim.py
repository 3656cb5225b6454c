"""``sim``: a simulated exchange, seeded and deterministic, so Perseus works offline.

Everything it produces is labelled ``sim`` (the exchanges table marks it
``simulated``); it never pretends to be a real venue. Prices follow a random
walk per symbol from a seeded generator: the same seed gives the same
sequence of prices and sizes, whatever the clock says.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from decimal import Decimal

from core.adapters.venues.base import EventSink
from core.domain.market_events import Trade
from core.domain.models import VenueState

NAME = "sim"
DEFAULT_SEED = 7
DEFAULT_TRADES_PER_SECOND = 10.0
STEP_S = 0.1
MAX_MOVE = 0.0005  # at most 0.05 % per trade
START = {
    "BTC-USD": Decimal("67000.00"),
    "ETH-USD": Decimal("2600.00"),
    "SOL-USD": Decimal("150.000"),
    "ADA-USD": Decimal("0.35000"),
    "DOGE-USD": Decimal("0.120000"),
}
DEFAULT_SYMBOLS = tuple(START)
MINUTE_MS = 60_000
BACKFILL_STEP_MS = 15_000  # one simulated trade per symbol every 15 s of history


class SimVenue:
    name = NAME

    def __init__(
        self,
        sink: EventSink,
        *,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        seed: int = DEFAULT_SEED,
        trades_per_second: float = DEFAULT_TRADES_PER_SECOND,
        clock_ms: Callable[[], int],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        backfill_minutes: int = 0,
        history_end: Callable[[str], Awaitable[int | None]] | None = None,
    ) -> None:
        self._sink = sink
        self._symbols = list(symbols)
        self._rng = random.Random(seed)
        self._prices = {s: START.get(s, Decimal("100.00")) for s in self._symbols}
        self._trades_per_step = trades_per_second * STEP_S
        self._owed = 0.0
        self._clock_ms = clock_ms
        self._sleep = sleep
        self._trade_id = 0
        self._backfill_ms = backfill_minutes * MINUTE_MS
        self._history_end = history_end
        self.connected = False
        self.state: VenueState = "stopped"  # no connection to lose: connected while it runs
        self.last_frame_ms: int | None = None  # when it last delivered trades

    def next_trade(self, ts_ms: int) -> Trade:
        """The next simulated trade: a random symbol, a small random move, a random size."""
        return self._trade_for(self._rng.choice(self._symbols), ts_ms)

    def _trade_for(self, symbol: str, ts_ms: int) -> Trade:
        price = self._prices[symbol]
        move = Decimal(str(round(self._rng.uniform(-MAX_MOVE, MAX_MOVE), 6)))
        moved = (price * (1 + move)).quantize(price)  # keeps the symbol's tick size
        price = self._prices[symbol] = moved if moved > 0 else price
        size = Decimal(str(round(self._rng.uniform(0.001, 2.0), 4)))
        self._trade_id += 1
        return Trade(NAME, symbol, price, size, ts_ms, trade_id=str(self._trade_id))

    async def backfill(self) -> None:
        """Simulated history up to now, so indicators have data at once: per symbol, from the end of its
        stored history (``history_end``) or ``backfill_minutes`` ago, whichever is later.

        A symbol's history goes to the sink in one batch (2,400 trades for 10 h): the pipeline's clock
        waits for trades being stored, but between two batches it would close the historical candle and
        fill up to now, and the rest of the history would be stored as late ticks in no candle."""
        now = self._clock_ms()
        for symbol in self._symbols:
            stored_end = await self._history_end(symbol) if self._history_end is not None else None
            start = max(now - self._backfill_ms, stored_end or 0)
            first = start - start % BACKFILL_STEP_MS + BACKFILL_STEP_MS
            trades = [self._trade_for(symbol, ts) for ts in range(first, now, BACKFILL_STEP_MS)]
            if trades:
                await self._sink(trades)

    async def run(self) -> None:
        self.connected, self.state = True, "connected"
        try:
            if self._backfill_ms:
                await self.backfill()
            while True:
                self._owed += self._trades_per_step
                count, self._owed = int(self._owed), self._owed - int(self._owed)
                if count:
                    now = self.last_frame_ms = self._clock_ms()
                    await self._sink([self.next_trade(now) for _ in range(count)])
                await self._sleep(STEP_S)
        finally:
            self.connected, self.state = False, "stopped"
