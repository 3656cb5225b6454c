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
        self.connected = False

    def next_trade(self, ts_ms: int) -> Trade:
        """The next simulated trade: a random symbol, a small random move, a random size."""
        symbol = self._rng.choice(self._symbols)
        price = self._prices[symbol]
        move = Decimal(str(round(self._rng.uniform(-MAX_MOVE, MAX_MOVE), 6)))
        moved = (price * (1 + move)).quantize(price)  # keeps the symbol's tick size
        price = self._prices[symbol] = moved if moved > 0 else price
        size = Decimal(str(round(self._rng.uniform(0.001, 2.0), 4)))
        self._trade_id += 1
        return Trade(NAME, symbol, price, size, ts_ms, trade_id=str(self._trade_id))

    async def run(self) -> None:
        self.connected = True
        try:
            while True:
                self._owed += self._trades_per_step
                count, self._owed = int(self._owed), self._owed - int(self._owed)
                if count:
                    now = self._clock_ms()
                    await self._sink([self.next_trade(now) for _ in range(count)])
                await self._sleep(STEP_S)
        finally:
            self.connected = False
