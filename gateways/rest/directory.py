"""Which exchanges and symbols exist, as the core says, remembered briefly so reads can answer 404.

The core answers an unknown *exchange* with NOT_FOUND, but a well-formed
symbol it has never seen simply has no candles. A client asking for
``/candles/coinbase/NOPE-USD`` should hear "not found", not "no candles", so
the gateway keeps the exchange and symbol lists (``ListExchanges`` and
``ListSymbols``) for :data:`REFRESH_S`. A name that is not in the lists makes
one refresh, at most every :data:`MISS_REFRESH_S`, before it is refused, so a
symbol that has just appeared is found within a second and a scanner cannot
turn misses into a flood of core calls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from gateways.common.errors import NotFound
from perseus.marketdata.v1 import market_data_service_pb2 as md

REFRESH_S = 10.0
MISS_REFRESH_S = 1.0

Fetch = Callable[[], Awaitable[tuple[md.ListExchangesResponse, md.ListSymbolsResponse]]]


class Directory:
    def __init__(self, fetch: Fetch, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._clock = clock
        self._symbols: dict[str, frozenset[str]] = {}
        self._loaded_at: float | None = None
        self._lock = asyncio.Lock()

    async def _refresh(self, older_than_s: float) -> None:
        async with self._lock:
            if self._loaded_at is not None and self._clock() - self._loaded_at < older_than_s:
                return  # another request refreshed it meanwhile
            exchanges, symbols = await self._fetch()
            known: dict[str, set[str]] = {exchange.name: set() for exchange in exchanges.exchanges}
            for symbol in symbols.symbols:
                known.setdefault(symbol.exchange, set()).add(symbol.symbol)
            self._symbols = {name: frozenset(found) for name, found in known.items()}
            self._loaded_at = self._clock()

    def _fresh(self, within_s: float) -> bool:
        return self._loaded_at is not None and self._clock() - self._loaded_at < within_s

    async def require(self, exchange: str, symbol: str | None = None) -> None:
        """Raise NOT_FOUND unless ``exchange`` (and ``symbol`` on it) exist; both canonical already."""
        if not self._fresh(REFRESH_S):
            await self._refresh(REFRESH_S)
        if self._known(exchange, symbol):
            return
        if not self._fresh(MISS_REFRESH_S):
            await self._refresh(MISS_REFRESH_S)
            if self._known(exchange, symbol):
                return
        if exchange not in self._symbols:
            raise NotFound(f"unknown exchange {exchange!r}")
        raise NotFound(f"unknown symbol {symbol!r} on exchange {exchange!r}")

    def _known(self, exchange: str, symbol: str | None) -> bool:
        symbols = self._symbols.get(exchange)
        return symbols is not None and (symbol is None or symbol in symbols)
