"""Which exchanges and symbols exist, as the core says, so a subscribe to an unknown symbol is refused (issue 16).

REST answers ``404`` for a symbol the core does not list; the stream does the
same check before a channel reaches the gateway's channel table or the core,
and answers ``INVALID_CHANNEL``. The lists (``ListExchanges`` and
``ListSymbols``) are kept for :data:`REFRESH_S`. A name that is not in them
waits for one refresh, at most one every :data:`MISS_REFRESH_S` for the whole
gateway, so a symbol that has just appeared is found and a client naming junk
cannot turn its misses into a flood of core calls (it also meets the message
rate). A core that cannot answer does not stop subscriptions: the check is
skipped until it answers again (the core still refuses a malformed name, and
the per-key channel budget still holds).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from gateways.common.errors import ApiError
from gateways.ws.channels import ALL_SOURCES
from perseus.marketdata.v1 import market_data_service_pb2 as md

logger = logging.getLogger(__name__)

REFRESH_S = 10.0
MISS_REFRESH_S = 1.0

Fetch = Callable[[], Awaitable[tuple[md.ListExchangesResponse, md.ListSymbolsResponse]]]


class SymbolDirectory:
    def __init__(self, fetch: Fetch, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self._clock = clock
        self._symbols: dict[str, frozenset[str]] | None = None
        self._loaded_at = float("-inf")
        self._started = float("-inf")  # when the last load began
        self._lock = asyncio.Lock()

    async def problem(self, exchange: str, symbol: str) -> str | None:
        """Why ``symbol`` on ``exchange`` (both canonical) cannot be subscribed, or None when it can (or the
        core cannot say now)."""
        if self._clock() - self._loaded_at >= REFRESH_S:
            await self._refresh(self._clock() - REFRESH_S)
        if self._known(exchange, symbol):
            return None
        await self._refresh(self._clock(), wait=True)
        if self._symbols is None or self._known(exchange, symbol):
            return None
        if exchange == ALL_SOURCES:
            return f"unknown symbol {symbol!r} (no exchange lists it)"
        if exchange not in self._symbols:
            return f"unknown exchange {exchange!r}"
        return f"unknown symbol {symbol!r} on exchange {exchange!r}"

    def _known(self, exchange: str, symbol: str) -> bool:
        """``all`` (prices:all:{SYMBOL}, every source): listed by any exchange."""
        if self._symbols is None:
            return True
        if exchange == ALL_SOURCES:
            return any(symbol in listed for listed in self._symbols.values())
        return symbol in self._symbols.get(exchange, ())

    async def _refresh(self, since: float, *, wait: bool = False) -> None:
        """Load the lists unless a load that started at ``since`` or later did; with ``wait``, a load less than
        :data:`MISS_REFRESH_S` after the last one waits for it (one a second for every caller together)."""
        async with self._lock:
            if self._started >= since:
                return
            if wait:
                age = self._clock() - self._started
                if age < MISS_REFRESH_S:
                    await asyncio.sleep(MISS_REFRESH_S - age)
            self._started = self._clock()
            try:
                exchanges, symbols = await self._fetch()
            except ApiError as exc:
                logger.warning("cannot list the symbols (%s); subscriptions are not checked meanwhile", exc)
                self._symbols = None
            else:
                known: dict[str, set[str]] = {exchange.name: set() for exchange in exchanges.exchanges}
                for found in symbols.symbols:
                    known.setdefault(found.exchange, set()).add(found.symbol)
                self._symbols = {name: frozenset(names) for name, names in known.items()}
            self._loaded_at = self._clock()  # after a failure too: asked again in REFRESH_S, not per subscribe
